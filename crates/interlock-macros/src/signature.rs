//! Reading method signatures: what every marked method (command handler, applier, event handler,
//! query handler) is checked for before its parameters are read.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, ReturnType, Signature, Type};

/// Refuses a generic method: each marked method serves one message type, named in its signature.
pub(crate) fn no_generics(sig: &Signature, message: &str) -> syn::Result<()> {
    if sig.generics.params.is_empty() && sig.generics.where_clause.is_none() {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(&sig.generics, message))
    }
}

/// The method's receiver as written, if it has one.
pub(crate) enum Receiver<'a> {
    /// `&self`
    Shared,
    /// `&mut self`
    Mut(&'a syn::Receiver),
    /// `self`, `mut self`, `self: Box<Self>`, ...
    Other(&'a syn::Receiver),
    /// An associated function.
    None,
}

pub(crate) fn receiver(sig: &Signature) -> Receiver<'_> {
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.colon_token.is_none() => {
            if r.mutability.is_some() {
                Receiver::Mut(r)
            } else {
                Receiver::Shared
            }
        }
        Some(FnArg::Receiver(r)) => Receiver::Other(r),
        Some(FnArg::Typed(_)) | None => Receiver::None,
    }
}

/// Requires `&mut self`, pointing at the receiver (or the name) otherwise.
pub(crate) fn mut_self(sig: &Signature, message: &str) -> syn::Result<()> {
    match sig.inputs.first() {
        Some(FnArg::Receiver(r))
            if r.reference.is_some() && r.mutability.is_some() && r.colon_token.is_none() =>
        {
            Ok(())
        }
        Some(FnArg::Receiver(r)) => Err(syn::Error::new_spanned(r, message)),
        Some(FnArg::Typed(_)) | None => Err(syn::Error::new_spanned(&sig.ident, message)),
    }
}

/// The type of a parameter after the receiver.
pub(crate) fn typed(arg: &FnArg) -> syn::Result<&Type> {
    match arg {
        FnArg::Typed(pat) => Ok(&pat.ty),
        FnArg::Receiver(r) => Err(syn::Error::new_spanned(r, "unexpected `self` parameter")),
    }
}

/// Whether the type is a path whose last segment is `name`, or a reference to one. The macros see
/// tokens, not resolved types, so the name is what they can go by.
pub(crate) fn names(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == name),
        Type::Reference(r) => names(&r.elem, name),
        Type::Paren(p) => names(&p.elem, name),
        Type::Group(g) => names(&g.elem, name),
        _ => false,
    }
}

pub(crate) fn unsupported(param: &FnArg, shape: &str) -> syn::Error {
    syn::Error::new_spanned(param, format!("unsupported parameter: {shape}"))
}

/// `()` (written or not) or a path type, which the generated code checks to be a
/// `Result<(), E>`. Returns where to report a wrong type: the return type, or the name.
pub(crate) fn unit_or_result(sig: &Signature) -> syn::Result<Span> {
    match &sig.output {
        ReturnType::Default => Ok(sig.ident.span()),
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(_) => Ok(ty.span()),
            Type::Tuple(t) if t.elems.is_empty() => Ok(ty.span()),
            _ => Err(syn::Error::new_spanned(
                ty,
                "this method returns nothing or `Result<(), E>`, where `E` converts into `HandlerError`",
            )),
        },
    }
}
