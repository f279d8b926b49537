//! `#[projection]` / `#[event_processor]` on the inherent impl block.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Generics, ImplItem, ItemImpl, LitStr, Type};

use super::Kind;
use super::markers::{self, Marker};
use super::methods::{self, EventHandler, QueryHandler, Reset};
use crate::attr::{self, Once};
use crate::call::{call, unit_result};
use crate::extract;
use crate::markers::combine;

/// The attribute's options.
struct Args {
    name: Option<LitStr>,
    /// Where `resettable` is written, if it is.
    resettable: Option<Span>,
}

/// What the marked methods declare.
#[derive(Default)]
struct Methods {
    events: Vec<EventHandler>,
    queries: Vec<QueryHandler>,
    reset: Option<Reset>,
}

pub(crate) fn expand(
    kind: Kind,
    args: TokenStream,
    mut item: ItemImpl,
) -> syn::Result<TokenStream> {
    let args = parse_args(kind, args)?;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            format!(
                "#[{}] goes on the processor's inherent impl block (`impl MyType {{ ... }}`), not on a trait impl",
                kind.attribute()
            ),
        ));
    }
    let name = match args.name.clone() {
        Some(name) => name,
        None => attr::default_impl_name(&item.self_ty, kind.attribute())?,
    };

    let mut found = Methods::default();
    // Marked handlers, including ones whose signature was refused: with one, "handles no event"
    // would only repeat that error.
    let mut marked_events = 0;
    let mut error = None;
    for impl_item in &mut item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let analysed = match markers::take(&mut method.attrs) {
            Ok(Some((Marker::HandlesEvent, _))) => {
                marked_events += 1;
                methods::event_handler(method).map(|h| found.events.push(h))
            }
            Ok(Some((Marker::HandlesQuery, span))) => match kind {
                Kind::Projection => methods::query_handler(method).map(|q| found.queries.push(q)),
                Kind::EventProcessor => Err(syn::Error::new(
                    span,
                    "event processors do not answer queries; use #[projection] for a read model \
                     that answers them",
                )),
            },
            Ok(Some((Marker::Reset, span))) => {
                methods::reset(method).and_then(|r| add_reset(&mut found, r, span, &args))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = analysed {
            combine(&mut error, e);
        }
    }
    if marked_events == 0 {
        combine(
            &mut error,
            syn::Error::new(
                Span::call_site(),
                format!(
                    "{} handles at least one event: mark a method #[handles_event]",
                    kind.described()
                ),
            ),
        );
    }
    if let Err(e) = check_unique(&found) {
        combine(&mut error, e);
    }
    // On error, the impl block (without the markers) and the impls of every method that was
    // fine are still emitted, so the only errors the user sees are ours, not follow-ups.
    let error = error.map(syn::Error::into_compile_error);

    let mut generics = item.generics.clone();
    let self_ty = &item.self_ty;
    let p = attr::private();
    attr::bound_if_generic(
        &mut generics,
        &quote!(#self_ty),
        &quote!(#p::Send + #p::Sync + 'static),
    );
    let event_impls = found
        .events
        .iter()
        .map(|h| event_impl(&generics, self_ty, h));
    let query_impls = found
        .queries
        .iter()
        .map(|q| query_impl(&generics, self_ty, q));
    let processor = processor_impl(&generics, self_ty, &name, &found, args.resettable);
    Ok(quote! {
        #item
        #(#event_impls)*
        #(#query_impls)*
        #processor
        #error
    })
}

/// `name = "..."` and `resettable`.
fn parse_args(kind: Kind, args: TokenStream) -> syn::Result<Args> {
    let mut name = Once::new("name");
    let mut resettable = Once::new("resettable");
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name.set(&meta, attr::type_name(&meta)?)
        } else if meta.path.is_ident("resettable") {
            resettable.set(&meta, meta.path.span())
        } else {
            Err(attr::unknown_option(
                &meta,
                kind.attribute(),
                &["name", "resettable"],
            ))
        }
    });
    parser.parse2(args)?;
    Ok(Args {
        name: name.get(),
        resettable: resettable.get(),
    })
}

fn add_reset(found: &mut Methods, reset: Reset, span: Span, args: &Args) -> syn::Result<()> {
    if args.resettable.is_some() {
        return Err(syn::Error::new(
            span,
            "`resettable` already resets to `Self::default()`: keep either it or this #[reset] method",
        ));
    }
    if let Some(first) = &found.reset {
        return Err(syn::Error::new(
            span,
            format!(
                "`{}` is already the #[reset] method: there is one",
                first.method
            ),
        ));
    }
    found.reset = Some(reset);
    Ok(())
}

