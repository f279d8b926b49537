//! `#[projection]` and `#[event_processor]`: on the processor's inherent impl block they turn
//! the marked methods into `HandlesEvent` / `AnswersQuery` impls and the `EventProcessor` impl
//! that declares them.

mod impl_block;
pub(crate) mod markers;
mod methods;

use proc_macro2::TokenStream;
use syn::Item;
use syn::spanned::Spanned;

/// Which attribute is expanding: they differ only in whether queries are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Projection,
    EventProcessor,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Self::Projection => "projection",
            Self::EventProcessor => "event_processor",
        }
    }

    /// "a projection" / "an event processor", to start a sentence with.
    fn described(self) -> &'static str {
        match self {
            Self::Projection => "a projection",
            Self::EventProcessor => "an event processor",
        }
    }
}

pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    match syn::parse2::<Item>(item)? {
        Item::Impl(item) => impl_block::expand(kind, args, item),
        other => Err(syn::Error::new(
            other.span(),
            format!(
                "#[{}] goes on the processor's inherent impl block (`impl MyType {{ ... }}`), \
                 not on the type itself",
                kind.attribute()
            ),
        )),
    }
}
