//! Attribute parsing shared by every macro: names, versions, outputs, and where generated code
//! points to.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Generics, Ident, LitInt, LitStr, Type, WherePredicate};

/// The module every expansion goes through, so that users depend on `interlock` alone and the
/// crates behind it can move things without breaking generated code.
pub(crate) fn private() -> TokenStream {
    quote!(::interlock::__private)
}

/// A key that may be given at most once.
pub(crate) struct Once<T> {
    key: &'static str,
    value: Option<T>,
}

impl<T> Once<T> {
    pub(crate) fn new(key: &'static str) -> Self {
        Self { key, value: None }
    }

    pub(crate) fn set(&mut self, meta: &ParseNestedMeta<'_>, value: T) -> syn::Result<()> {
        if self.value.is_some() {
            return Err(meta.error(format!("`{}` is given twice", self.key)));
        }
        self.value = Some(value);
        Ok(())
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value
    }
}

/// Calls `f` for each `key` or `key = value` inside every `#[name(...)]` attribute.
pub(crate) fn for_each_meta(
    attrs: &[Attribute],
    name: &str,
    mut f: impl FnMut(ParseNestedMeta<'_>) -> syn::Result<()>,
) -> syn::Result<()> {
    for attr in attrs.iter().filter(|a| a.path().is_ident(name)) {
        attr.parse_nested_meta(&mut f)?;
    }
    Ok(())
}

/// `name = "X"`: a stored type name, which must not be empty.
pub(crate) fn type_name(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let lit: LitStr = meta.value()?.parse()?;
    let value = lit.value();
    if value.trim().is_empty() || value.trim() != value {
        return Err(syn::Error::new(
            lit.span(),
            "a type name must be non-empty text without surrounding spaces",
        ));
    }
    Ok(lit)
}

/// `version = N`: a schema version, which starts at 1.
pub(crate) fn schema_version(meta: &ParseNestedMeta<'_>) -> syn::Result<u32> {
    let lit: LitInt = meta.value()?.parse()?;
    let version: u32 = lit.base10_parse()?;
    if version == 0 {
        return Err(syn::Error::new(
            lit.span(),
            "schema versions start at 1 (version 0 is never stored)",
        ));
    }
    Ok(version)
}

/// `output = Type`.
pub(crate) fn output_type(meta: &ParseNestedMeta<'_>) -> syn::Result<Type> {
    meta.value()?.parse()
}

/// An error for an option the attribute does not know, listing the ones it does.
pub(crate) fn unknown_option(meta: &ParseNestedMeta<'_>, attr: &str, known: &[&str]) -> syn::Error {
    let key = meta
        .path
        .segments
        .iter()
        .map(|s| s.ident.unraw().to_string())
        .collect::<Vec<_>>()
        .join("::");
    let known = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    meta.error(format!(
        "unknown option `{key}` in #[{attr}(...)]; expected one of: {known}"
    ))
}

/// The default type name: the Rust name of the type, without `r#`.
pub(crate) fn default_name(ident: &Ident) -> LitStr {
    LitStr::new(&ident.unraw().to_string(), ident.span())
}

/// The name of an impl block's type when none is given: its name as written, without `r#` or
/// generic arguments. `attribute` is the macro's, for the error message.
pub(crate) fn default_impl_name(self_ty: &Type, attribute: &str) -> syn::Result<LitStr> {
    match self_ty {
        Type::Path(p) if p.qself.is_none() => {
            if let Some(last) = p.path.segments.last() {
                return Ok(default_name(&last.ident));
            }
        }
        Type::Group(g) => return default_impl_name(&g.elem, attribute),
        _ => {}
    }
    Err(syn::Error::new_spanned(
        self_ty,
        format!("give it a name: #[{attribute}(name = \"...\")]"),
    ))
}

/// For generic types, requires `ty: bounds` in the impl's where clause so that the impl exists
/// exactly where the trait's supertraits hold (instead of failing for every parameter). Non-generic
/// types get no extra bound: there, a missing supertrait is reported directly.
pub(crate) fn bound_if_generic(generics: &mut Generics, ty: &TokenStream, bounds: &TokenStream) {
    if generics.type_params().next().is_none() && generics.lifetimes().next().is_none() {
        return;
    }
    let predicate: WherePredicate = syn::parse_quote!(#ty: #bounds);
    generics.make_where_clause().predicates.push(predicate);
}
