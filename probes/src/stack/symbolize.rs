//! Symbolization of raw stacks, off the signal path, with a bounded cache.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::Arc;

use super::RawStack;

/// Where a frame's code comes from; lets callers show the application's own frames first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameOrigin {
    /// The application's code.
    User,
    /// The async runtime and libraries around the application's code: tokio, futures, mio, loopscope's own crates,
    /// and any other crate from the cargo registry.
    Runtime,
    /// The standard library (`std`, `core`, `alloc`), the C library, the dynamic loader and the unwinder.
    Std,
    /// The probe itself: the signal handler, the unwinder it calls and the kernel's signal trampoline.
    Probe,
    /// No symbol information.
    Unknown,
}

/// One symbolized frame. An instruction pointer inside inlined code yields several frames with the same `ip`:
/// the inlined callees first (`inlined == true`), the function that contains the code last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The raw instruction pointer.
    pub ip: usize,
    /// Demangled function name without the hash suffix (`tokio::runtime::task::harness::poll`).
    pub function: Option<String>,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// Where the code comes from.
    pub origin: FrameOrigin,
    /// This frame was inlined into the next frame (same `ip`).
    pub inlined: bool,
    /// The shared object (or executable) containing `ip`, as the dynamic loader knows it.
    pub object: Option<String>,
}

impl Frame {
    /// `function` or, without symbols, the address in hex.
    pub fn display_name(&self) -> String {
        match &self.function {
            Some(f) => f.clone(),
            None => format!("{:#x}", self.ip),
        }
    }
}

/// Resolves instruction pointers to functions, files and lines, caching results per address.
///
/// Symbolization uses the `backtrace` crate (DWARF debug info through gimli, falling back to the ELF symbol
/// tables) and is slow the first time a binary's debug info is loaded (milliseconds to seconds for large
/// binaries): call [`warm`](Self::warm) early, outside any latency-sensitive path. The cache holds up to
/// `capacity` addresses in two generations: when the young generation is full it becomes the old one, and
/// addresses still in use are promoted back, so memory stays bounded and hot addresses stay cached.
///
/// ```
/// use loopscope_probes::stack::{CaptureMethod, RawStack, Symbolizer, Unwinder, FrameOrigin};
///
/// #[inline(never)]
/// fn here() -> usize { here as *const () as usize }
///
/// let mut symbolizer = Symbolizer::new();
/// symbolizer.warm();
/// // Pretend `here` was the interrupted instruction of some thread.
/// let raw = RawStack { tid: 1, ips: vec![here()], probe_frames: 0, truncated: false, incomplete: false,
///     unwinder: Unwinder::Dwarf, stack_pointer: 0, latency: Default::default(), method: CaptureMethod::Signal };
/// let frames = symbolizer.symbolize(&raw);
/// assert!(frames[0].function.as_deref().unwrap_or("").ends_with("here"));
/// ```
#[derive(Debug, Clone)]
pub struct Symbolizer {
    young: HashMap<usize, Arc<[Frame]>>,
    old: HashMap<usize, Arc<[Frame]>>,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer caching up to 16,384 addresses.
    pub fn new() -> Self {
        Self::with_capacity(16_384)
    }

    /// A symbolizer caching up to `capacity` addresses (at least 2).
    pub fn with_capacity(capacity: usize) -> Self {
        Symbolizer { young: HashMap::new(), old: HashMap::new(), capacity: capacity.max(2), hits: 0, misses: 0 }
    }

    /// Loads the debug info of this executable and of the C library by resolving one address in each, so that
    /// the first real symbolization is fast.
    pub fn warm(&mut self) {
        let own = Symbolizer::warm as *const () as usize;
        let libc_fn = libc::getpid as *const () as usize;
        for ip in [own, libc_fn] {
            let _ = self.lookup(ip, true);
        }
    }

