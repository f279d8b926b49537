//! `#[derive(Query)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;
use syn::ext::IdentExt;

use crate::attr::{self, Once};

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut name = Once::new("name");
    let mut output = Once::new("output");
    attr::for_each_meta(&input.attrs, "query", |meta| {
        if meta.path.is_ident("output") {
            output.set(&meta, attr::output_type(&meta)?)
        } else if meta.path.is_ident("name") {
            name.set(&meta, attr::type_name(&meta)?)
        } else {
            Err(attr::unknown_option(&meta, "query", &["output", "name"]))
        }
    })?;
    let ident = &input.ident;
    let Some(output) = output.get() else {
        return Err(syn::Error::new(
            ident.span(),
            format!(
                "query `{}` does not say what it returns: add #[query(output = YourResultType)]",
                ident.unraw()
            ),
        ));
    };

    let p = attr::private();
    let name = name.get().unwrap_or_else(|| attr::default_name(ident));
    let mut generics = input.generics.clone();
    let (_, ty_generics, _) = input.generics.split_for_impl();
    attr::bound_if_generic(
        &mut generics,
        &quote!(#ident #ty_generics),
        &quote!(#p::Send + 'static),
    );
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #p::Query for #ident #ty_generics #where_clause {
            type Output = #output;
            const TYPE_NAME: &'static #p::str = #name;
        }
    })
}
