//! Parameters after the message: the handler's context, passed through, or values taken from
//! the application's services (`Dep<T>`, `CommandSender`, any `FromServices` type), in the style
//! of axum extractors.
//!
//! Every marked method kind (command handler, event handler, saga step) reads its trailing
//! parameters here. The generated impl takes each extracted value from its context before the
//! call, and the generated route table declares it (`routes.requires::<T>()`), so `build()` names
//! a dependency that was never registered.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Signature, Type};

use crate::signature::{names, typed};

/// What to say when a handler's message parameter is wrong, per method kind.
pub(crate) struct MessageErrors<'m> {
    /// There is no parameter where the message belongs.
    pub(crate) missing: &'m str,
    /// The context or an extractor stands where the message belongs.
    pub(crate) misplaced: &'m str,
    /// The message is taken by reference.
    pub(crate) by_reference: &'m str,
}

/// The message a handler takes (`param`, the next parameter): present, not the context or an
/// extractor, taken by value. Shared by command handlers, event handlers and saga steps, which
/// differ only in their messages.
pub(crate) fn message_param<'a>(
    sig: &Signature,
    param: Option<&'a FnArg>,
    context: &ContextKind,
    errors: &MessageErrors<'_>,
) -> syn::Result<&'a Type> {
    let Some(param) = param else {
        return Err(syn::Error::new(sig.paren_token.span.join(), errors.missing));
    };
    let message = typed(param)?;
    if context.is(message) || is_extractor(message) {
        return Err(syn::Error::new_spanned(message, errors.misplaced));
    }
    if let Type::Reference(reference) = message {
        return Err(syn::Error::new_spanned(reference, errors.by_reference));
    }
    Ok(message)
}

/// The context a method kind receives, as the parameter must be written.
pub(crate) struct ContextKind {
    /// The type's name: `CommandContext`, `EventContext`, `SagaContext`.
    pub(crate) name: &'static str,
    /// Whether it is passed as `&mut` (saga steps) rather than `&`.
    pub(crate) mutable: bool,
    /// How to write the parameter, for error messages: `ctx: &CommandContext`.
    pub(crate) written: &'static str,
}

pub(crate) const COMMAND_CONTEXT: ContextKind = ContextKind {
    name: "CommandContext",
    mutable: false,
    written: "ctx: &CommandContext",
};

pub(crate) const EVENT_CONTEXT: ContextKind = ContextKind {
    name: "EventContext",
    mutable: false,
    written: "ctx: &EventContext<'_>",
};

pub(crate) const SAGA_CONTEXT: ContextKind = ContextKind {
    name: "SagaContext",
    mutable: true,
    written: "ctx: &mut SagaContext<'_>",
};

impl ContextKind {
    /// Whether the type is this context (by any path), or a reference to one.
    pub(crate) fn is(&self, ty: &Type) -> bool {
        names(ty, self.name)
    }
}

/// One parameter after the message, in the order written.
pub(crate) enum Param {
    /// The handler's context, passed through.
    Context,
    /// A value taken from the application's services.
    Extracted(Box<Type>),
}

/// The parameters after the message.
#[derive(Default)]
pub(crate) struct Params {
    list: Vec<Param>,
}

/// Whether a type names one of the values handlers usually extract: a parameter of that type in
/// the message's place is a misordered signature, not a message.
pub(crate) fn is_extractor(ty: &Type) -> bool {
    names(ty, "Dep") || names(ty, "CommandSender")
}

/// Reads the parameters after the message: the context (at most once, by the reference `context`
/// says) and extractors (by value, anywhere after the message).
pub(crate) fn read<'a>(
    params: impl Iterator<Item = &'a FnArg>,
    context: &ContextKind,
) -> syn::Result<Params> {
    let mut read = Params::default();
    for param in params {
        let ty = typed(param)?;
        let by_ref = match ty {
            Type::Reference(r) if context.is(&r.elem) => Some(r.mutability.is_some()),
            _ => None,
        };
        if context.is(ty) {
            if by_ref != Some(context.mutable) {
                let how = if context.mutable { "mutable" } else { "shared" };
                return Err(syn::Error::new_spanned(
                    ty,
                    format!("take the context by {how} reference: `{}`", context.written),
                ));
            }
            if read.takes_context() {
                return Err(syn::Error::new_spanned(
                    param,
                    "the context is already a parameter: take it once",
                ));
            }
            read.list.push(Param::Context);
            continue;
        }
        match ty {
            Type::Reference(_) => {
                return Err(syn::Error::new_spanned(
                    param,
                    format!(
                        "a handler parameter cannot be a reference (other than `{}`): \
                         dependencies are taken by value, as `Dep<T>`, `CommandSender` or \
                         another `FromServices` type",
                        context.written
                    ),
                ));
            }
            Type::ImplTrait(_) | Type::Infer(_) => {
                return Err(syn::Error::new_spanned(
                    ty,
                    "name the parameter's type (`Dep<T>`, `CommandSender`, ...): it is taken \
                     from the application's services by its type",
                ));
            }
            _ => read.list.push(Param::Extracted(Box::new(ty.clone()))),
        }
    }
    Ok(read)
}

