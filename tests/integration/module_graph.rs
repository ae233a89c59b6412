//! The module graph of every crate in the workspace has no cycle (ARCHITECTURE.md: data flows one way, and
//! state is handed down to a stage, never imported back up).
//!
//! A module (one source file) *imports* another when it names a path into it: `use crate::a::b`,
//! `crate::a::f()`, `super::x`, a `use` tree, or a re-export (which is followed to the module that defines the
//! item). Two graphs must be acyclic in each crate, the dashboard's included:
//!
//! * the **file graph**: no file imports a module that imports it back, directly or through others;
//! * the **folder graph**: the same for the crate root's top-level modules (a folder counts as one), so a
//!   stage never imports a later one that imports it back.
//!
//! Plain text parsing, not a compiler: comments and strings are stripped roughly, which is enough for this
//! code base. Run alone with `cargo test --test integration module_graph`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &["agent/src", "types/src", "wire/src", "probes/src", "macros/src"];
/// The dashboard, checked on its own (see [`the_dashboard_has_no_import_cycle`]).
const DASHBOARD: &str = "tui/src";

/// One source file: its module path (`""` for the crate root) and its code without comments.
struct Module {
    path: String,
    code: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("source folder is readable").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `lib.rs`/`main.rs` → `""`, `a/mod.rs` → `a`, `a/b.rs` → `a::b`.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under its source folder").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod") || (parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// Removes comments and the contents of string literals (paths in docs or messages are not imports).
fn strip(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path starting with `crate`, `super` or `self` in `code`, with `use` trees expanded, each with the
/// inline modules (`mod tests { .. }`) it sits in, which `super` and `self` are relative to.
fn paths(code: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let inline = inline_modules(code);
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let at_word = i == 0 || !(ident_char(chars[i - 1]) || chars[i - 1] == ':');
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        let head = ["crate::", "super::", "self::"].into_iter().find(|h| rest.starts_with(h));
        match head {
            Some(h) if at_word => {
                let start = i;
                let mut depth = 0usize;
                let mut j = i + h.len();
                // The path, or the whole `use` tree (`{...}`), up to where it ends.
                while j < chars.len() {
                    let c = chars[j];
                    if c == '{' {
                        depth += 1;
                    } else if c == '}' {
                        if depth == 0 {
                            break;
                        }
                        depth -= 1;
                    } else if depth == 0 && !(ident_char(c) || c == ':' || c == '*') {
                        break;
                    }
                    j += 1;
                }
                let text: String = chars[start..j].iter().map(|c| if c.is_whitespace() { ' ' } else { *c }).collect();
                let within: Vec<String> =
                    inline.iter().filter(|(_, a, b)| (*a..*b).contains(&start)).map(|(n, _, _)| n.clone()).collect();
                let mut found = Vec::new();
                expand(&text, &mut found);
                out.extend(found.into_iter().map(|p| (within.clone(), p)));
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// The inline modules of a file (`mod name { .. }`): name and the char range of their body, outermost first.
fn inline_modules(code: &str) -> Vec<(String, usize, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 < chars.len() {
        let word_start = i == 0 || !ident_char(chars[i - 1]);
        if word_start && chars[i..i + 4] == ['m', 'o', 'd', ' '] {
            let mut j = i + 4;
            let name_start = j;
            while j < chars.len() && ident_char(chars[j]) {
                j += 1;
            }
            let name: String = chars[name_start..j].iter().collect();
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if !name.is_empty() && chars.get(j) == Some(&'{') {
                let open = j;
                let mut depth = 0;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                out.push((name, open, j));
            }
        }
        i += 1;
    }
    out
}

/// `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, out: &mut Vec<Vec<String>>) {
    let Some(open) = tree.find('{') else {
        let path: String = tree.split(" as ").next().unwrap_or(tree).chars().filter(|c| !c.is_whitespace()).collect();
        let path = path.trim_end_matches("::self").trim_end_matches("::");
        let segs: Vec<String> = path.split("::").filter(|s| !s.is_empty() && *s != "*").map(String::from).collect();
        if !segs.is_empty() {
            out.push(segs);
        }
        return;
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut part = String::new();
    for c in inner.chars().chain([',']) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            let p = part.trim();
            if p == "self" {
                expand(prefix.trim_end_matches("::"), out);
            } else if !p.is_empty() {
                expand(&format!("{prefix}{p}"), out);
            }
            part.clear();
        } else {
            part.push(c);
        }
    }
}

/// A path relative to module `from`, made absolute (segments from the crate root).
fn absolute(from: &str, path: &[String]) -> Vec<String> {
    let mut base: Vec<String> = if from.is_empty() { Vec::new() } else { from.split("::").map(String::from).collect() };
    let mut segs = path;
    match segs.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            segs = &segs[1..];
        }
        Some("self") => segs = &segs[1..],
        _ => {}
    }
    while segs.first().is_some_and(|s| s == "super") {
        base.pop();
        segs = &segs[1..];
    }
    base.extend(segs.iter().cloned());
    base
}

/// The names each module brings in with `use` (name → absolute path), for following re-exports.
fn bindings(m: &Module) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::new();
    for stmt in m.code.split(';') {
        let Some(pos) = stmt
            .match_indices("use ")
            .map(|(i, _)| i)
            .find(|&i| i == 0 || !stmt[..i].ends_with(|c: char| ident_char(c)))
        else {
            continue;
        };
        let tree: String = stmt[pos + 4..].chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
        let tree = tree.trim();
        if !(tree.starts_with("crate::") || tree.starts_with("super::") || tree.starts_with("self::")) {
            // `use a::b` inside the crate root or a folder module names its own child `a`.
            let first = tree.split("::").next().unwrap_or("");
            if first.is_empty() || !first.chars().all(ident_char) {
                continue;
            }
        }
        let mut found = Vec::new();
        expand(tree, &mut found);
        // Keep the alias of `x as y`.
        for (path, alias) in found.iter().zip(aliases(tree)) {
            let name = alias.unwrap_or_else(|| path.last().cloned().unwrap_or_default());
            map.insert(name, absolute(&m.path, path));
        }
    }
    map
}

