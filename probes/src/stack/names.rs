//! Function names as a person writes them: demangled, without the hash suffix or generic arguments, with
//! closures and async bodies spelled out (`my_app::db::load::{closure}`, `mini_redis::cmd::get::Get::apply
//! (async fn)`).
//!
//! Inputs are what symbols and DWARF give: mangled linkage names (legacy `_ZN…17h<hash>E` or v0 `_R…`),
//! their demangled form, and the plain `DW_AT_name`s of line-tables-only builds (`{closure#0}<()>`,
//! `call_once<F, ()>`, `{async_fn#0}<…>`), which carry no path.

/// Whether `name` carries a path outside its generic arguments (`a::b`, `<A as B>::f`) or is a mangled
/// name (which always does).
pub(crate) fn is_qualified(name: &str) -> bool {
    if is_mangled(name) {
        return true;
    }
    let mut depth = 0usize;
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => return true,
            _ => {}
        }
    }
    false
}

fn is_mangled(name: &str) -> bool {
    name.starts_with("_ZN") || name.starts_with("_R") || name.starts_with("__ZN") || name.starts_with("__R")
}

/// Demangles a Rust symbol (legacy or v0) without its hash; other names are returned as they are.
pub(crate) fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_owned(),
    }
}

/// Removes generic argument lists that follow a path segment (`call_once<F, ()>` → `call_once`,
/// `Vec<T>::push` → `Vec::push`, `f::<u8>` → `f`), keeping qualified-self forms (`<A as B>::f`).
pub(crate) fn strip_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut skip_depth = 0usize;
    let chars = name.chars();
    let mut prev: Option<char> = None;
    for c in chars {
        if skip_depth > 0 {
            match c {
                '<' => skip_depth += 1,
                '>' if prev != Some('-') => skip_depth -= 1,
                _ => {}
            }
            prev = Some(c);
            continue;
        }
        let follows_segment = prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '}' || p == ':');
        if c == '<' && follows_segment {
            // `f::<u8>`: drop the turbofish's `::` too.
            if out.ends_with("::") {
                out.truncate(out.len() - 2);
            }
            skip_depth = 1;
            prev = Some(c);
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// Splits a path at the `::` separators that are outside `<…>`.
fn segments(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                out.push(&path[start..i]);
                i += 2;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&path[start..]);
    out
}

/// The kind of body a compiler-generated segment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Closure,
    AsyncFn,
    AsyncBlock,
    AsyncClosure,
    Coroutine,
}

/// `{{closure}}` (legacy), `{closure#0}` (v0, DWARF), `{async_fn#0}`, `{async_block#0}`, ...
fn body_kind(segment: &str) -> Option<Body> {
    let inner = segment.strip_prefix('{')?.strip_suffix('}')?;
    let inner = inner.trim_start_matches('{').trim_end_matches('}');
    let kind = inner.split('#').next()?;
    match kind {
        "closure" | "closure_env" => Some(Body::Closure),
        "async_fn" | "async_fn_env" => Some(Body::AsyncFn),
        "async_block" | "async_block_env" => Some(Body::AsyncBlock),
        "async_closure" => Some(Body::AsyncClosure),
        "coroutine" | "coroutine_env" => Some(Body::Coroutine),
        _ => None,
    }
}

