//! `#[handles_event]`, `#[handles_query]` and `#[reset]`: markers that `#[projection]` and
//! `#[event_processor]` read and remove.
//!
//! Expanded on their own they can only mean the surrounding impl block lacks one of those.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Attribute;

use crate::markers::{APPLIES_EVENT, HANDLES_COMMAND, combine};

/// Which marker a method carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    HandlesEvent,
    HandlesQuery,
    Reset,
}

pub(crate) const HANDLES_EVENT: &str = "handles_event";
pub(crate) const HANDLES_QUERY: &str = "handles_query";
pub(crate) const RESET: &str = "reset";

impl Marker {
    fn from_name(name: &syn::Ident) -> Option<Self> {
        if name == HANDLES_EVENT {
            Some(Self::HandlesEvent)
        } else if name == HANDLES_QUERY {
            Some(Self::HandlesQuery)
        } else if name == RESET {
            Some(Self::Reset)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::HandlesEvent => HANDLES_EVENT,
            Self::HandlesQuery => HANDLES_QUERY,
            Self::Reset => RESET,
        }
    }
}

/// Removes the marker attributes from `attrs` and returns the one found (at most one may be).
/// Markers are recognised by their last path segment, so `#[interlock::handles_event]` works.
/// The aggregate's markers are refused here with a pointer to the read-side ones.
pub(crate) fn take(attrs: &mut Vec<Attribute>) -> syn::Result<Option<(Marker, Span)>> {
    let mut found: Option<(Marker, Span)> = None;
    let mut error = None;
    attrs.retain(|attr| {
        let Some(last) = attr.path().segments.last() else {
            return true;
        };
        let span = last.ident.span();
        if last.ident == HANDLES_COMMAND || last.ident == APPLIES_EVENT {
            combine(
                &mut error,
                syn::Error::new(
                    span,
                    format!(
                        "#[{}] belongs in an `#[aggregate] impl` block; here, events are handled \
                         with #[handles_event] and queries answered with #[handles_query]",
                        last.ident
                    ),
                ),
            );
            return false;
        }
        let Some(marker) = Marker::from_name(&last.ident) else {
            return true;
        };
        if !matches!(attr.meta, syn::Meta::Path(_)) {
            combine(
                &mut error,
                syn::Error::new_spanned(
                    &attr.meta,
                    format!("#[{}] takes no arguments", marker.name()),
                ),
            );
        } else if found.is_some() {
            combine(
                &mut error,
                syn::Error::new(
                    span,
                    "a method is one event handler, one query handler or the reset, not several",
                ),
            );
        } else {
            found = Some((marker, span));
        }
        false
    });
    match error {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

/// The expansion of a marker used on its own: an error, and the item unchanged so that it does
/// not cause further errors.
pub(crate) fn outside_processor(marker: &str, item: &TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        format!(
            "#[{marker}] only works on a method inside a `#[projection] impl` or \
             `#[event_processor] impl` block: add one of them to the impl block"
        ),
    )
    .to_compile_error();
    quote!(#error #item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn message(attrs: &mut Vec<Attribute>) -> String {
        take(attrs).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn markers_are_removed_and_read_by_their_last_segment() {
        let mut attrs: Vec<Attribute> = vec![
            parse_quote!(#[doc = "kept"]),
            parse_quote!(#[interlock::handles_event]),
        ];
        assert!(matches!(
            take(&mut attrs).unwrap(),
            Some((Marker::HandlesEvent, _))
        ));
        assert_eq!(attrs.len(), 1);
        let mut attrs: Vec<Attribute> = vec![parse_quote!(#[reset])];
        assert!(matches!(
            take(&mut attrs).unwrap(),
            Some((Marker::Reset, _))
        ));
    }

    #[test]
    fn misplaced_or_doubled_markers_are_refused() {
        let mut both: Vec<Attribute> = vec![
            parse_quote!(#[handles_event]),
            parse_quote!(#[handles_query]),
        ];
        assert!(message(&mut both).contains("not several"));
        let mut args: Vec<Attribute> = vec![parse_quote!(#[handles_query(cached)])];
        assert!(message(&mut args).contains("takes no arguments"));
        let mut aggregate: Vec<Attribute> = vec![parse_quote!(#[applies_event])];
        assert!(message(&mut aggregate).contains("#[handles_event]"));
    }
}
