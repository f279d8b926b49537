//! `#[saga]` on the inherent impl block.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Generics, ImplItem, ItemImpl, LitStr, Type};

use super::markers::{self, Key, Marker};
use super::methods::{self, Step};
use crate::attr::{self, Once};
use crate::call::{call, unit_result};
use crate::extract;
use crate::markers::combine;

const SAGA: &str = "saga";

/// The attribute's options.
struct Args {
    name: Option<LitStr>,
    state: Option<Type>,
}

/// A step, with how its event finds the instance.
struct KeyedStep {
    step: Step,
    starts: bool,
    key: Key,
}

pub(crate) fn expand(args: TokenStream, mut item: ItemImpl) -> syn::Result<TokenStream> {
    let args = parse_args(args)?;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[saga] goes on the saga's inherent impl block (`impl MySaga { ... }`), not on a trait impl",
        ));
    }
    let Some(state) = args.state else {
        return Err(syn::Error::new(
            Span::call_site(),
            "say which state one saga instance keeps: #[saga(state = MyState)] \
             (a `Default + Serialize + Deserialize` type, saved after every step)",
        ));
    };
    let name = match args.name {
        Some(name) => name,
        None => attr::default_impl_name(&item.self_ty, SAGA)?,
    };

    let mut steps = Vec::new();
    let mut deadline: Option<Step> = None;
    // Whether a step is marked `start`, even one whose signature was refused: then "no start
    // step" would only repeat that error.
    let mut marked_start = false;
    let mut error = None;
    for impl_item in &mut item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let analysed = match markers::take(&mut method.attrs) {
            Ok(Some((Marker::Step { starts, key }, _))) => {
                marked_start |= starts;
                methods::step(method, false).map(|step| steps.push(KeyedStep { step, starts, key }))
            }
            Ok(Some((Marker::Deadline, span))) => {
                methods::step(method, true).and_then(|step| match &deadline {
                    Some(first) => Err(syn::Error::new(
                        span,
                        format!(
                            "`{}` already handles the deadlines: a saga has one #[saga_deadline] \
                             method (match on `deadline.name` inside it)",
                            first.method
                        ),
                    )),
                    None => {
                        deadline = Some(step);
                        Ok(())
                    }
                })
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = analysed {
            combine(&mut error, e);
        }
    }
    if !marked_start {
        combine(
            &mut error,
            syn::Error::new(
                Span::call_site(),
                "a saga starts with some event: mark the step that creates an instance \
                 #[saga_step(start, key = ...)]",
            ),
        );
    }
    if let Err(e) = check_unique(&steps) {
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
    let step_impls = steps
        .iter()
        .map(|s| step_impl(&generics, self_ty, &s.step.event, &s.step));
    let deadline_impl = deadline
        .as_ref()
        .map(|d| step_impl(&generics, self_ty, &quote!(#p::DeadlineReached), d));
    let saga = saga_impl(&generics, self_ty, &name, &state, &steps, deadline.as_ref());
    Ok(quote! {
        #item
        #(#step_impls)*
        #deadline_impl
        #saga
        #error
    })
}

/// `name = "..."` and `state = Type`.
fn parse_args(args: TokenStream) -> syn::Result<Args> {
    let mut name = Once::new("name");
    let mut state = Once::new("state");
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name.set(&meta, attr::type_name(&meta)?)
        } else if meta.path.is_ident("state") {
            state.set(&meta, meta.value()?.parse()?)
        } else {
            Err(attr::unknown_option(&meta, SAGA, &["name", "state"]))
        }
    });
    parser.parse2(args)?;
    Ok(Args {
        name: name.get(),
        state: state.get(),
    })
}

/// Two steps for one event would be conflicting impls; say so in domain terms. Types are
/// compared as written, which catches the common copy-paste case.
fn check_unique(steps: &[KeyedStep]) -> syn::Result<()> {
    let mut error = None;
    let mut events = HashMap::new();
    for s in steps {
        let event = &s.step.event;
        if let Some(first) = events.insert(event.to_token_stream().to_string(), &s.step.method) {
            combine(
                &mut error,
                syn::Error::new_spanned(
                    event,
                    format!(
                        "this event is already handled by `{first}`: an event drives one step of a saga"
                    ),
                ),
            );
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn step_impl(
    generics: &Generics,
    self_ty: &Type,
    event: &dyn ToTokens,
    step: &Step,
) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    // Spanned at the state type the method names, so a mismatch with `state = ...` is reported
    // there.
    let state = quote_spanned!(step.state.span()=> state);
    let args = step.params.args(&quote!(ctx));
    let call = call(&step.method, quote!(#state, event #args), step.is_async);
    let extract = step.params.bindings(|ty| {
        quote! {
            ctx.extract::<#ty>()
                .map_err(<#p::HandlerError as #p::From<#p::Error>>::from)?
        }
    });
    let unused_ctx = (!step.params.takes_context() && step.params.extracted().next().is_none())
        .then(|| quote!(let _ = ctx;));
    let convert = unit_result(step.output_span, &call);
    quote! {
        #[automatically_derived]
        impl #impl_generics #p::SagaStep<#event> for #self_ty #where_clause {
            // The braces give the conversion's argument the return type's span; a step that
            // returns `()` passes it on, which is the point.
            #[allow(unused_braces, clippy::unit_arg)]
            async fn handle(
                &self,
                state: &mut <Self as #p::Saga>::State,
                event: #event,
                ctx: &mut #p::SagaContext<'_>,
            ) -> #p::Result<(), #p::HandlerError> {
                #unused_ctx
                #extract
                #convert
            }
        }
    }
}

/// The closure that takes the key from the event.
fn key_fn(event: &Type, key: &Key) -> TokenStream {
    let p = attr::private();
    match key {
        // Spanned at the field, so a field the event lacks is reported there.
        Key::Field(field) => quote_spanned! {field.span()=>
            |e: &#event| #p::Clone::clone(&e.#field)
        },
        Key::Path(path) => quote_spanned! {path.span()=>
            |e: &#event| #path(e)
        },
        Key::Closure(closure) => closure.to_token_stream(),
    }
}

fn saga_impl(
    generics: &Generics,
    self_ty: &Type,
    name: &LitStr,
    state: &Type,
    steps: &[KeyedStep],
    deadline: Option<&Step>,
) -> TokenStream {
    let p = attr::private();
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let steps_routes = steps.iter().map(|s| {
        let event = &s.step.event;
        let key = key_fn(event, &s.key);
        if s.starts {
            quote!(routes.starts_with::<#event, _>(#key);)
        } else {
            quote!(routes.step::<#event, _>(#key);)
        }
    });
    let deadlines = deadline.map(|_| quote!(routes.deadlines();));
    let requires = extract::requirements(
        steps
            .iter()
            .map(|s| &s.step)
            .chain(deadline)
            .flat_map(|s| s.params.extracted()),
    );
    // Only reached after an error was reported: keep `routes` used so no warning joins it.
    let unused_routes = (steps.is_empty() && deadline.is_none()).then(|| quote!(let _ = routes;));
    quote! {
        #[automatically_derived]
        impl #impl_generics #p::Saga for #self_ty #where_clause {
            const NAME: &'static #p::str = #name;
            type State = #state;
            fn configure(routes: &mut #p::SagaRoutes<'_, Self>) {
                #unused_routes
                #(#steps_routes)*
                #deadlines
                #requires
            }
        }
    }
}
