//! `#[saga_step]` and `#[saga_deadline]`: markers that `#[saga]` reads and removes.
//!
//! Expanded on their own they can only mean the surrounding impl block lacks `#[saga]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Attribute, Expr, ExprClosure, Ident, Path};

use crate::markers::{APPLIES_EVENT, HANDLES_COMMAND, combine};
use crate::processor::markers::{HANDLES_EVENT, HANDLES_QUERY, RESET};

pub(crate) const SAGA_STEP: &str = "saga_step";
pub(crate) const SAGA_DEADLINE: &str = "saga_deadline";

/// How a step finds its instance from the event.
pub(crate) enum Key {
    /// `key = transfer_id`: a field of the event, cloned.
    Field(Ident),
    /// `key = TransferRequested::key`: a function or method taking `&Event`.
    Path(Path),
    /// `key = |e: &TransferRequested| ...`: a closure taking `&Event`.
    Closure(Box<ExprClosure>),
}

/// Which marker a method carries.
pub(crate) enum Marker {
    Step { starts: bool, key: Key },
    Deadline,
}

const KEY_FORMS: &str = "a field of the event (`key = order_id`), a function or method path \
     (`key = OrderPlaced::key`) or a closure (`key = |e: &OrderPlaced| e.order_id.clone()`)";

/// Removes the marker attributes from `attrs` and returns the one found (at most one may be).
/// Markers are recognised by their last path segment, so `#[interlock::saga_step]` works. The
/// markers of aggregates and processors are refused here with a pointer to the saga's.
pub(crate) fn take(attrs: &mut Vec<Attribute>) -> syn::Result<Option<(Marker, Span)>> {
    let mut found: Option<(Marker, Span)> = None;
    let mut error = None;
    attrs.retain(|attr| {
        let Some(last) = attr.path().segments.last() else {
            return true;
        };
        let span = last.ident.span();
        let foreign = [
            HANDLES_COMMAND,
            APPLIES_EVENT,
            HANDLES_EVENT,
            HANDLES_QUERY,
            RESET,
        ];
        if foreign.iter().any(|m| last.ident == m) {
            combine(
                &mut error,
                syn::Error::new(
                    span,
                    format!(
                        "#[{}] does not belong in a `#[saga] impl` block; here, events are \
                         handled by #[saga_step(...)] methods and deadlines by #[saga_deadline]",
                        last.ident
                    ),
                ),
            );
            return false;
        }
        let marker = if last.ident == SAGA_STEP {
            step(attr)
        } else if last.ident == SAGA_DEADLINE {
            match &attr.meta {
                syn::Meta::Path(_) => Ok(Marker::Deadline),
                meta => Err(syn::Error::new_spanned(
                    meta,
                    "#[saga_deadline] takes no arguments: the deadline finds its instance itself",
                )),
            }
        } else {
            return true;
        };
        match marker {
            Err(e) => combine(&mut error, e),
            Ok(_) if found.is_some() => combine(
                &mut error,
                syn::Error::new(
                    span,
                    "a method is one saga step or the deadline handler, not several",
                ),
            ),
            Ok(marker) => found = Some((marker, span)),
        }
        false
    });
    match error {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

/// `#[saga_step(start, key = ...)]` or `#[saga_step(key = ...)]`.
fn step(attr: &Attribute) -> syn::Result<Marker> {
    let syn::Meta::List(_) = &attr.meta else {
        return Err(syn::Error::new_spanned(
            &attr.meta,
            format!(
                "a step says how its event finds the saga instance: #[saga_step(key = ...)], with {KEY_FORMS}"
            ),
        ));
    };
    let mut starts = false;
    let mut key = None;
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("start") {
            if starts {
                return Err(meta.error("`start` is given twice"));
            }
            starts = true;
            Ok(())
        } else if meta.path.is_ident("key") {
            if key.is_some() {
                return Err(meta.error("`key` is given twice"));
            }
            let expr: Expr = meta.value()?.parse()?;
            key = Some(read_key(expr)?);
            Ok(())
        } else {
            Err(crate::attr::unknown_option(
                &meta,
                SAGA_STEP,
                &["start", "key"],
            ))
        }
    })?;
    match key {
        Some(key) => Ok(Marker::Step { starts, key }),
        None => Err(syn::Error::new_spanned(
            &attr.meta,
            format!("a step needs `key = ...` to find its saga instance: {KEY_FORMS}"),
        )),
    }
}

fn read_key(expr: Expr) -> syn::Result<Key> {
    match expr {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => match p.path.get_ident() {
            Some(field) => Ok(Key::Field(field.clone())),
            None => Ok(Key::Path(p.path)),
        },
        Expr::Closure(closure) => Ok(Key::Closure(Box::new(closure))),
        other => Err(syn::Error::new_spanned(
            other,
            format!("the key is {KEY_FORMS}"),
        )),
    }
}

/// The expansion of a marker used on its own: an error, and the item unchanged so that it does
/// not cause further errors.
pub(crate) fn outside_saga(marker: &str, item: &TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        format!(
            "#[{marker}] only works on a method inside a `#[saga] impl` block: \
             add #[saga(state = ...)] to the impl block"
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
    fn a_key_is_a_field_a_path_or_a_closure() {
        let mut attrs: Vec<Attribute> = vec![
            parse_quote!(#[doc = "kept"]),
            parse_quote!(#[interlock::saga_step(start, key = transfer_id)]),
        ];
        let Ok(Some((Marker::Step { starts, key }, _))) = take(&mut attrs) else {
            panic!("a start step");
        };
        assert!(starts);
        assert!(matches!(key, Key::Field(f) if f == "transfer_id"));
        assert_eq!(attrs.len(), 1);

        let mut attrs: Vec<Attribute> = vec![parse_quote!(#[saga_step(key = Moved::key)])];
        assert!(matches!(
            take(&mut attrs),
            Ok(Some((
                Marker::Step {
                    starts: false,
                    key: Key::Path(_)
                },
                _
            )))
        ));
        let mut attrs: Vec<Attribute> = vec![parse_quote!(
            #[saga_step(key = |e: &Moved| e.transfer.to_string(), start)]
        )];
        assert!(matches!(
            take(&mut attrs),
            Ok(Some((
                Marker::Step {
                    starts: true,
                    key: Key::Closure(_)
                },
                _
            )))
        ));
        let mut attrs: Vec<Attribute> = vec![parse_quote!(#[saga_deadline])];
        assert!(matches!(take(&mut attrs), Ok(Some((Marker::Deadline, _)))));
    }

    #[test]
    fn steps_without_a_usable_key_and_foreign_markers_are_refused() {
        let cases: [(Attribute, &str); 6] = [
            (parse_quote!(#[saga_step]), "says how its event finds"),
            (parse_quote!(#[saga_step(start)]), "needs `key = ...`"),
            (parse_quote!(#[saga_step(key = "id")]), "the key is a field"),
            (
                parse_quote!(#[saga_step(first, key = id)]),
                "expected one of",
            ),
            (parse_quote!(#[saga_deadline(expire)]), "takes no arguments"),
            (
                parse_quote!(#[handles_event]),
                "does not belong in a `#[saga] impl`",
            ),
        ];
        for (attr, expected) in cases {
            let got = message(&mut vec![attr]);
            assert!(got.contains(expected), "{got:?} lacks {expected:?}");
        }
        let mut both: Vec<Attribute> = vec![
            parse_quote!(#[saga_step(key = id)]),
            parse_quote!(#[saga_deadline]),
        ];
        assert!(message(&mut both).contains("not several"));
    }
}