/// Two handlers of one event (or query) would be conflicting impls; say so in domain terms.
/// Types are compared as written, which catches the common copy-paste case.
fn check_unique(found: &Methods) -> syn::Result<()> {
    let mut error = None;
    let mut events = HashMap::new();
    for h in &found.events {
        if let Some(first) = events.insert(h.event.to_token_stream().to_string(), &h.method) {
            combine(
                &mut error,
                syn::Error::new_spanned(
                    &h.event,
                    format!(
                        "this event is already handled by `{first}`: an event has one handler per processor"
                    ),
                ),
            );
        }
    }
    let mut queries = HashMap::new();
    for q in &found.queries {
        if let Some(first) = queries.insert(q.query.to_token_stream().to_string(), &q.method) {
            combine(
                &mut error,
                syn::Error::new_spanned(
                    &q.query,
                    format!("this query is already answered by `{first}`: a query has one handler"),
                ),
            );
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn event_impl(generics: &Generics, self_ty: &Type, handler: &EventHandler) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let event = &handler.event;
    let args = handler.params.args(&quote!(ctx));
    let call = call(&handler.method, quote!(event #args), handler.is_async);
    let extract = handler.params.bindings(|ty| {
        quote! {
            ctx.extract::<#ty>()
                .map_err(<#p::HandlerError as #p::From<#p::Error>>::from)?
        }
    });
    let unused_ctx = (!handler.params.takes_context()
        && handler.params.extracted().next().is_none())
    .then(|| quote!(let _ = ctx;));
    let convert = unit_result(handler.output_span, &call);
    quote! {
        #[automatically_derived]
        impl #impl_generics #p::HandlesEvent<#event> for #self_ty #where_clause {
            // The braces give the conversion's argument the return type's span; a handler that
            // returns `()` passes it on, which is the point.
            #[allow(unused_braces, clippy::unit_arg)]
            async fn handle(
                &mut self,
                event: #event,
                ctx: &#p::EventContext<'_>,
            ) -> #p::Result<(), #p::HandlerError> {
                #unused_ctx
                #extract
                #convert
            }
        }
    }
}

fn query_impl(generics: &Generics, self_ty: &Type, handler: &QueryHandler) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let query = &handler.query;
    let call = call(&handler.method, quote!(query), handler.is_async);
    let convert = quote_spanned! {handler.output_span=>
        ::interlock::__private::QueryResult::<<#query as #p::Query>::Output>::into_query_result({ #call })
    };
    quote! {
        #[automatically_derived]
        impl #impl_generics #p::AnswersQuery<#query> for #self_ty #where_clause {
            // The braces give the conversion's argument the return type's span (see above).
            #[allow(unused_braces)]
            async fn answer(
                &self,
                query: #query,
            ) -> #p::Result<<#query as #p::Query>::Output, #p::HandlerError> {
                #convert
            }
        }
    }
}

fn processor_impl(
    generics: &Generics,
    self_ty: &Type,
    name: &LitStr,
    found: &Methods,
    resettable: Option<Span>,
) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let events = found.events.iter().map(|h| {
        let event = &h.event;
        quote!(routes.event::<#event>();)
    });
    let queries = found.queries.iter().map(|q| {
        let query = &q.query;
        quote!(routes.query::<#query>();)
    });
    let requires = extract::requirements(found.events.iter().flat_map(|h| h.params.extracted()));
    // Only reached after an error was reported: keep `routes` used so no warning joins it.
    let unused_routes = found.events.is_empty().then(|| quote!(let _ = routes;));
    let body = match (&found.reset, resettable) {
        (Some(reset), _) => Some(unit_result(
            reset.output_span,
            &call(&reset.method, TokenStream::new(), reset.is_async),
        )),
        // Spanned at `resettable`, so a type without `Default` is reported there.
        (None, Some(span)) => Some(quote_spanned! {span=>
            *self = <Self as ::interlock::__private::Default>::default();
            ::interlock::__private::Result::Ok(())
        }),
        (None, None) => None,
    };
    let reset = body.map(|body| {
        quote! {
            #[allow(unused_braces, clippy::unit_arg)]
            async fn reset(&mut self) -> #p::Result<(), #p::HandlerError> {
                #body
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #p::EventProcessor for #self_ty #where_clause {
            const NAME: &'static #p::str = #name;
            fn configure(routes: &mut #p::ProcessorRoutes<Self>) {
                #unused_routes
                #(#events)*
                #(#queries)*
                #requires
            }
            #reset
        }
    }
}
