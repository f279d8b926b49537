//! `#[aggregate]`: on the aggregate's type it implements `Aggregate`; on its inherent impl block
//! it turns the marked methods into `HandlesCommand` / `AppliesEvent` impls and the route table.

mod impl_block;
mod methods;
mod type_def;

use proc_macro2::TokenStream;
use syn::Item;
use syn::spanned::Spanned;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    match syn::parse2::<Item>(item)? {
        Item::Struct(item) => {
            let generics = item.generics.clone();
            type_def::expand(args, &item.ident, generics, &quote::quote!(#item))
        }
        Item::Enum(item) => {
            let generics = item.generics.clone();
            type_def::expand(args, &item.ident, generics, &quote::quote!(#item))
        }
        Item::Impl(item) => impl_block::expand(args, item),
        other => Err(syn::Error::new(
            other.span(),
            "#[aggregate] goes on the aggregate's struct (or enum) and on its inherent impl block",
        )),
    }
}