    /// Cache statistics: `(hits, misses)`.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Number of cached addresses.
    pub fn cached(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Symbolizes a captured stack, innermost frame first. The first `stack.probe_frames` instruction pointers
    /// are reported with [`FrameOrigin::Probe`].
    pub fn symbolize(&mut self, stack: &RawStack) -> Vec<Frame> {
        let mut out = Vec::with_capacity(stack.ips.len() + 4);
        for (i, &ip) in stack.ips.iter().enumerate() {
            // The interrupted instruction is exact; every other address is a return address, whose call
            // instruction is the byte before it.
            let exact = i == stack.probe_frames;
            let frames = self.lookup(ip, exact);
            if i < stack.probe_frames {
                out.extend(frames.iter().map(|f| Frame { ip, origin: FrameOrigin::Probe, ..f.clone() }));
            } else {
                out.extend(frames.iter().map(|f| Frame { ip, ..f.clone() }));
            }
        }
        out
    }

    fn lookup(&mut self, ip: usize, exact: bool) -> Arc<[Frame]> {
        let addr = if exact { ip } else { ip.saturating_sub(1) };
        if let Some(hit) = self.young.get(&addr) {
            self.hits += 1;
            return Arc::clone(hit);
        }
        if let Some(hit) = self.old.remove(&addr) {
            self.hits += 1;
            self.insert(addr, Arc::clone(&hit));
            return hit;
        }
        self.misses += 1;
        let resolved: Arc<[Frame]> = resolve(ip, addr).into();
        self.insert(addr, Arc::clone(&resolved));
        resolved
    }

    fn insert(&mut self, addr: usize, frames: Arc<[Frame]>) {
        if self.young.len() >= self.capacity / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(addr, frames);
    }
}

/// Resolves `addr` (already adjusted to point inside the instruction of interest).
fn resolve(ip: usize, addr: usize) -> Vec<Frame> {
    let object = object_of(addr);
    let mut frames: Vec<Frame> = Vec::new();
    // `backtrace::resolve` subtracts one from the address it is given (it assumes return addresses); we already
    // adjusted, so compensate. It takes the crate's global lock and may allocate: fine, we are not in a handler.
    backtrace::resolve((addr + 1) as *mut std::ffi::c_void, |symbol| {
        let function = symbol.name().map(|n| format!("{n:#}"));
        let file = symbol.filename().map(|p| p.to_string_lossy().into_owned());
        frames.push(Frame {
            ip,
            origin: FrameOrigin::Unknown,
            function,
            file,
            line: symbol.lineno(),
            inlined: true,
            object: object.clone(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            ip,
            function: None,
            file: None,
            line: None,
            origin: FrameOrigin::Unknown,
            inlined: false,
            object: object.clone(),
        });
    }
    if let Some(last) = frames.last_mut() {
        last.inlined = false;
    }
    for frame in &mut frames {
        frame.origin = origin_of(frame.function.as_deref(), frame.file.as_deref(), frame.object.as_deref());
    }
    frames
}

/// The path of the loaded object containing `addr`, via `dladdr(3)`.
fn object_of(addr: usize) -> Option<String> {
    // SAFETY: `Dl_info` is a plain C struct; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's data structures and writes `info`, which is valid for writes.
    let rc = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
    if rc == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: on success `dli_fname` points to a NUL-terminated string owned by the loader, valid while the object
    // stays loaded; we copy it immediately.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(name.to_string_lossy().into_owned())
}

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

/// Classifies a frame by its demangled name, its source file and its object: names first (they are the most
/// reliable), then paths (`/rustc/` is std's source as embedded in debug info; the cargo registry holds
/// third-party crates), then the object (C library and loader frames usually have no file).
pub(crate) fn origin_of(function: Option<&str>, file: Option<&str>, object: Option<&str>) -> FrameOrigin {
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
        if path.contains("/rustc/") || path.contains("/library/std/") || path.contains("/library/core/") {
            return FrameOrigin::Std;
        }
        if path.contains("/.cargo/registry/") || path.contains("/.cargo/git/") {
            return FrameOrigin::Runtime;
        }
    }
    if let Some(obj) = object
        && SYSTEM_OBJECTS.iter().any(|o| obj.contains(o))
    {
        return FrameOrigin::Std;
    }
    if function.is_some() || file.is_some() { FrameOrigin::User } else { FrameOrigin::Unknown }
}

/// The innermost frame of the application's own code, if any: what a stall report should lead with.
///
/// ```
/// use loopscope_probes::stack::{Frame, FrameOrigin, first_user_frame};
/// let f = |name: &str, origin| Frame { ip: 0, function: Some(name.into()), file: None, line: None, origin,
///     inlined: false, object: None };
/// let frames = [f("std::thread::sleep", FrameOrigin::Std), f("app::handler", FrameOrigin::User)];
/// assert_eq!(first_user_frame(&frames).unwrap().function.as_deref(), Some("app::handler"));
/// ```
pub fn first_user_frame(frames: &[Frame]) -> Option<&Frame> {
    frames.iter().find(|f| f.origin == FrameOrigin::User)
}

/// `frames` without the probe's own frames at the top (innermost end).
pub fn without_probe_frames(frames: &[Frame]) -> &[Frame] {
    let skip = frames.iter().take_while(|f| f.origin == FrameOrigin::Probe).count();
    &frames[skip..]
}

/// A compact view: probe frames dropped, and every run of consecutive non-user frames of the same origin
/// collapsed to its innermost frame (`std::thread::sleep` stands for the five std frames below the user's call).
///
/// ```
/// use loopscope_probes::stack::{Frame, FrameOrigin, collapsed};
/// let f = |name: &str, origin| Frame { ip: 0, function: Some(name.into()), file: None, line: None, origin,
///     inlined: false, object: None };
/// let frames = [
///     f("handler", FrameOrigin::Probe),
///     f("clock_nanosleep", FrameOrigin::Std),
///     f("std::thread::sleep", FrameOrigin::Std),
///     f("app::work", FrameOrigin::User),
///     f("tokio::runtime::a", FrameOrigin::Runtime),
///     f("tokio::runtime::b", FrameOrigin::Runtime),
/// ];
/// let names: Vec<_> = collapsed(&frames).iter().map(|f| f.display_name()).collect();
/// assert_eq!(names, ["clock_nanosleep", "app::work", "tokio::runtime::a"]);
/// ```
pub fn collapsed(frames: &[Frame]) -> Vec<&Frame> {
    let mut out: Vec<&Frame> = Vec::new();
    for frame in without_probe_frames(frames) {
        let merge = frame.origin != FrameOrigin::User && out.last().is_some_and(|prev| prev.origin == frame.origin);
        if !merge {
            out.push(frame);
        }
    }
    out
}

/// The stack in "folded" form (`outermost;...;innermost`, as flame-graph tools read it), probe frames dropped.
///
/// ```
/// use loopscope_probes::stack::{Frame, FrameOrigin, folded};
/// let f = |name: &str| Frame { ip: 0, function: Some(name.into()), file: None, line: None,
///     origin: FrameOrigin::User, inlined: false, object: None };
/// assert_eq!(folded(&[f("inner"), f("outer")]), "outer;inner");
/// ```
pub fn folded(frames: &[Frame]) -> String {
    let names: Vec<String> =
        without_probe_frames(frames).iter().rev().map(|f| f.display_name().replace(';', ":")).collect();
    names.join(";")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        use FrameOrigin::*;
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, FrameOrigin);
        let cases: &[Case<'_>] = &[
            (Some("std::thread::sleep"), Some("/rustc/abc/library/std/src/thread/mod.rs"), None, Std),
            (Some("<alloc::vec::Vec<T> as core::ops::Drop>::drop"), None, None, Std),
            (Some("core::ops::function::FnOnce::call_once"), None, None, Std),
            (
                Some("<F as core::future::future::Future>::poll"),
                Some("/rustc/x/library/core/src/future/future.rs"),
                None,
                Std,
            ),
            (
                Some("tokio::runtime::task::harness::poll"),
                Some("/root/.cargo/registry/src/idx/tokio-1.54.1/src/x.rs"),
                None,
                Runtime,
            ),
            (Some("<tokio::time::Sleep as core::future::Future>::poll"), None, None, Runtime),
            (
                Some("parking_lot::raw_mutex::RawMutex::lock_slow"),
                Some("/home/u/.cargo/registry/src/i/parking_lot-0.12.5/src/raw_mutex.rs"),
                None,
                Runtime,
            ),
            (Some("loopscope::agent::watchdog"), Some("/work/main/agent/src/x.rs"), None, Runtime),
            (Some("loopscope_probes::stack::imp::handler"), None, None, Probe),
            (Some("__restore_rt"), None, Some("/lib/x86_64-linux-gnu/libc.so.6"), Probe),
            (Some("clock_nanosleep"), None, Some("/lib/x86_64-linux-gnu/libc.so.6"), Std),
            (Some("__GI___clock_nanosleep"), None, None, Std),
            (Some("myapp::handlers::checkout"), Some("/src/myapp/src/handlers.rs"), None, User),
            (Some("<myapp::Foo as core::fmt::Debug>::fmt"), None, None, User),
            (Some("<&mut myapp::Foo as core::fmt::Debug>::fmt"), None, None, User),
            (None, Some("/src/app/main.rs"), None, User),
            (None, None, Some("/usr/lib/libfoo.so"), Unknown),
            (None, None, None, Unknown),
        ];
        for (function, file, object, expected) in cases {
            assert_eq!(origin_of(*function, *file, *object), *expected, "{function:?} {file:?} {object:?}");
        }
    }

