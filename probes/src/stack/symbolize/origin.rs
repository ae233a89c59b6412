//! Whose code a frame is ([`FrameOrigin`]): the application's, std's, the runtime's or the system's, told
//! from its function's path, its source file and the object it was loaded from, knowing the application's
//! own crates. Split out of `symbolize.rs`, which turns addresses into frames.

use loopscope_types::FrameOrigin;
use std::collections::HashSet;

/// Strips the decorations a demangled name can start with, so `<tokio::x::Y as core::Future>::poll` and
/// `<&mut std::io::Stdout as ...>` are classified by their self type.
fn subject(function: &str) -> &str {
    let mut s = function;
    loop {
        let before = s;
        s = s.trim_start_matches(['<', '&', '*', '(', '[']);
        for prefix in ["mut ", "dyn ", "const ", "impl "] {
            s = s.strip_prefix(prefix).unwrap_or(s);
        }
        if s == before {
            return s;
        }
    }
}

const STD_PREFIXES: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "backtrace::",
    "std_detect::",
    "hashbrown::",
    "rustc_demangle::",
    "gimli::",
    "addr2line::",
    "__rust",
    "rust_begin_unwind",
    "__libc_",
    "__GI_",
    "__pthread",
    "pthread_",
    "__futex",
    "__lll_",
    "start_thread",
    "__clone",
    "clone3",
    "_start",
    "__nptl",
    "_Unwind_",
    "__internal_syscall",
];

const RUNTIME_PREFIXES: &[&str] = &[
    "tokio::",
    "tokio_util::",
    "tokio_stream::",
    "futures::",
    "futures_util::",
    "futures_core::",
    "futures_executor::",
    "futures_task::",
    "mio::",
    // The agent's own crates, but not apps that happen to share the prefix (`loopscope_tui::demo`).
    "loopscope::",
    "loopscope_probes::",
    "loopscope_wire::",
    "loopscope_macros::",
    "tracing::",
    "tracing_core::",
];

const SYSTEM_OBJECTS: &[&str] = &[
    "/libc.so",
    "/libc-",
    "/libpthread",
    "/ld-linux",
    "/ld-musl",
    "/libgcc_s",
    "/libm.so",
    "/libdl",
    "/librt",
    "linux-vdso",
];

/// What a source path says about whose code it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    /// The standard library's sources (`/rustc/<hash>/library/...`, or a local `rust-src`).
    Std,
    /// A dependency: the cargo registry (`~/.cargo/registry/src/`), a git checkout (`~/.cargo/git/checkouts/`)
    /// or a vendored copy.
    Dependency,
    /// Anything else: a relative path, the application's workspace.
    Own,
}

fn path_kind(path: &str) -> PathKind {
    if path.starts_with("/rustc/")
        || path.contains("/lib/rustlib/src/rust/")
        || ["/library/std/", "/library/core/", "/library/alloc/"].iter().any(|p| path.contains(p))
    {
        return PathKind::Std;
    }
    // CARGO_HOME may be anywhere (`/usr/local/cargo`), so match its layout rather than `~/.cargo`.
    if ["/registry/src/", "/git/checkouts/", "/.cargo/registry/", "/.cargo/git/", "/vendor/"]
        .iter()
        .any(|p| path.contains(p))
    {
        return PathKind::Dependency;
    }
    PathKind::Own
}

