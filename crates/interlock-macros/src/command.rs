//! `#[derive(Command)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Member, Type};

use crate::attr::{self, Once};

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut name = Once::new("name");
    let mut output = Once::new("output");
    attr::for_each_meta(&input.attrs, "command", |meta| {
        if meta.path.is_ident("output") {
            output.set(&meta, attr::output_type(&meta)?)
        } else if meta.path.is_ident("name") {
            name.set(&meta, attr::type_name(&meta)?)
        } else if meta.path.is_ident("aggregate_id") {
            Err(meta.error(
                "`aggregate_id` marks a field, not the struct: put #[command(aggregate_id)] on the field that holds the id",
            ))
        } else {
            Err(attr::unknown_option(&meta, "command", &["output", "name"]))
        }
    })?;
    let (id_member, id_ty) = id_field(input)?;

    let p = attr::private();
    let ident = &input.ident;
    let name = name.get().unwrap_or_else(|| attr::default_name(ident));
    let output = output.get().map_or_else(|| quote!(()), |ty| quote!(#ty));
    // Spanned at the field's type, so that an id type that does not convert is reported there.
    let id_expr = quote_spanned! {id_ty.span()=>
        <#p::AggregateId as #p::From<&#id_ty>>::from(&self.#id_member)
    };

    let mut generics = input.generics.clone();
    let (_, ty_generics, _) = input.generics.split_for_impl();
    // Generic commands implement `Command` where they (and their output) are serde types, the
    // way serde's own derives bound their impls.
    let serde_bounds =
        quote!(#p::Send + 'static + #p::serde::Serialize + #p::serde::de::DeserializeOwned);
    attr::bound_if_generic(&mut generics, &quote!(#ident #ty_generics), &serde_bounds);
    attr::bound_if_generic(&mut generics, &output, &serde_bounds);
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #p::Command for #ident #ty_generics #where_clause {
            type Output = #output;
            const TYPE_NAME: &'static #p::str = #name;
            fn aggregate_id(&self) -> #p::AggregateId {
                #id_expr
            }
        }
    })
}

/// The field that names the target instance: the one marked `#[command(aggregate_id)]`, else the
/// one called `aggregate_id`.
fn id_field(input: &DeriveInput) -> syn::Result<(Member, &Type)> {
    let data = match &input.data {
        Data::Struct(data) => data,
        Data::Enum(data) => {
            return Err(syn::Error::new_spanned(
                data.enum_token,
                "#[derive(Command)] supports structs only: a command is one request to one aggregate instance",
            ));
        }
        Data::Union(data) => {
            return Err(syn::Error::new_spanned(
                data.union_token,
                "#[derive(Command)] supports structs only",
            ));
        }
    };
    let mut marked = None;
    let mut named = None;
    for (index, field) in data.fields.iter().enumerate() {
        let member = field
            .ident
            .clone()
            .map_or_else(|| Member::Unnamed(index.into()), Member::Named);
        let mut is_marked = false;
        attr::for_each_meta(&field.attrs, "command", |meta| {
            if meta.path.is_ident("aggregate_id") {
                is_marked = true;
                Ok(())
            } else {
                Err(attr::unknown_option(&meta, "command", &["aggregate_id"]))
            }
        })?;
        if is_marked {
            if marked.is_some() {
                return Err(syn::Error::new_spanned(
                    field,
                    "only one field may be marked #[command(aggregate_id)]",
                ));
            }
            marked = Some((member.clone(), &field.ty));
        }
        if field
            .ident
            .as_ref()
            .is_some_and(|i| i.unraw() == "aggregate_id")
        {
            named = Some((member, &field.ty));
        }
    }
    marked.or(named).ok_or_else(|| {
        syn::Error::new_spanned(
            &input.ident,
            format!(
                "command `{}` does not say which aggregate instance it targets: add a field `aggregate_id`, \
                 or mark the field that holds the id with #[command(aggregate_id)]",
                input.ident.unraw()
            ),
        )
    })
}
