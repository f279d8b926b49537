//! Calling the marked method from the generated trait impl.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};

/// `Self::method(self, args)`, awaited when the method is async.
pub(crate) fn call(method: &syn::Ident, args: TokenStream, is_async: bool) -> TokenStream {
    if is_async {
        quote!(Self::#method(self, #args).await)
    } else {
        quote!(Self::#method(self, #args))
    }
}

/// Converts what a `()`-or-`Result<(), E>` method returned, spanned at its return type so that a
/// wrong type is reported there. The path is written out because interpolated tokens keep their
/// own spans.
pub(crate) fn unit_result(span: Span, call: &TokenStream) -> TokenStream {
    quote_spanned! {span=>
        ::interlock::__private::ProcessorResult::into_processor_result({ #call })
    }
}