/// The readable name of a function. `name` is a mangled, demangled or plain DWARF name; `short` is the plain
/// `DW_AT_name` of the same function when known, which tells what a legacy `{{closure}}` really is (a closure,
/// an async fn's body or an async block).
///
/// ```text
/// _ZN10mini_redis3cmd3get3Get5apply28_$u7b$$u7b$closure$u7d$$u7d$17h…E + {async_fn#0}<…>
///     → mini_redis::cmd::get::Get::apply (async fn)
/// my_app::db::load::{{closure}}                  → my_app::db::load::{closure}
/// {closure#0}<()>                                 → {closure}
/// <tokio::time::Sleep as core::future::Future>::poll  (unchanged)
/// ```
pub(crate) fn pretty(name: &str, short: Option<&str>) -> String {
    let demangled = demangle(name);
    // Generic arguments go: DWARF names and v0 symbols carry whole instantiations (`call_once<std::rt::
    // lang_start::{closure_env#0}<()>, ()>`), and one spelling for every source (`Mutex::lock`, whether the
    // frame was named from a legacy symbol's `Mutex<T>` or a v0 one's `Mutex<_>`) keeps reports comparable.
    let stripped = strip_generics(&demangled);
    let mut parts: Vec<String> = segments(&stripped).into_iter().map(str::to_owned).collect();
    // A legacy `{{closure}}` says nothing about its kind; the DWARF name of the same function does.
    let short_kind = short.map(strip_generics).and_then(|s| segments(&s).last().and_then(|l| body_kind(l)));
    if let (Some(kind), Some(last)) = (short_kind, parts.last_mut())
        && body_kind(last).is_some()
    {
        *last = match kind {
            Body::AsyncFn => "{async_fn#0}".into(),
            Body::AsyncBlock => "{async_block#0}".into(),
            Body::AsyncClosure => "{async_closure#0}".into(),
            Body::Coroutine => "{coroutine#0}".into(),
            Body::Closure => "{closure#0}".into(),
        };
    }
    let count = parts.len();
    let mut out: Vec<String> = Vec::with_capacity(count);
    let mut async_fn = false;
    for (i, part) in parts.into_iter().enumerate() {
        let last = i + 1 == count;
        match body_kind(&part) {
            // The body of an async fn is the fn, as its author sees it.
            Some(Body::AsyncFn) if last && !out.is_empty() => async_fn = true,
            Some(Body::AsyncFn) if last => out.push("{async fn}".into()),
            Some(Body::AsyncFn) => {}
            Some(Body::Closure) => out.push("{closure}".into()),
            Some(Body::AsyncBlock) => out.push("{async block}".into()),
            Some(Body::AsyncClosure) => out.push("{async closure}".into()),
            Some(Body::Coroutine) => out.push("{coroutine}".into()),
            None => out.push(part),
        }
    }
    let mut joined = out.join("::");
    if async_fn {
        joined.push_str(" (async fn)");
    }
    joined
}

/// A qualified name for an inlined closure or async body whose DWARF name carries no path (`{closure#0}<()>`,
/// `{async_fn#0}`: all that line-tables-only builds record for a function inlined everywhere), from the frames
/// it was inlined into. `callers` are those frames, innermost first: their DWARF name (with generic arguments)
/// and their readable name. `None` when they don't tell.
///
/// * A caller generic over the body names its type: `with_budget<…, my_app::load::{async_fn_env#0}>` was
///   instantiated for the body of `my_app::load`, so an inlined `{async_fn#0}` below it is that body. The index
///   must match, and the nearest caller that mentions the kind must name exactly one such path.
/// * A closure inlined into a caller that is not generic over any closure was called by name, so it was
///   defined there: `{closure#0}` inlined into `my_app::spin` is `my_app::spin::{closure}`. (A closure reached
///   through `dyn Fn` is an indirect call, never inlined.)
pub(crate) fn qualify_body(name: &str, callers: &[(Option<&str>, Option<&str>)]) -> Option<String> {
    let stripped = strip_generics(name);
    let (kind, index) = stripped.strip_prefix('{')?.strip_suffix('}')?.split_once('#')?;
    let env_kind = match kind {
        "closure" => "closure_env",
        "async_fn" => "async_fn_env",
        "async_block" => "async_block_env",
        _ => return None,
    };
    let needle = format!("::{{{env_kind}#{index}}}");
    for (raw, _) in callers.iter().take(8) {
        let Some(raw) = raw else { continue };
        if !raw.contains(&format!("{{{env_kind}#")) {
            continue;
        }
        let mut paths: Vec<&str> = raw.match_indices(&needle).map(|(at, _)| path_ending_at(raw, at)).collect();
        paths.sort_unstable();
        paths.dedup();
        return match paths.as_slice() {
            [path] if !path.is_empty() => Some(pretty(&format!("{path}::{{{kind}#{index}}}"), None)),
            // Generic over another body of this kind, or over two with this index: it doesn't tell which.
            _ => None,
        };
    }
    // A closure called by name from where it was defined.
    let (raw, readable) = callers.first()?;
    let readable = readable.as_deref()?;
    let generic_over_closure = raw.is_some_and(|r| r.contains("{closure_env#"));
    if kind == "closure" && !generic_over_closure && is_qualified(readable) && !readable.starts_with('<') {
        return Some(format!("{}::{{closure}}", readable.trim_end_matches(" (async fn)")));
    }
    None
}

