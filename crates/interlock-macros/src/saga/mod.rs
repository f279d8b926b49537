//! `#[saga]`: on the saga's inherent impl block it turns the marked steps into `SagaStep` impls
//! and the `Saga` impl that declares them, with the key each event is correlated by.

mod impl_block;
pub(crate) mod markers;
mod methods;

use proc_macro2::TokenStream;
use syn::Item;
use syn::spanned::Spanned;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    match syn::parse2::<Item>(item)? {
        Item::Impl(item) => impl_block::expand(args, item),
        other => Err(syn::Error::new(
            other.span(),
            "#[saga] goes on the saga's inherent impl block (`impl MySaga { ... }`), \
             not on the type itself",
        )),
    }
}
