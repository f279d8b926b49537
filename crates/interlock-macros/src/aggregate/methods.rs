//! Reading the signatures of `#[handles_command]` and `#[applies_event]` methods.

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Ident, ImplItemFn, ReturnType, Type};

use crate::extract::{self, COMMAND_CONTEXT, MessageErrors, Params};
use crate::signature::{mut_self, no_generics, typed, unsupported};

/// A `#[handles_command]` method, as the generated `HandlesCommand` impl calls it.
pub(crate) struct Handler {
    pub(crate) method: Ident,
    pub(crate) command: Type,
    /// The context and the dependencies it takes after the command.
    pub(crate) params: Params,
    pub(crate) is_async: bool,
    pub(crate) creates: bool,
    /// Where the return type is written: output mismatches are reported there.
    pub(crate) output_span: Span,
}

/// An `#[applies_event]` method.
pub(crate) struct Applier {
    pub(crate) method: Ident,
    pub(crate) event: Type,
}

const HANDLER_SHAPE: &str = "handlers take (&mut self, command), then optionally \
     `ctx: &CommandContext` and dependencies such as `Dep<T>` or `CommandSender`";
const APPLIER_SHAPE: &str = "appliers take (&mut self, event: &EventType)";

pub(crate) fn handler(method: &ImplItemFn, creates: bool) -> syn::Result<Handler> {
    let sig = &method.sig;
    no_generics(
        sig,
        "a command handler handles one command type; it cannot be generic",
    )?;
    mut_self(
        sig,
        "a #[handles_command] method takes `&mut self`: it decides against the current state and emits events onto it",
    )?;
    let mut params = sig.inputs.iter().skip(1);
    let command = extract::message_param(
        sig,
        params.next(),
        &COMMAND_CONTEXT,
        &MessageErrors {
            missing: &format!("the handler takes no command: {HANDLER_SHAPE}"),
            misplaced: &format!("the command comes first: {HANDLER_SHAPE}"),
            by_reference: "take the command by value (`command: MyCommand`): the handler owns the command it handles",
        },
    )?;
    let params = extract::read(params, &COMMAND_CONTEXT)?;
    let output_span = match &sig.output {
        ReturnType::Type(_, ty) if matches!(**ty, Type::Path(_)) => ty.span(),
        ReturnType::Type(_, ty) => return Err(not_result(ty)),
        ReturnType::Default => return Err(not_result(sig)),
    };
    Ok(Handler {
        method: sig.ident.clone(),
        command: command.clone(),
        params,
        is_async: sig.asyncness.is_some(),
        creates,
        output_span,
    })
}

pub(crate) fn applier(method: &ImplItemFn) -> syn::Result<Applier> {
    let sig = &method.sig;
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span,
            "an #[applies_event] method cannot be async: applying an event is a plain state change",
        ));
    }
    no_generics(
        sig,
        "an applier applies one event type; it cannot be generic",
    )?;
    mut_self(
        sig,
        "an #[applies_event] method takes `&mut self`: it folds the event into the state",
    )?;
    let mut params = sig.inputs.iter().skip(1);
    let Some(event) = params.next() else {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("the applier takes no event: {APPLIER_SHAPE}"),
        ));
    };
    let event = match typed(event)? {
        Type::Reference(r) if r.mutability.is_none() => (*r.elem).clone(),
        Type::Reference(r) => {
            return Err(syn::Error::new_spanned(
                r,
                "take the event by shared reference (`event: &EventType`): an applier must not change the event",
            ));
        }
        ty => {
            return Err(syn::Error::new_spanned(
                ty,
                "take the event by reference (`event: &EventType`): the event is stored as well as applied, \
                 so the applier only borrows it",
            ));
        }
    };
    if let Some(extra) = params.next() {
        return Err(unsupported(extra, APPLIER_SHAPE));
    }
    match &sig.output {
        ReturnType::Default => {}
        ReturnType::Type(_, ty) if matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()) => {}
        ReturnType::Type(_, ty) => {
            return Err(syn::Error::new_spanned(
                ty,
                "an applier returns nothing: an event that already happened cannot be refused \
                 (validate in the command handler instead)",
            ));
        }
    }
    Ok(Applier {
        method: sig.ident.clone(),
        event,
    })
}