/// The path that ends at byte `end` of `text` (just before a `::{…_env#N}`): the run of path characters
/// before it, which stops at the `<`, `, ` or `(` of an enclosing generic argument list.
fn path_ending_at(text: &str, end: usize) -> &str {
    let head = &text[..end];
    let start = head
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | ':' | '{' | '}' | '#')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &head[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlined_bodies_are_qualified_from_their_callers() {
        // Real line-tables-only names (rustc 1.95, `examples/accuracy/` under `tokio::task::unconstrained`).
        let with_budget = "with_budget<core::task::poll::Poll<u64>, tokio::task::coop::unconstrained::{impl#0}::poll::{closure_env#0}<accuracy::pattern_unconstrained::{async_fn_env#0}>>";
        let callers = [(Some(with_budget), Some("with_budget"))];
        assert_eq!(
            qualify_body("{async_fn#0}", &callers).as_deref(),
            Some("accuracy::pattern_unconstrained (async fn)")
        );
        assert_eq!(
            qualify_body("{closure#0}<core::task::poll::Poll<u64>>", &callers).as_deref(),
            Some("tokio::task::coop::unconstrained::{impl#0}::poll::{closure}")
        );
        // No async block in the caller's type, and it is generic over a closure: nothing to say.
        assert_eq!(qualify_body("{async_block#0}", &callers), None);
        // The nearest caller that mentions the kind decides; an outer one is not consulted past it.
        let callers = [(Some("poll<my_app::a::{async_fn_env#1}>"), Some("poll")), (Some(with_budget), None)];
        assert_eq!(qualify_body("{async_fn#0}", &callers), None);
        // A closure inlined into the function that calls it by name.
        let callers = [(Some("pattern_spin"), Some("accuracy::pattern_spin"))];
        assert_eq!(qualify_body("{closure#0}<()>", &callers).as_deref(), Some("accuracy::pattern_spin::{closure}"));
        let callers = [(Some("{async_fn#0}"), Some("my_app::handler (async fn)"))];
        assert_eq!(qualify_body("{closure#1}", &callers).as_deref(), Some("my_app::handler::{closure}"));
        // ... but not into one generic over a closure (`map(|x| …)` inlined into `Iterator::fold`), nor into an
        // unqualified one.
        let callers = [(Some("fold<my_app::f::{closure_env#1}>"), Some("fold"))];
        assert_eq!(qualify_body("{closure#0}", &callers), None);
        assert_eq!(qualify_body("{closure#0}", &[(Some("spin"), Some("spin"))]), None);
        // Two different bodies with the same index: ambiguous.
        let two = "join<a::x::{async_fn_env#0}, b::y::{async_fn_env#0}>";
        assert_eq!(qualify_body("{async_fn#0}", &[(Some(two), None)]), None);
        // Not a body at all.
        assert_eq!(qualify_body("hash_spin", &callers), None);
    }

    #[test]
    fn qualified() {
        assert!(is_qualified("std::thread::sleep"));
        assert!(is_qualified("<tokio::time::Sleep as core::future::Future>::poll"));
        assert!(is_qualified("_ZN3std6thread5sleep17h0123456789abcdefE"));
        assert!(!is_qualified("hash_spin"));
        assert!(!is_qualified("{closure#0}<()>"));
        assert!(!is_qualified("call_once<std::rt::lang_start::{closure_env#0}<()>, ()>"));
        assert!(!is_qualified("{async_fn#0}<mini_redis::Db>"));
    }

    #[test]
    fn generics() {
        assert_eq!(strip_generics("call_once<std::rt::lang_start::{closure_env#0}<()>, ()>"), "call_once");
        assert_eq!(strip_generics("{closure#0}<()>"), "{closure#0}");
        assert_eq!(strip_generics("alloc::vec::Vec<T>::push"), "alloc::vec::Vec::push");
        assert_eq!(strip_generics("core::mem::drop::<u8>"), "core::mem::drop");
        assert_eq!(
            strip_generics("<tokio::time::Sleep as core::future::Future>::poll"),
            "<tokio::time::Sleep as core::future::Future>::poll"
        );
        assert_eq!(strip_generics("map<fn(u8) -> u8>"), "map");
    }

    #[test]
    fn readable_names() {
        // Real names, as rustc 1.95 emits them (symbols: legacy mangling; DWARF: line-tables-only names).
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "_ZN11integration11probe_leaks11one_runtime28_$u7b$$u7b$closure$u7d$$u7d$28_$u7b$$u7b$closure$u7d$$u7d$17h13e6f512e1c97d7aE",
                Some("{closure#0}<()>"),
                "integration::probe_leaks::one_runtime::{closure}::{closure}",
            ),
            (
                "_ZN10mini_redis3cmd3get3Get5apply28_$u7b$$u7b$closure$u7d$$u7d$17h5e1d6ad4b38f0a6cE",
                Some("{async_fn#0}<mini_redis::Db>"),
                "mini_redis::cmd::get::Get::apply (async fn)",
            ),
            ("mini_redis::cmd::get::Get::apply::{{closure}}", None, "mini_redis::cmd::get::Get::apply::{closure}"),
            ("my_app::db::load::{{closure}}", Some("{closure#0}<()>"), "my_app::db::load::{closure}"),
            ("my_app::db::load::{{closure}}::{{closure}}", None, "my_app::db::load::{closure}::{closure}"),
            ("my_app::serve::{{closure}}", Some("{async_block#0}"), "my_app::serve::{async block}"),
            // v0 mangling names the kind itself.
            ("my_app::main::{closure#1}", None, "my_app::main::{closure}"),
            ("my_app::handler::{async_fn#0}::{closure#0}", None, "my_app::handler::{closure}"),
            ("_ZN3std6thread5sleep17h8a1b2c3d4e5f6a7bE", None, "std::thread::sleep"),
            (
                "_ZN74_$LT$tokio..time..sleep..Sleep$u20$as$u20$core..future..future..Future$GT$4poll17h0a49016c1382a830E",
                None,
                "<tokio::time::sleep::Sleep as core::future::future::Future>::poll",
            ),
            ("{closure#0}<()>", None, "{closure}"),
            ("{async_fn#0}<mini_redis::Db>", None, "{async fn}"),
            ("call_once<std::rt::lang_start::{closure_env#0}<()>, ()>", None, "call_once"),
            ("hash_spin", None, "hash_spin"),
            (
                "_ZN3std4sync6poison5mutex14Mutex$LT$T$GT$4lock17h0123456789abcdefE",
                None,
                "std::sync::poison::mutex::Mutex::lock",
            ),
            // A real v0 symbol (std is built with v0 mangling).
            (
                "_RNvMs_NtNtCsjrHSEGnQ3l9_3std6thread6threadNtB4_6Thread4park",
                None,
                "<std::thread::thread::Thread>::park",
            ),
            ("clock_nanosleep", None, "clock_nanosleep"),
        ];
        for (name, short, expected) in cases {
            assert_eq!(pretty(name, *short), *expected, "{name} / {short:?}");
        }
    }
}
