//! Reading the signatures of `#[saga_step]` and `#[saga_deadline]` methods.

use proc_macro2::Span;
use syn::{FnArg, Ident, ImplItemFn, Type};

use crate::extract::{self, MessageErrors, Params, SAGA_CONTEXT};
use crate::signature::{self, Receiver, no_generics, typed, unit_or_result};

/// A `#[saga_step]` or `#[saga_deadline]` method, as the generated `SagaStep` impl calls it.
pub(crate) struct Step {
    pub(crate) method: Ident,
    /// The event type as written.
    pub(crate) event: Type,
    /// The state type as written (behind `&mut`): a mismatch with the saga's is reported there.
    pub(crate) state: Type,
    /// The context and the dependencies it takes after the event.
    pub(crate) params: Params,
    pub(crate) is_async: bool,
    /// Where the return type is written (or the name, when there is none).
    pub(crate) output_span: Span,
}

const STEP_SHAPE: &str = "saga steps take (&self, state: &mut State, event: Event), then \
     optionally `ctx: &mut SagaContext<'_>` and dependencies such as `Dep<T>`";

/// Reads a step; `deadline` is set for the `#[saga_deadline]` method, whose event is the
/// `DeadlineReached`.
pub(crate) fn step(method: &ImplItemFn, deadline: bool) -> syn::Result<Step> {
    let sig = &method.sig;
    no_generics(
        sig,
        "a saga step handles one event type; it cannot be generic",
    )?;
    let shared_self = "a saga step takes `&self`: the saga value is shared by all its instances, \
         and each instance's state arrives as the `state: &mut State` parameter";
    match signature::receiver(sig) {
        Receiver::Shared => {}
        Receiver::Mut(r) | Receiver::Other(r) => {
            return Err(syn::Error::new_spanned(r, shared_self));
        }
        Receiver::None => return Err(syn::Error::new_spanned(&sig.ident, shared_self)),
    }
    let mut params = sig.inputs.iter().skip(1);
    let Some(state) = params.next() else {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("the step takes no state: {STEP_SHAPE}"),
        ));
    };
    let state = state_type(state)?;
    let event = extract::message_param(
        sig,
        params.next(),
        &SAGA_CONTEXT,
        &MessageErrors {
            missing: &format!("the step takes no event: {STEP_SHAPE}"),
            misplaced: &format!("the event comes right after the state: {STEP_SHAPE}"),
            by_reference: "take the event by value (`event: MyEvent`): it is decoded for this step alone",
        },
    )?;
    let names_deadline = signature::names(event, "DeadlineReached");
    if deadline && !names_deadline {
        return Err(syn::Error::new_spanned(
            event,
            "a #[saga_deadline] method takes the fired deadline: `deadline: DeadlineReached`",
        ));
    }
    if !deadline && names_deadline {
        return Err(syn::Error::new_spanned(
            event,
            "deadlines are delivered to the #[saga_deadline] method: mark this one \
             #[saga_deadline] instead of #[saga_step]",
        ));
    }
    let params = extract::read(params, &SAGA_CONTEXT)?;
    Ok(Step {
        method: sig.ident.clone(),
        event: event.clone(),
        state,
        params,
        is_async: sig.asyncness.is_some(),
        output_span: unit_or_result(sig)?,
    })
}

/// `state: &mut State`.
fn state_type(param: &FnArg) -> syn::Result<Type> {
    match typed(param)? {
        Type::Reference(r) if r.mutability.is_some() && !SAGA_CONTEXT.is(&r.elem) => {
            Ok((*r.elem).clone())
        }
        ty => Err(syn::Error::new_spanned(
            ty,
            format!(
                "the state comes first, by mutable reference (`state: &mut State`): {STEP_SHAPE}"
            ),
        )),
    }
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
    fn a_step_takes_state_event_context_and_dependencies() {
        let method: ImplItemFn = parse_quote! {
            async fn on(&self, s: &mut Transfer, e: Moved, ctx: &mut SagaContext<'_>, fees: Dep<Fees>)
                -> Result<(), HandlerError> {}
        };
        let step = step(&method, false).unwrap();
        let (state, event) = (&step.state, &step.event);
        assert_eq!(quote!(#state #event).to_string(), "Transfer Moved");
        assert!(step.is_async && step.params.takes_context());
        assert_eq!(step.params.extracted().count(), 1);
    }

    #[test]
    fn step_signatures_that_cannot_work_are_refused() {
        let cases: [(ImplItemFn, bool, &str); 7] = [
            (
                parse_quote!(
                    fn f(&mut self, s: &mut S, e: E) {}
                ),
                false,
                "takes `&self`",
            ),
            (
                parse_quote!(
                    fn f(&self, s: S, e: E) {}
                ),
                false,
                "by mutable reference",
            ),
            (
                parse_quote!(
                    fn f(&self, s: &mut S, ctx: &mut SagaContext<'_>) {}
                ),
                false,
                "right after the state",
            ),
            (
                parse_quote!(
                    fn f(&self, s: &mut S, e: &E) {}
                ),
                false,
                "by value",
            ),
            (
                parse_quote!(
                    fn f(&self, s: &mut S, e: E, ctx: &SagaContext<'_>) {}
                ),
                false,
                "by mutable reference",
            ),
            (
                parse_quote!(
                    fn f(&self, s: &mut S, d: DeadlineReached) {}
                ),
                false,
                "mark this one #[saga_deadline]",
            ),
            (
                parse_quote!(
                    fn f(&self, s: &mut S, e: Moved) {}
                ),
                true,
                "takes the fired deadline",
            ),
        ];
        for (method, deadline, expected) in cases {
            let message = error_of(step(&method, deadline));
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }
}