    fn frame(name: &str, origin: FrameOrigin) -> Frame {
        Frame { ip: 0, function: Some(name.into()), file: None, line: None, origin, inlined: false, object: None }
    }

    #[test]
    fn views() {
        use FrameOrigin::*;
        let frames = [
            frame("h", Probe),
            frame("t", Probe),
            frame("libc_read", Std),
            frame("std::io::read", Std),
            frame("app::inner", User),
            frame("app::outer", User),
            frame("tokio::a", Runtime),
            frame("tokio::b", Runtime),
            frame("std::rt", Std),
        ];
        assert_eq!(without_probe_frames(&frames).len(), 7);
        assert_eq!(first_user_frame(&frames).unwrap().display_name(), "app::inner");
        let names: Vec<String> = collapsed(&frames).iter().map(|f| f.display_name()).collect();
        assert_eq!(names, ["libc_read", "app::inner", "app::outer", "tokio::a", "std::rt"]);
        assert_eq!(folded(&frames), "std::rt;tokio::b;tokio::a;app::outer;app::inner;std::io::read;libc_read");
        assert!(first_user_frame(&frames[..4]).is_none());
        assert!(collapsed(&[]).is_empty());
    }

    #[inline(never)]
    fn marker_function() -> usize {
        std::hint::black_box(marker_function as *const () as usize)
    }