impl Params {
    /// Whether the method takes its context.
    pub(crate) fn takes_context(&self) -> bool {
        self.list.iter().any(|p| matches!(p, Param::Context))
    }

    /// The types taken from the services, in order.
    pub(crate) fn extracted(&self) -> impl Iterator<Item = &Type> {
        self.list.iter().filter_map(|p| match p {
            Param::Extracted(ty) => Some(&**ty),
            Param::Context => None,
        })
    }

    /// `let __interlock_param_N = <extraction>;` for each extracted parameter. `extract` writes
    /// the expression, given the type; it is spanned at the parameter's type, so a type that
    /// cannot be extracted is reported there.
    pub(crate) fn bindings(&self, extract: impl Fn(&Type) -> TokenStream) -> TokenStream {
        let bindings = self.list.iter().enumerate().filter_map(|(i, p)| match p {
            Param::Extracted(ty) => {
                let name = binding(i);
                let value = extract(ty);
                Some(quote_spanned! {ty.span()=> let #name = #value;})
            }
            Param::Context => None,
        });
        quote!(#(#bindings)*)
    }

    /// The call's arguments after the message: `ctx` or the extracted value, in order.
    pub(crate) fn args(&self, ctx: &TokenStream) -> TokenStream {
        let args = self.list.iter().enumerate().map(|(i, p)| match p {
            Param::Context => ctx.clone(),
            Param::Extracted(_) => binding(i).into_token_stream(),
        });
        quote!(#(, #args)*)
    }
}

fn binding(index: usize) -> syn::Ident {
    format_ident!("__interlock_param_{}", index, span = Span::mixed_site())
}

/// `routes.requires::<T>();` once per type written, spanned at the type.
pub(crate) fn requirements<'a>(types: impl Iterator<Item = &'a Type>) -> TokenStream {
    let mut seen = HashSet::new();
    let requires = types
        .filter(|ty| seen.insert(ty.to_token_stream().to_string()))
        .map(|ty| quote_spanned! {ty.span()=> routes.requires::<#ty>();});
    quote!(#(#requires)*)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::punctuated::Punctuated;
    use syn::{Token, parse_quote};

    fn params(inputs: Punctuated<FnArg, Token![,]>, context: &ContextKind) -> syn::Result<Params> {
        read(inputs.iter(), context)
    }

    #[test]
    fn the_context_and_extractors_come_in_any_order() {
        let read = params(
            parse_quote!(fees: Dep<Fees>, ctx: &CommandContext, sender: CommandSender),
            &COMMAND_CONTEXT,
        )
        .unwrap();
        assert!(read.takes_context());
        let types: Vec<String> = read
            .extracted()
            .map(|t| t.to_token_stream().to_string())
            .collect();
        assert_eq!(types, ["Dep < Fees >", "CommandSender"]);
        let args = read.args(&quote!(ctx)).to_string();
        assert!(
            args.starts_with(", __interlock_param_0 , ctx , __interlock_param_2"),
            "{args}"
        );
    }

    #[test]
    fn references_and_misdeclared_contexts_are_refused() {
        let cases: [(Punctuated<FnArg, Token![,]>, &ContextKind, &str); 5] = [
            (
                parse_quote!(clock: &Clock),
                &COMMAND_CONTEXT,
                "cannot be a reference",
            ),
            (
                parse_quote!(ctx: EventContext<'_>),
                &EVENT_CONTEXT,
                "by shared reference",
            ),
            (
                parse_quote!(ctx: &SagaContext<'_>),
                &SAGA_CONTEXT,
                "by mutable reference",
            ),
            (
                parse_quote!(a: &CommandContext, b: &CommandContext),
                &COMMAND_CONTEXT,
                "take it once",
            ),
            (
                parse_quote!(clock: impl Clock),
                &COMMAND_CONTEXT,
                "name the parameter's type",
            ),
        ];
        for (inputs, context, expected) in cases {
            let message = params(inputs, context)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn each_type_is_required_once() {
        let a: Type = parse_quote!(Dep<Fees>);
        let b: Type = parse_quote!(CommandSender);
        let tokens = requirements([&a, &b, &a].into_iter()).to_string();
        assert_eq!(tokens.matches("requires").count(), 2, "{tokens}");
    }
}
