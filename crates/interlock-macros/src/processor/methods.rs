//! Reading the signatures of `#[handles_event]`, `#[handles_query]` and `#[reset]` methods.

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Ident, ImplItemFn, ReturnType, Type};

use crate::extract::{self, EVENT_CONTEXT, MessageErrors, Params};
use crate::signature::{self, Receiver, mut_self, no_generics, typed, unit_or_result, unsupported};

/// A `#[handles_event]` method, as the generated `HandlesEvent` impl calls it.
pub(crate) struct EventHandler {
    pub(crate) method: Ident,
    pub(crate) event: Type,
    /// The context and the dependencies it takes after the event.
    pub(crate) params: Params,
    pub(crate) is_async: bool,
    /// Where the return type is written (or the name, when there is none).
    pub(crate) output_span: Span,
}

/// A `#[handles_query]` method, as the generated `AnswersQuery` impl calls it.
pub(crate) struct QueryHandler {
    pub(crate) method: Ident,
    pub(crate) query: Type,
    pub(crate) is_async: bool,
    pub(crate) output_span: Span,
}

/// The `#[reset]` method.
pub(crate) struct Reset {
    pub(crate) method: Ident,
    pub(crate) is_async: bool,
    pub(crate) output_span: Span,
}

const EVENT_SHAPE: &str = "event handlers take (&mut self, event), then optionally \
     `ctx: &EventContext<'_>` and dependencies such as `Dep<T>` or `CommandSender`";
const QUERY_SHAPE: &str = "query handlers take (&self, query)";

pub(crate) fn event_handler(method: &ImplItemFn) -> syn::Result<EventHandler> {
    let sig = &method.sig;
    no_generics(
        sig,
        "an event handler handles one event type; it cannot be generic",
    )?;
    mut_self(
        sig,
        "a #[handles_event] method takes `&mut self`: it folds the event into the read model",
    )?;
    let mut params = sig.inputs.iter().skip(1);
    let event = extract::message_param(
        sig,
        params.next(),
        &EVENT_CONTEXT,
        &MessageErrors {
            missing: &format!("the handler takes no event: {EVENT_SHAPE}"),
            misplaced: &format!("the event comes first: {EVENT_SHAPE}"),
            by_reference: "take the event by value (`event: MyEvent`): it is decoded for this handler alone",
        },
    )?;
    let params = extract::read(params, &EVENT_CONTEXT)?;
    Ok(EventHandler {
        method: sig.ident.clone(),
        event: event.clone(),
        params,
        is_async: sig.asyncness.is_some(),
        output_span: unit_or_result(sig)?,
    })
}

pub(crate) fn query_handler(method: &ImplItemFn) -> syn::Result<QueryHandler> {
    let sig = &method.sig;
    no_generics(
        sig,
        "a query handler answers one query type; it cannot be generic",
    )?;
    match signature::receiver(sig) {
        Receiver::Shared => {}
        Receiver::Mut(r) => {
            return Err(syn::Error::new_spanned(
                r,
                "a #[handles_query] method takes `&self`, not `&mut self`: queries read the \
                 projection, they do not change it (change it in a #[handles_event] method)",
            ));
        }
        Receiver::Other(r) => {
            return Err(syn::Error::new_spanned(
                r,
                "a #[handles_query] method takes `&self`: it reads the projection's current state",
            ));
        }
        Receiver::None => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "a #[handles_query] method takes `&self`: it reads the projection's current state",
            ));
        }
    }
    let mut params = sig.inputs.iter().skip(1);
    let Some(query) = params.next() else {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("the handler takes no query: {QUERY_SHAPE}"),
        ));
    };
    let query = typed(query)?;
    if let Type::Reference(reference) = query {
        return Err(syn::Error::new_spanned(
            reference,
            "take the query by value (`query: MyQuery`): the handler owns the query it answers",
        ));
    }
    if let Some(extra) = params.next() {
        return Err(unsupported(extra, QUERY_SHAPE));
    }
    let output_span = match &sig.output {
        ReturnType::Type(_, ty) if matches!(**ty, Type::Path(_)) => ty.span(),
        ReturnType::Type(_, ty) => return Err(not_query_result(ty)),
        ReturnType::Default => return Err(not_query_result(sig)),
    };
    Ok(QueryHandler {
        method: sig.ident.clone(),
        query: query.clone(),
        is_async: sig.asyncness.is_some(),
        output_span,
    })
}