fn not_result(tokens: impl ToTokens) -> syn::Error {
    syn::Error::new_spanned(
        tokens,
        "a command handler returns `Result<Output, E>`, where `Output` is the command's output type \
         and `E` converts into `DomainError`",
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
    fn a_handler_may_take_the_context_by_any_path() {
        let method: ImplItemFn = parse_quote! {
            async fn deposit(&mut self, cmd: Deposit, ctx: &interlock::CommandContext) -> Result<u64, E> {}
        };
        let handler = handler(&method, true).unwrap();
        assert_eq!(handler.method, "deposit");
        let command = &handler.command;
        assert_eq!(quote!(#command).to_string(), "Deposit");
        assert!(handler.params.takes_context() && handler.is_async && handler.creates);
    }

    #[test]
    fn a_handler_without_context_is_synchronous_when_written_so() {
        let method: ImplItemFn = parse_quote! {
            fn open(&mut self, cmd: Open) -> Result<(), DomainError> {}
        };
        let handler = handler(&method, false).unwrap();
        assert!(!handler.params.takes_context() && !handler.is_async && !handler.creates);
    }

    #[test]
    fn a_handler_takes_dependencies_after_the_command() {
        let method: ImplItemFn = parse_quote! {
            async fn deposit(&mut self, cmd: Deposit, fees: Dep<Fees>, ctx: &CommandContext) -> Result<u64, E> {}
        };
        let handler = handler(&method, false).unwrap();
        assert!(handler.params.takes_context());
        let deps: Vec<String> = handler
            .params
            .extracted()
            .map(|t| quote!(#t).to_string())
            .collect();
        assert_eq!(deps, ["Dep < Fees >"]);
    }

    #[test]
    fn handler_signatures_that_cannot_work_are_refused() {
        let cases: [(ImplItemFn, &str); 6] = [
            (
                parse_quote!(
                    fn f(&self, c: C) -> Result<(), E> {}
                ),
                "takes `&mut self`",
            ),
            (
                parse_quote!(
                    fn f(self, c: C) -> Result<(), E> {}
                ),
                "takes `&mut self`",
            ),
            (
                parse_quote!(
                    fn f(&mut self, c: &C) -> Result<(), E> {}
                ),
                "by value",
            ),
            (
                parse_quote!(
                    fn f(&mut self, ctx: &CommandContext, c: C) -> Result<(), E> {}
                ),
                "the command comes first",
            ),
            (
                parse_quote!(
                    fn f(&mut self, c: C, d: &Db) -> Result<(), E> {}
                ),
                "cannot be a reference",
            ),
            (
                parse_quote!(
                    fn f<T>(&mut self, c: T) -> Result<(), E> {}
                ),
                "cannot be generic",
            ),
        ];
        for (method, expected) in cases {
            let message = error_of(handler(&method, false));
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        let no_return: ImplItemFn = parse_quote!(
            fn f(&mut self, c: C) {}
        );
        assert!(error_of(handler(&no_return, false)).contains("returns `Result<Output, E>`"));
    }

    #[test]
    fn an_applier_borrows_its_event_and_returns_nothing() {
        let method: ImplItemFn = parse_quote!(
            fn on(&mut self, e: &Deposited) {}
        );
        let event = applier(&method).unwrap().event;
        assert_eq!(quote!(#event).to_string(), "Deposited");
        let cases: [(ImplItemFn, &str); 4] = [
            (
                parse_quote!(
                    fn on(&mut self, e: Deposited) {}
                ),
                "by reference",
            ),
            (
                parse_quote!(
                    fn on(&mut self, e: &mut Deposited) {}
                ),
                "shared reference",
            ),
            (
                parse_quote!(
                    async fn on(&mut self, e: &Deposited) {}
                ),
                "cannot be async",
            ),
            (
                parse_quote!(
                    fn on(&mut self, e: &Deposited) -> bool {}
                ),
                "returns nothing",
            ),
        ];
        for (method, expected) in cases {
            let message = error_of(applier(&method));
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }
}