/// The crate a demangled function name belongs to (`parking_lot` for
/// `<parking_lot::RawMutex as lock_api::RawMutex>::lock`), if it names one.
fn crate_of(function: &str) -> Option<&str> {
    let s = subject(function);
    let end = s.find("::")?;
    let name = &s[..end];
    (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')).then_some(name)
}

/// What the symbolizer knows about which crates are the application's: crates seen in frames whose debug
/// paths point into the cargo registry (not the app's) or elsewhere (the app's), and the executable's own
/// crate name, from its file name (`my-app` → `my_app`; a test binary's `-<hash>` suffix dropped).
#[derive(Debug, Clone, Default)]
pub(crate) struct Crates {
    pub(super) exe: Option<String>,
    pub(super) dependencies: HashSet<String>,
    pub(super) own: HashSet<String>,
}

impl Crates {
    pub(super) fn from_executable_name() -> Crates {
        let exe = std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|name| crate_from_file_name(&name));
        Crates { exe, ..Crates::default() }
    }

    /// Classifies a frame, learning from its path which crate it belongs to.
    pub(super) fn origin(&mut self, function: Option<&str>, file: Option<&str>, object: Option<&str>) -> FrameOrigin {
        if let (Some(f), Some(path)) = (function, file)
            && let Some(krate) = crate_of(f)
            && !self.dependencies.contains(krate)
            && !self.own.contains(krate)
        {
            match path_kind(path) {
                PathKind::Dependency => {
                    self.dependencies.insert(krate.to_owned());
                }
                PathKind::Own => {
                    self.own.insert(krate.to_owned());
                }
                PathKind::Std => {}
            }
        }
        classify_origin(function, file, object, self)
    }

    /// Whether `krate` is known to be the application's.
    fn is_own(&self, krate: &str) -> bool {
        if self.own.contains(krate) {
            return true;
        }
        // The binary's crate, or a library of the same package (`mini_redis` for `mini-redis-server`).
        self.exe
            .as_deref()
            .is_some_and(|exe| exe == krate || exe.strip_prefix(krate).is_some_and(|r| r.starts_with('_')))
    }
}

/// `my-app` → `my_app`; `culprits-0123456789abcdef` (a test binary) → `culprits`.
pub(super) fn crate_from_file_name(name: &str) -> String {
    let name = match name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => stem,
        _ => name,
    };
    name.trim_end_matches(" (deleted)").replace('-', "_")
}

/// Classifies a frame without any knowledge of the application's crates (see `classify_origin`).
#[cfg(test)]
pub(super) fn origin_of(function: Option<&str>, file: Option<&str>, object: Option<&str>) -> FrameOrigin {
    classify_origin(function, file, object, &Crates::default())
}

/// Classifies a frame: the probe's own frames by name; std, tokio, loopscope and the other runtime crates by
/// name (they are never the application's, wherever their sources are); then by source path — std's sources,
/// a dependency's (cargo registry, git checkout, vendored), or the application's own (anything else); then,
/// without a path, by object (C library, loader) and by crate: a crate seen with a dependency path is not the
/// app's, one seen with an own path or named like the executable is; an unknown crate is a dependency, so a
/// registry crate (`parking_lot::raw_mutex::RawMutex::lock_slow`) is never taken for the application.
fn classify_origin(function: Option<&str>, file: Option<&str>, object: Option<&str>, crates: &Crates) -> FrameOrigin {
    if let Some(f) = function {
        if f.starts_with("loopscope_probes::stack::imp::") || f == "__restore_rt" {
            return FrameOrigin::Probe;
        }
        let s = subject(f);
        if STD_PREFIXES.iter().any(|p| s.starts_with(p)) {
            return FrameOrigin::Std;
        }
        if RUNTIME_PREFIXES.iter().any(|p| s.starts_with(p)) {
            return FrameOrigin::Runtime;
        }
    }
    if let Some(path) = file {
        return match path_kind(path) {
            PathKind::Std => FrameOrigin::Std,
            PathKind::Dependency => FrameOrigin::Runtime,
            PathKind::Own => FrameOrigin::User,
        };
    }
    if let Some(obj) = object
        && SYSTEM_OBJECTS.iter().any(|o| obj.contains(o))
    {
        return FrameOrigin::Std;
    }
    let Some(f) = function else { return FrameOrigin::Unknown };
    match crate_of(f) {
        Some(krate) if crates.dependencies.contains(krate) => FrameOrigin::Runtime,
        Some(krate) if crates.is_own(krate) => FrameOrigin::User,
        Some(_) => FrameOrigin::Runtime,
        // A bare name (`main`, a C function, a closure whose path is unknown).
        None => FrameOrigin::User,
    }
}