/// The `as` alias of each leaf of a `use` tree, in the order `expand` yields them.
fn aliases(tree: &str) -> Vec<Option<String>> {
    let flat: String = tree.replace(['{', '}'], ",");
    flat.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.ends_with("::") && *p != "*" && !p.ends_with("::*"))
        .map(|p| p.split(" as ").nth(1).map(|a| a.trim().to_string()))
        .collect()
}

/// The module (file) an absolute path lands in: the longest prefix that is a module, following re-exports.
fn resolve(
    path: &[String],
    modules: &BTreeSet<String>,
    binds: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
    depth: usize,
) -> String {
    for n in (0..=path.len()).rev() {
        let m = path[..n].join("::");
        if !modules.contains(&m) {
            continue;
        }
        // A name the module only re-exports lives where its `use` points.
        if depth < 8
            && let Some(next) = path.get(n)
            && let Some(target) = binds.get(&m).and_then(|b| b.get(next))
            && target.as_slice() != path
        {
            let mut full = target.clone();
            full.extend(path[n + 1..].iter().cloned());
            return resolve(&full, modules, binds, depth + 1);
        }
        return m;
    }
    String::new()
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn file_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mods: Vec<Module> = files
        .iter()
        .map(|f| Module {
            path: module_path(src, f),
            code: strip(&std::fs::read_to_string(f).expect("source file is readable")),
        })
        .collect();
    let names: BTreeSet<String> = mods.iter().map(|m| m.path.clone()).collect();
    let binds: BTreeMap<_, _> = mods.iter().map(|m| (m.path.clone(), bindings(m))).collect();
    let mut graph = Graph::new();
    for m in &mods {
        let edges = graph.entry(m.path.clone()).or_default();
        for (within, p) in paths(&m.code) {
            // Inside `mod tests { .. }`, `super` is the file itself; what an inline module imports counts
            // as its file's import.
            let base = std::iter::once(m.path.clone()).chain(within).filter(|s| !s.is_empty()).collect::<Vec<_>>();
            let target = resolve(&absolute(&base.join("::"), &p), &names, &binds, 0);
            if target != m.path {
                edges.insert(target);
            }
        }
    }
    graph
}