pub(crate) fn reset(method: &ImplItemFn) -> syn::Result<Reset> {
    let sig = &method.sig;
    no_generics(sig, "a #[reset] method cannot be generic")?;
    mut_self(
        sig,
        "a #[reset] method takes `&mut self`: it clears the read model before a rebuild",
    )?;
    if let Some(extra) = sig.inputs.iter().nth(1) {
        return Err(unsupported(
            extra,
            "a #[reset] method takes only `&mut self`",
        ));
    }
    Ok(Reset {
        method: sig.ident.clone(),
        is_async: sig.asyncness.is_some(),
        output_span: unit_or_result(sig)?,
    })
}

fn not_query_result(tokens: impl ToTokens) -> syn::Error {
    syn::Error::new_spanned(
        tokens,
        "a query handler returns `Result<Output, E>`, where `Output` is the query's output type \
         and `E` converts into `HandlerError`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;
    use syn::parse_quote;

    fn error_of<T>(result: syn::Result<T>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_event_handler_may_take_the_context_and_return_nothing() {
        let method: ImplItemFn = parse_quote! {
            async fn on(&mut self, e: Deposited, ctx: &interlock::EventContext<'_>) {}
        };
        let handler = event_handler(&method).unwrap();
        let event = &handler.event;
        assert_eq!(quote!(#event).to_string(), "Deposited");
        assert!(handler.params.takes_context() && handler.is_async);

        let method: ImplItemFn = parse_quote! {
            fn on(&mut self, e: Deposited) -> Result<(), HandlerError> {}
        };
        let handler = event_handler(&method).unwrap();
        assert!(!handler.params.takes_context() && !handler.is_async);

        let method: ImplItemFn = parse_quote! {
            async fn on(&mut self, e: Deposited, mailer: Dep<Mailer>) {}
        };
        let handler = event_handler(&method).unwrap();
        assert!(!handler.params.takes_context());
        assert_eq!(handler.params.extracted().count(), 1);
    }

    #[test]
    fn event_handler_signatures_that_cannot_work_are_refused() {
        let cases: [(ImplItemFn, &str); 6] = [
            (
                parse_quote!(
                    fn f(&self, e: E) {}
                ),
                "takes `&mut self`",
            ),
            (
                parse_quote!(
                    fn f(&mut self, e: &E) {}
                ),
                "by value",
            ),
            (
                parse_quote!(
                    fn f(&mut self, ctx: &EventContext<'_>, e: E) {}
                ),
                "the event comes first",
            ),
            (
                parse_quote!(
                    fn f(&mut self, e: E, ctx: EventContext<'_>) {}
                ),
                "shared reference",
            ),
            (
                parse_quote!(
                    fn f(&mut self, e: E, db: &Db) {}
                ),
                "cannot be a reference",
            ),
            (
                parse_quote!(
                    fn f(&mut self, e: E) -> (bool, u8) {}
                ),
                "returns nothing or",
            ),
        ];
        for (method, expected) in cases {
            let message = error_of(event_handler(&method));
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_query_handler_reads_through_a_shared_reference() {
        let method: ImplItemFn = parse_quote! {
            async fn balance(&self, q: BalanceOf) -> Result<u64, HandlerError> {}
        };
        let handler = query_handler(&method).unwrap();
        let query = &handler.query;
        assert_eq!(quote!(#query).to_string(), "BalanceOf");
        assert!(handler.is_async);

        let cases: [(ImplItemFn, &str); 4] = [
            (
                parse_quote!(
                    fn f(&mut self, q: Q) -> Result<u64, E> {}
                ),
                "not `&mut self`",
            ),
            (
                parse_quote!(
                    fn f(self, q: Q) -> Result<u64, E> {}
                ),
                "takes `&self`",
            ),
            (
                parse_quote!(
                    fn f(&self, q: &Q) -> Result<u64, E> {}
                ),
                "by value",
            ),
            (
                parse_quote!(
                    fn f(&self, q: Q) {}
                ),
                "returns `Result<Output, E>`",
            ),
        ];
        for (method, expected) in cases {
            let message = error_of(query_handler(&method));
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_reset_takes_only_mut_self() {
        let method: ImplItemFn = parse_quote!(
            async fn clear(&mut self) -> Result<(), E> {}
        );
        assert!(reset(&method).unwrap().is_async);
        let method: ImplItemFn = parse_quote!(
            fn clear(&mut self, all: bool) {}
        );
        assert!(error_of(reset(&method)).contains("takes only `&mut self`"));
    }
}
