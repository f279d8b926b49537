//! `#[aggregate]` on the inherent impl block.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{ImplItem, ItemImpl, Token, Type};

use super::methods::{self, Applier, Handler};
use crate::attr;
use crate::extract;
use crate::markers::{self, Marker};

pub(crate) fn expand(args: TokenStream, mut item: ItemImpl) -> syn::Result<TokenStream> {
    let ignored = parse_args(args)?;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[aggregate] goes on the aggregate's inherent impl block (`impl MyAggregate { ... }`), not on a trait impl",
        ));
    }

    let mut handlers = Vec::new();
    let mut appliers = Vec::new();
    let mut error = None;
    for impl_item in &mut item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let analysed = match markers::take(&mut method.attrs) {
            Ok(Some((Marker::HandlesCommand { creates }, _))) => {
                methods::handler(method, creates).map(|h| handlers.push(h))
            }
            Ok(Some((Marker::AppliesEvent, _))) => {
                methods::applier(method).map(|a| appliers.push(a))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = analysed {
            markers::combine(&mut error, e);
        }
    }
    if let Err(e) = check_unique(&handlers, &appliers, &ignored) {
        markers::combine(&mut error, e);
    }
    // On error, the impl block (without the markers) and the impls of every method that was
    // fine are still emitted, so the only errors the user sees are ours, not follow-ups.
    let error = error.map(syn::Error::into_compile_error);

    let handler_impls = handlers.iter().map(|h| handler_impl(&item, h));
    let applier_impls = appliers.iter().map(|a| applier_impl(&item, a));
    let configure = configure_impl(&item, &handlers, &appliers, &ignored);
    Ok(quote! {
        #item
        #(#handler_impls)*
        #(#applier_impls)*
        #configure
        #error
    })
}

/// `ignores(EventA, EventB)`.
fn parse_args(args: TokenStream) -> syn::Result<Vec<Type>> {
    let mut ignored = Vec::new();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("ignores") {
            let content;
            syn::parenthesized!(content in meta.input);
            ignored.extend(Punctuated::<Type, Token![,]>::parse_terminated(&content)?);
            Ok(())
        } else if meta.path.is_ident("name") || meta.path.is_ident("schema_version") {
            Err(meta.error(
                "`name` and `schema_version` belong on the aggregate's struct, not on its impl block",
            ))
        } else {
            Err(attr::unknown_option(&meta, "aggregate", &["ignores"]))
        }
    });
    parser.parse2(args)?;
    Ok(ignored)
}

/// Two handlers of one command (or two appliers of one event) would be conflicting impls; say
/// so in domain terms. Types are compared as written, which catches the common copy-paste case.
fn check_unique(handlers: &[Handler], appliers: &[Applier], ignored: &[Type]) -> syn::Result<()> {
    let mut error = None;
    let mut commands = HashMap::new();
    for h in handlers {
        let key = h.command.to_token_stream().to_string();
        if let Some(first) = commands.insert(key, &h.method) {
            markers::combine(
                &mut error,
                syn::Error::new_spanned(
                    &h.command,
                    format!(
                        "this command is already handled by `{first}`: a command has exactly one handler"
                    ),
                ),
            );
        }
    }
    let mut events: HashMap<String, String> = HashMap::new();
    for a in appliers {
        let key = a.event.to_token_stream().to_string();
        if let Some(first) = events.insert(key, format!("applied by `{}`", a.method)) {
            markers::combine(
                &mut error,
                syn::Error::new_spanned(
                    &a.event,
                    format!("this event is already {first}: an event has one applier"),
                ),
            );
        }
    }
    for ty in ignored {
        let key = ty.to_token_stream().to_string();
        if let Some(first) = events.insert(key, "ignored".to_owned()) {
            markers::combine(
                &mut error,
                syn::Error::new_spanned(ty, format!("this event is already {first}")),
            );
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn handler_impl(item: &ItemImpl, handler: &Handler) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let self_ty = &item.self_ty;
    let command = &handler.command;
    let method = &handler.method;
    let args = handler.params.args(&quote!(ctx));
    let mut call = quote!(Self::#method(self, command #args));
    if handler.is_async {
        call = quote!(#call.await);
    }
    // A dependency that cannot be taken (never registered: `build()` checks that first; or a
    // detached context in a unit test) rejects the command.
    let extract = handler.params.bindings(|ty| {
        quote! {
            <#ty as #p::FromServices>::from_services(ctx.services())
                .map_err(<#p::DomainError as #p::From<#p::Error>>::from)?
        }
    });
    let unused_ctx = (!handler.params.takes_context()
        && handler.params.extracted().next().is_none())
    .then(|| quote!(let _ = ctx;));
    // The conversion and its argument (a block, whose span is its braces) are spanned at the
    // method's return type, so that a mismatch with the command's output is reported there. The
    // path is written out because interpolated tokens keep their own spans.
    let convert = quote_spanned! {handler.output_span=>
        ::interlock::__private::HandlerResult::<<#command as #p::Command>::Output>::into_handler_result({ #call })
    };
    quote! {
        #[automatically_derived]
        impl #impl_generics #p::HandlesCommand<#command> for #self_ty #where_clause {
            // The braces give the conversion's argument the return type's span (see above).
            #[allow(unused_braces)]
            async fn handle(
                &mut self,
                command: #command,
                ctx: &#p::CommandContext,
            ) -> #p::Result<<#command as #p::Command>::Output, #p::DomainError> {
                #unused_ctx
                #extract
                #convert
            }
        }
    }
}

fn applier_impl(item: &ItemImpl, applier: &Applier) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let self_ty = &item.self_ty;
    let event = &applier.event;
    let method = &applier.method;
    quote! {
        #[automatically_derived]
        impl #impl_generics #p::AppliesEvent<#event> for #self_ty #where_clause {
            fn apply(&mut self, event: &#event) {
                Self::#method(self, event);
            }
        }
    }
}

fn configure_impl(
    item: &ItemImpl,
    handlers: &[Handler],
    appliers: &[Applier],
    ignored: &[Type],
) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let self_ty = &item.self_ty;
    let commands = handlers.iter().map(|h| {
        let command = &h.command;
        if h.creates {
            quote!(routes.creating_command::<#command>();)
        } else {
            quote!(routes.command::<#command>();)
        }
    });
    let events = appliers.iter().map(|a| {
        let event = &a.event;
        quote!(routes.event::<#event>();)
    });
    let ignored = ignored
        .iter()
        .map(|event| quote!(routes.ignored_event::<#event>();));
    let requires = extract::requirements(handlers.iter().flat_map(|h| h.params.extracted()));
    quote! {
        #[automatically_derived]
        #[doc(hidden)]
        impl #impl_generics #p::ConfigureAggregate for #self_ty #where_clause {
            fn configure_aggregate(routes: &mut #p::AggregateRoutes<Self>) {
                #(#commands)*
                #(#events)*
                #(#ignored)*
                #requires
            }
        }
    }
}