/// Top-level modules only: `a::b` counts as `a`; the crate root is left out (it declares everything).
fn folder_graph(files: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
    let mut graph = Graph::new();
    for (from, tos) in files {
        if from.is_empty() {
            continue;
        }
        for to in tos {
            if !to.is_empty() && top(to) != top(from) {
                graph.entry(top(from)).or_default().insert(top(to));
            }
        }
    }
    graph
}

/// Each set of modules that import one another, directly or not (strongly connected, more than one).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Reachability is enough at this size (a few dozen modules).
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    stack.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|k| (k, reach(k))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for a in graph.keys() {
        if done.contains(a) || !reaches[a].contains(a) {
            continue;
        }
        let group: Vec<String> = graph
            .keys()
            .filter(|b| reaches[a].contains(*b) && reaches.get(b).is_some_and(|r| r.contains(a)))
            .cloned()
            .collect();
        done.extend(group.iter().cloned());
        out.push(group);
    }
    out
}

/// Why a cycle exists: the imports between its members.
fn explain(graph: &Graph, group: &[String]) -> String {
    let name = |m: &str| if m.is_empty() { "<crate root>".to_string() } else { m.to_string() };
    let mut lines = Vec::new();
    for a in group {
        for b in graph.get(a).into_iter().flatten().filter(|b| group.contains(b)) {
            lines.push(format!("    {} -> {}", name(a), name(b)));
        }
    }
    lines.join("\n")
}

/// Every import cycle in the crates whose sources are under `dirs`, explained.
fn problems(dirs: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for krate in dirs {
        let files = file_graph(&root().join(krate));
        for (kind, graph) in [("file", &files), ("folder", &folder_graph(&files))] {
            for group in cycles(graph) {
                problems.push(format!("{krate}: {kind} cycle:\n{}", explain(graph, &group)));
            }
        }
    }
    problems
}

#[test]
fn no_crate_has_an_import_cycle() {
    let problems = problems(CRATES);
    assert!(problems.is_empty(), "import cycles:\n{}", problems.join("\n"));
}

#[test]
fn the_dashboard_has_no_import_cycle() {
    let problems = problems(&[DASHBOARD]);
    assert!(problems.is_empty(), "import cycles:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}

#[test]
fn the_checker_reads_use_trees_and_re_exports() {
    let mut out = Vec::new();
    expand("crate::{a, b::{c, d as e}, f::self}", &mut out);
    let joined: Vec<String> = out.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["crate::a", "crate::b::c", "crate::b::d", "crate::f"]);
    let modules: BTreeSet<String> = ["", "x", "x::y"].into_iter().map(String::from).collect();
    let root = Module { path: String::new(), code: "pub use x::y::Thing;".into() };
    let binds: BTreeMap<_, _> = [(String::new(), bindings(&root))].into_iter().collect();
    let path = absolute("x", &["crate".into(), "Thing".into()]);
    assert_eq!(resolve(&path, &modules, &binds, 0), "x::y");
    let code = strip("let a = crate::x::f(); // crate::z\n\"crate::q\" mod tests { use super::*; }");
    let found = paths(&code);
    assert_eq!(found[0], (vec![], vec!["crate".to_string(), "x".into(), "f".into()]));
    assert_eq!(found[1], (vec!["tests".to_string()], vec!["super".to_string()]));
}
