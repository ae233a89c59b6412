//! Attribute macros for loopscope. Use them through the `loopscope` crate (`#[loopscope::main]`); this crate
//! exists only because Rust requires procedural macros to live in a crate of their own.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ItemFn, Lit, MetaNameValue, Token};

/// Options shared by the runtime-building macros.
struct RuntimeOptions {
    multi_thread: bool,
    explicit_flavor: bool,
    worker_threads: Option<usize>,
    agent: Vec<TokenStream2>,
}

fn lit_str(e: &Expr) -> Option<(String, Span)> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some((s.value(), s.span())),
        _ => None,
    }
}

fn duration_tokens(e: &Expr, key: &str) -> syn::Result<TokenStream2> {
    let (s, span) =
        lit_str(e).ok_or_else(|| syn::Error::new_spanned(e, format!("{key} takes a string such as \"10ms\"")))?;
    let d =
        loopscope_types::parse_duration(&s).map_err(|why| syn::Error::new(span, format!("{key} = {s:?}: {why}")))?;
    let nanos = u64::try_from(d.as_nanos()).map_err(|_| syn::Error::new(span, "duration too large"))?;
    Ok(quote!(::std::time::Duration::from_nanos(#nanos)))
}

/// Parses `flavor`, `worker_threads` and agent settings; `extra` handles macro-specific keys.
fn parse_options(
    args: TokenStream,
    mut extra: impl FnMut(&str, &Expr) -> syn::Result<bool>,
) -> syn::Result<RuntimeOptions> {
    let metas = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse(args)?;
    let mut o = RuntimeOptions { multi_thread: true, explicit_flavor: false, worker_threads: None, agent: Vec::new() };
    for m in metas {
        let key = m.path.get_ident().map(ToString::to_string).unwrap_or_default();
        let v = &m.value;
        match key.as_str() {
            "flavor" => {
                let (s, span) = lit_str(v).ok_or_else(|| syn::Error::new_spanned(v, "flavor takes a string"))?;
                o.explicit_flavor = true;
                o.multi_thread = match s.as_str() {
                    "multi_thread" => true,
                    "current_thread" => false,
                    _ => return Err(syn::Error::new(span, "flavor must be \"multi_thread\" or \"current_thread\"")),
                };
            }
            "worker_threads" => match v {
                Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => {
                    let n: usize = i.base10_parse()?;
                    if n == 0 {
                        return Err(syn::Error::new_spanned(i, "worker_threads must be at least 1"));
                    }
                    o.worker_threads = Some(n);
                }
                _ => return Err(syn::Error::new_spanned(v, "worker_threads takes a number")),
            },
            "stall_threshold" | "slow_poll_threshold" | "watchdog_interval" if !extra(&key, v)? => {
                let d = duration_tokens(v, &key)?;
                let method = syn::Ident::new(&key, Span::call_site());
                o.agent.push(quote!(.#method(#d)));
            }
            "name" => {
                let (s, _) = lit_str(v).ok_or_else(|| syn::Error::new_spanned(v, "name takes a string"))?;
                o.agent.push(quote!(.name(#s)));
            }
            _ => {
                if !extra(&key, v)? {
                    return Err(syn::Error::new_spanned(
                        &m.path,
                        format!(
                            "unknown option `{key}`; expected flavor, worker_threads, stall_threshold, \
                             slow_poll_threshold, watchdog_interval or name"
                        ),
                    ));
                }
            }
        }
    }
    if o.explicit_flavor && !o.multi_thread && o.worker_threads.is_some() {
        return Err(syn::Error::new(Span::call_site(), "worker_threads needs flavor = \"multi_thread\""));
    }
    Ok(o)
}

fn builder_tokens(o: &RuntimeOptions) -> TokenStream2 {
    let ctor = if o.multi_thread { quote!(new_multi_thread) } else { quote!(new_current_thread) };
    let workers = o.worker_threads.map(|n| quote!(__builder.worker_threads(#n);));
    quote! {
        let mut __builder = ::loopscope::__private::tokio::runtime::Builder::#ctor();
        __builder.enable_all();
        #workers
    }
}

/// Like `#[tokio::main]`, with the loopscope agent installed on the runtime.
///
/// Takes tokio's `flavor` (`"multi_thread"`, the default, or `"current_thread"`) and `worker_threads`, plus
/// agent settings: `stall_threshold`, `slow_poll_threshold`, `watchdog_interval` (strings like `"5ms"`,
/// checked at compile time) and `name`. `LOOPSCOPE_*` environment variables still override them.
///
/// If the configuration is invalid at run time (a malformed `LOOPSCOPE_*` variable), the error is printed
/// to stderr and the program runs **without** the agent rather than failing to start.
///
/// As with `#[tokio::main]`, the body runs inside `block_on`, not as a spawned task. loopscope times its
/// polls like a task's all the same (`Agent::instrument`): a poll of the body that blocks past the threshold
/// is reported as a `block_on body` stall at the function's location.
///
/// ```ignore
/// #[loopscope::main(flavor = "current_thread", stall_threshold = "5ms")]
/// async fn main() {
///     tokio::spawn(async { /* ... */ }).await.unwrap();
/// }
/// ```
///
/// (This example is compiled and run as a doctest of the `loopscope` crate, which this crate can't depend
/// on.)
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    let opts = match parse_options(args, |_, _| Ok(false)) {
        Ok(o) => o,
        Err(e) => return e.to_compile_error().into(),
    };
    if input.sig.asyncness.is_none() {
        return syn::Error::new_spanned(input.sig.fn_token, "#[loopscope::main] needs an `async fn`")
            .to_compile_error()
            .into();
    }
    let ItemFn { attrs, vis, mut sig, block } = input;
    sig.asyncness = None;
    let builder = builder_tokens(&opts);
    let agent = &opts.agent;
    let span = block.brace_token.span.join();
    let body = quote_spanned! {span=>
        {
            #builder
            let __loopscope_agent = ::loopscope::__private::install_for_main(
                &mut __builder,
                ::loopscope::Agent::builder() #(#agent)*,
            );
            #[allow(clippy::expect_used)]
            let __runtime = __builder.build().expect("Failed building the Runtime");
            // The body is timed like a task's polls: it often holds the accept loop, and on a current-thread
            // runtime it shares its thread with every task.
            #[allow(clippy::let_unit_value)]
            let __result = __runtime.block_on(::loopscope::__private::instrument_main(
                __loopscope_agent.as_ref(),
                async move #block,
            ));
            drop(__runtime);
            drop(__loopscope_agent);
            __result
        }
    };
    quote!(#(#attrs)* #vis #sig #body).into()
}

fn string_list(e: &Expr, key: &str) -> syn::Result<Vec<String>> {
    let err = || syn::Error::new_spanned(e, format!("{key} takes a list of strings, e.g. [\"src/legacy.rs\"]"));
    match e {
        Expr::Array(a) => a.elems.iter().map(|el| lit_str(el).map(|(s, _)| s).ok_or_else(err)).collect(),
        _ => lit_str(e).map(|(s, _)| vec![s]).ok_or_else(err),
    }
}

/// Like `#[tokio::test]`, and fails the test if any task poll held its thread longer than `max_poll`.
///
/// Options:
/// * `max_poll = "5ms"`: the limit (default `"10ms"`, at least `"100us"`), checked at compile time;
/// * `flavor = "current_thread" | "multi_thread"` and `worker_threads = N`, as in `#[tokio::test]`
///   (default: current-thread);
/// * `allow_spawn = ["src/legacy.rs", "src/cache.rs:42"]`: exempt tasks spawned there (path suffix, or line);
/// * `allow_fn = ["my_crate::legacy::load"]`: exempt stalls whose captured stack contains that function;
/// * `max_stalls = N`: tolerate up to N stalls (default 0);
/// * `count_preemption = true`: judge polls by wall time. By default a poll fails only when its own time
///   (wall time less the time its thread waited for a CPU) passes `max_poll`, so a machine busy with other
///   work (parallel tests) can't fail a clean test; such polls are listed apart in the report.
///
/// The test body runs as a spawned task, so it must be `Send` (most are) and its own polls are checked too.
/// The failure message lists every culprit with its spawn location, duration, classification and stack,
/// the test's own frames first. A panic in the body is re-raised, so `#[should_panic]` works as usual.
///
/// ```ignore
/// #[loopscope::test(max_poll = "5ms", flavor = "multi_thread", worker_threads = 2)]
/// async fn handlers_never_block() {
///     my_app::serve_one_request().await;
/// }
/// ```
///
/// (Compiled and run as a test of the `loopscope` crate, which this crate can't depend on.)
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    let mut check: Vec<TokenStream2> = Vec::new();
    let mut max_poll: Option<TokenStream2> = None;
    let opts = parse_options(args, |key, v| {
        match key {
            "max_poll" | "stall_threshold" => max_poll = Some(duration_tokens(v, key)?),
            "allow_spawn" => {
                for a in string_list(v, key)? {
                    check.push(quote!(.allow_spawn(#a)));
                }
            }
            "allow_fn" => {
                for a in string_list(v, key)? {
                    check.push(quote!(.allow_fn(#a)));
                }
            }
            "max_stalls" => match v {
                Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => {
                    let n: usize = i.base10_parse()?;
                    check.push(quote!(.max_stalls(#n)));
                }
                _ => return Err(syn::Error::new_spanned(v, "max_stalls takes a number")),
            },
            "count_preemption" => match v {
                Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => {
                    let b = b.value;
                    check.push(quote!(.count_preemption(#b)));
                }
                _ => return Err(syn::Error::new_spanned(v, "count_preemption takes true or false")),
            },
            _ => return Ok(false),
        }
        Ok(true)
    });
    let mut opts = match opts {
        Ok(o) => o,
        Err(e) => return e.to_compile_error().into(),
    };
    if input.sig.asyncness.is_none() {
        return syn::Error::new_spanned(input.sig.fn_token, "#[loopscope::test] needs an `async fn`")
            .to_compile_error()
            .into();
    }
    // Like #[tokio::test], default to a current-thread runtime unless a flavor or worker count says otherwise.
    if !opts.explicit_flavor && opts.worker_threads.is_none() {
        opts.multi_thread = false;
    }
    let ItemFn { attrs, vis, mut sig, block } = input;
    sig.asyncness = None;
    let builder = builder_tokens(&opts);
    let agent = &opts.agent;
    let max_poll = max_poll.map(|d| quote!(.max_poll(#d)));
    let body = quote! {
        {
            #builder
            let __check = ::loopscope::check::Check::new()
                #max_poll
                #(#check)*
                .agent(::loopscope::Agent::builder().ignore_env().serve("off").max_reports_per_second(0).tracing(false) #(#agent)*);
            let (__report, __output) = __check.run(__builder, async move #block);
            __report.assert_no_stalls();
            __output
        }
    };
    quote!(#[::core::prelude::v1::test] #(#attrs)* #vis #sig #body).into()
}
