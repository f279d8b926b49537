//! `#[handles_command]` and `#[applies_event]`: markers that `#[aggregate]` reads and removes.
//!
//! Expanded on their own they can only mean the surrounding impl block lacks `#[aggregate]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Attribute;

/// Which marker a method carries.
pub(crate) enum Marker {
    HandlesCommand { creates: bool },
    AppliesEvent,
}

pub(crate) const HANDLES_COMMAND: &str = "handles_command";
pub(crate) const APPLIES_EVENT: &str = "applies_event";

/// Removes the marker attributes from `attrs` and returns the one found (at most one may be).
/// The marker is recognised by its last path segment, so `#[interlock::handles_command]` works.
pub(crate) fn take(attrs: &mut Vec<Attribute>) -> syn::Result<Option<(Marker, Span)>> {
    let mut found: Option<(Marker, Span)> = None;
    let mut error = None;
    attrs.retain(|attr| {
        let Some(last) = attr.path().segments.last() else {
            return true;
        };
        let marker = if last.ident == HANDLES_COMMAND {
            let mut creates = false;
            let parsed = match &attr.meta {
                syn::Meta::Path(_) => Ok(()),
                syn::Meta::List(_) => attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("create") {
                        creates = true;
                        Ok(())
                    } else {
                        Err(crate::attr::unknown_option(
                            &meta,
                            HANDLES_COMMAND,
                            &["create"],
                        ))
                    }
                }),
                syn::Meta::NameValue(nv) => Err(syn::Error::new_spanned(
                    nv,
                    "write #[handles_command] or #[handles_command(create)]",
                )),
            };
            match parsed {
                Ok(()) => Marker::HandlesCommand { creates },
                Err(e) => {
                    combine(&mut error, e);
                    return false;
                }
            }
        } else if last.ident == APPLIES_EVENT {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                combine(
                    &mut error,
                    syn::Error::new_spanned(&attr.meta, "#[applies_event] takes no arguments"),
                );
                return false;
            }
            Marker::AppliesEvent
        } else {
            return true;
        };
        let span = last.ident.span();
        if found.is_some() {
            combine(
                &mut error,
                syn::Error::new(
                    span,
                    "a method is either one command handler or one event applier",
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

pub(crate) fn combine(into: &mut Option<syn::Error>, error: syn::Error) {
    match into {
        Some(existing) => existing.combine(error),
        None => *into = Some(error),
    }
}

/// The expansion of a marker used on its own: an error, and the item unchanged so that it does
/// not cause further errors.
pub(crate) fn outside_aggregate(marker: &str, item: &TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        format!(
            "#[{marker}] only works on a method inside an `#[aggregate] impl` block: \
             add #[aggregate] to the impl block"
        ),
    )
    .to_compile_error();
    quote!(#error #item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn markers_are_removed_and_read_by_their_last_segment() {
        let mut attrs: Vec<Attribute> = vec![
            parse_quote!(#[doc = "kept"]),
            parse_quote!(#[interlock::handles_command(create)]),
        ];
        let found = take(&mut attrs).unwrap();
        assert!(matches!(
            found,
            Some((Marker::HandlesCommand { creates: true }, _))
        ));
        assert_eq!(attrs.len(), 1);

        let mut attrs: Vec<Attribute> = vec![parse_quote!(#[applies_event])];
        assert!(matches!(
            take(&mut attrs).unwrap(),
            Some((Marker::AppliesEvent, _))
        ));
        assert!(attrs.is_empty());
    }

    #[test]
    fn a_method_carries_one_marker_with_known_options() {
        let mut both: Vec<Attribute> = vec![
            parse_quote!(#[handles_command]),
            parse_quote!(#[applies_event]),
        ];
        assert!(take(&mut both).is_err());
        let mut unknown: Vec<Attribute> = vec![parse_quote!(#[handles_command(creates)])];
        let message = take(&mut unknown)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("expected one of: `create`"), "{message}");
    }
}
