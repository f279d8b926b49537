//! `#[derive(Event)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::attr::{self, Once};

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut name = Once::new("name");
    let mut version = Once::new("version");
    attr::for_each_meta(&input.attrs, "event", |meta| {
        if meta.path.is_ident("name") {
            name.set(&meta, attr::type_name(&meta)?)
        } else if meta.path.is_ident("version") {
            version.set(&meta, attr::schema_version(&meta)?)
        } else {
            Err(attr::unknown_option(&meta, "event", &["name", "version"]))
        }
    })?;

    let p = attr::private();
    let ident = &input.ident;
    let name = name.get().unwrap_or_else(|| attr::default_name(ident));
    let version = version.get().unwrap_or(1);
    let mut generics = input.generics.clone();
    let (_, ty_generics, _) = input.generics.split_for_impl();
    attr::bound_if_generic(
        &mut generics,
        &quote!(#ident #ty_generics),
        &quote!(#p::serde::Serialize + #p::serde::de::DeserializeOwned + #p::Send + #p::Sync + 'static),
    );
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #p::Event for #ident #ty_generics #where_clause {
            const TYPE_NAME: &'static #p::str = #name;
            const SCHEMA_VERSION: #p::u32 = #version;
        }
    })
}
