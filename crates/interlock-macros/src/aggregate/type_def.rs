//! `#[aggregate]` on the aggregate's struct or enum: `impl Aggregate`.

use proc_macro2::{Ident, TokenStream};
use quote::{quote, quote_spanned};
use syn::Generics;
use syn::parse::Parser;

use crate::attr::{self, Once};

pub(crate) fn expand(
    args: TokenStream,
    ident: &Ident,
    mut generics: Generics,
    item: &TokenStream,
) -> syn::Result<TokenStream> {
    let mut name = Once::new("name");
    let mut version = Once::new("schema_version");
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name.set(&meta, attr::type_name(&meta)?)
        } else if meta.path.is_ident("schema_version") {
            version.set(&meta, attr::schema_version(&meta)?)
        } else if meta.path.is_ident("ignores") {
            Err(meta.error(
                "`ignores(...)` belongs on the `#[aggregate] impl` block, next to the appliers",
            ))
        } else {
            Err(attr::unknown_option(
                &meta,
                "aggregate",
                &["name", "schema_version"],
            ))
        }
    });
    parser.parse2(args)?;

    let p = attr::private();
    let name = name.get().unwrap_or_else(|| attr::default_name(ident));
    let version = version.get().unwrap_or(1);
    let ty_generics = {
        let (_, ty_generics, _) = generics.split_for_impl();
        quote!(#ty_generics)
    };
    attr::bound_if_generic(
        &mut generics,
        &quote!(#ident #ty_generics),
        &quote!(#p::Default + #p::Send + #p::Sync + 'static),
    );
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    // Spanned at the type's name: without an `#[aggregate] impl` block the error points here.
    let configure = quote_spanned! {ident.span()=>
        <Self as #p::ConfigureAggregate>::configure_aggregate
    };
    Ok(quote! {
        #item

        #[automatically_derived]
        impl #impl_generics #p::Aggregate for #ident #ty_generics #where_clause {
            const TYPE_NAME: &'static #p::str = #name;
            const SCHEMA_VERSION: #p::u32 = #version;
            fn configure(routes: &mut #p::AggregateRoutes<Self>) {
                #configure(routes);
            }
        }
    })
}