    #[test]
    fn symbolizes_and_caches() {
        let ip = marker_function();
        let raw = RawStack {
            tid: 1,
            ips: vec![ip, ip + 1],
            probe_frames: 0,
            truncated: false,
            incomplete: false,
            unwinder: super::super::Unwinder::Dwarf,
            stack_pointer: 0,
            latency: Default::default(),
            method: super::super::CaptureMethod::Signal,
        };
        let mut s = Symbolizer::with_capacity(4);
        let frames = s.symbolize(&raw);
        let name = frames[0].function.clone().unwrap();
        assert!(name.ends_with("marker_function"), "{name}");
        assert!(!name.contains("::h"), "hash suffix must be stripped: {name}");
        assert!(frames[0].file.as_deref().unwrap().ends_with("symbolize.rs"));
        assert!(frames[0].line.is_some());
        let (_, misses) = s.stats();
        s.symbolize(&raw);
        let (hits, misses_after) = s.stats();
        assert_eq!(misses, misses_after, "second pass is served from the cache");
        assert!(hits >= 2);
        // Bounded: many distinct addresses never grow the cache beyond its capacity.
        for i in 0..20 {
            s.lookup(ip + i, true);
        }
        assert!(s.cached() <= 4, "{}", s.cached());
    }

    #[test]
    fn probe_frames_are_marked() {
        let ip = marker_function();
        let raw = RawStack {
            tid: 1,
            ips: vec![ip, ip],
            probe_frames: 1,
            truncated: false,
            incomplete: false,
            unwinder: super::super::Unwinder::Dwarf,
            stack_pointer: 0,
            latency: Default::default(),
            method: super::super::CaptureMethod::Signal,
        };
        let frames = Symbolizer::new().symbolize(&raw);
        assert_eq!(frames.first().unwrap().origin, FrameOrigin::Probe);
        assert_ne!(frames.last().unwrap().origin, FrameOrigin::Probe);
    }
}
