//! Symbolization of raw stacks, off the signal path, with a bounded cache.

use std::collections::HashMap;
use std::sync::Arc;

use super::RawStack;
use super::debuginfo::{Mapped, ObjectDebug, RawFrame, Resolved, find_object};
use super::names;
use origin::Crates;
#[cfg(test)]
use origin::{crate_from_file_name, origin_of};

mod origin;

/// Where a frame's code comes from; defined in `loopscope-types`, so stall reports carry it as it is.
pub use loopscope_types::FrameOrigin;

/// One symbolized frame; defined in `loopscope-types`, so stall reports carry it as it is (see there for the
/// two fields the stream leaves out).
pub use loopscope_types::Frame;

/// Resolves instruction pointers to functions, files and lines, caching results per address.
///
/// Nothing is read at construction or by [`warm`](Self::warm): the first address in an object maps that object's
/// file read-only and builds two compact indexes (its text symbols by address, its compilation units by address
/// range); each address then parses only the one compilation unit containing it (line table and function tree,
/// with `addr2line`), and at most four parsed units are kept per object. Pages of the mapping touched by a lookup
/// are handed back to the kernel afterwards (they stay in the page cache), so the resident cost between stalls is
/// the indexes plus the cached units. The result cache holds up to `capacity` addresses in two generations:
/// when the young generation is full it becomes the old one, and addresses still in use are promoted back, so
/// memory stays bounded and hot addresses stay cached.
///
/// Names are made readable ([`Frame::function`]): demangled, without hash or generic arguments, closures and
/// async bodies spelled out, and inlined frames qualified from the DWARF tree or the symbol table where the
/// debug info gives only a short name (line-tables-only builds).
///
/// Errors degrade: an object that cannot be read, or has no symbols, gives frames with only `ip` and `object`.
///
/// ```
/// use loopscope_probes::stack::{CaptureMethod, RawStack, Symbolizer, Unwinder, FrameOrigin};
///
/// #[inline(never)]
/// fn here() -> usize { here as *const () as usize }
///
/// let mut symbolizer = Symbolizer::new();
/// symbolizer.warm(); // cheap: nothing is loaded before the first lookup
/// // Pretend `here` was the interrupted instruction of some thread.
/// let raw = RawStack { tid: 1, ips: vec![here()], probe_frames: 0, truncated: false, incomplete: false,
///     unwinder: Unwinder::Dwarf, stack_pointer: 0, latency: Default::default(), method: CaptureMethod::Signal };
/// let frames = symbolizer.symbolize(&raw);
/// assert!(frames[0].function.as_deref().unwrap_or("").ends_with("here"));
/// ```
#[derive(Debug)]
pub struct Symbolizer {
    young: HashMap<usize, Arc<[Frame]>>,
    old: HashMap<usize, Arc<[Frame]>>,
    capacity: usize,
    hits: u64,
    misses: u64,
    objects: Vec<Loaded>,
    crates: Crates,
}

/// One object the symbolizer has met: where it is mapped and its (lazily read) debug info, or why not.
#[derive(Debug)]
struct Loaded {
    mapped: Mapped,
    debug: Result<ObjectDebug, String>,
    /// Lookups since the object's pages were last handed back.
    touched: bool,
}

impl Clone for Symbolizer {
    /// Clones the address cache and what was learned about crates; objects are read again on demand.
    fn clone(&self) -> Self {
        Symbolizer {
            young: self.young.clone(),
            old: self.old.clone(),
            capacity: self.capacity,
            hits: self.hits,
            misses: self.misses,
            objects: Vec::new(),
            crates: self.crates.clone(),
        }
    }
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
        Symbolizer {
            young: HashMap::new(),
            old: HashMap::new(),
            capacity: capacity.max(2),
            hits: 0,
            misses: 0,
            objects: Vec::new(),
            crates: Crates::from_executable_name(),
        }
    }

    /// Kept for callers that warmed the old, eager symbolizer: debug info is now read on demand, per
    /// compilation unit, at the first lookup that needs it, so there is nothing worth doing ahead of time.
    pub fn warm(&mut self) {}

    /// Advice about the executable's debug info: today, that stacks will have no file:line because the binary
    /// has no line tables, or that its debug sections are compressed. Worked out once per process (from the
    /// executable's section headers only) and the same every call.
    ///
    /// ```
    /// use loopscope_probes::stack::Symbolizer;
    /// // Test binaries are built with debug info, so there is nothing to advise.
    /// assert!(Symbolizer::new().hints().is_empty());
    /// ```
    pub fn hints(&self) -> Vec<String> {
        static HINTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        HINTS.get_or_init(executable_hints).clone()
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
                out.extend(frames.iter().map(|f| Frame { ip: ip as u64, origin: FrameOrigin::Probe, ..f.clone() }));
            } else {
                out.extend(frames.iter().map(|f| Frame { ip: ip as u64, ..f.clone() }));
            }
        }
        self.release_pages();
        out
    }

    /// Hands the pages of the object mappings touched since the last call back to the kernel.
    fn release_pages(&mut self) {
        for loaded in self.objects.iter_mut().filter(|l| l.touched) {
            loaded.touched = false;
            if let Ok(debug) = &loaded.debug {
                debug.release_pages();
            }
        }
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
        let resolved: Arc<[Frame]> = self.resolve(ip, addr).into();
        self.insert(addr, Arc::clone(&resolved));
        resolved
    }

    fn insert(&mut self, addr: usize, frames: Arc<[Frame]>) {
        if self.young.len() >= self.capacity / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(addr, frames);
    }

    /// The loaded-object entry for `mapped`, opening its file the first time.
    fn object(&mut self, mapped: Mapped) -> &mut Loaded {
        let i = match self.objects.iter().position(|l| l.mapped == mapped) {
            Some(i) => i,
            None => {
                let debug = ObjectDebug::open_with_separate_debug(&mapped.open);
                self.objects.push(Loaded { mapped, debug, touched: false });
                self.objects.len() - 1
            }
        };
        &mut self.objects[i]
    }

    /// Resolves `addr` (already adjusted to point inside the instruction of interest).
    fn resolve(&mut self, ip: usize, addr: usize) -> Vec<Frame> {
        let Some(mapped) = find_object(addr) else {
            return vec![Frame {
                ip: ip as u64,
                function: None,
                file: None,
                line: None,
                origin: FrameOrigin::Unknown,
                inlined: false,
                object: None,
            }];
        };
        let object = Some(mapped.display.clone());
        let svma = (addr - mapped.bias) as u64;
        let loaded = self.object(mapped);
        loaded.touched = true;
        let resolved = match &mut loaded.debug {
            Ok(debug) => debug.resolve(svma),
            Err(_) => Resolved::default(),
        };
        let mut frames = build_frames(ip, &resolved, object.as_deref());
        for frame in &mut frames {
            frame.origin =
                self.crates.origin(frame.function.as_deref(), frame.file.as_deref(), frame.object.as_deref());
        }
        frames
    }
}

/// Turns what the debug info says about one address into frames with readable, qualified names.
fn build_frames(ip: usize, resolved: &Resolved, object: Option<&str>) -> Vec<Frame> {
    let count = resolved.frames.len();
    let mut frames: Vec<Frame> = resolved
        .frames
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let physical = i + 1 == count;
            Frame {
                ip: ip as u64,
                function: frame_name(raw, physical.then_some(resolved.symbol.as_deref()).flatten()),
                file: raw.file.clone(),
                line: raw.line,
                origin: FrameOrigin::Unknown,
                inlined: !physical,
                object: object.map(str::to_owned),
            }
        })
        .collect();
    // Inlined closures and async bodies of line-tables-only builds carry no path: name them from the frames they
    // were inlined into, outermost first, so that each caller is already qualified when the next body asks.
    for i in (0..frames.len().saturating_sub(1)).rev() {
        if frames[i].function.as_deref().is_some_and(|f| f.starts_with('{'))
            && let Some(raw) = resolved.frames.get(i).and_then(|r| r.name.as_deref())
        {
            let callers: Vec<(Option<&str>, Option<&str>)> = (i + 1..frames.len())
                .map(|j| (resolved.frames.get(j).and_then(|r| r.name.as_deref()), frames[j].function.as_deref()))
                .collect();
            if let Some(name) = names::qualify_body(raw, &callers) {
                frames[i].function = Some(name);
            }
        }
    }
    if frames.is_empty() {
        frames.push(Frame {
            ip: ip as u64,
            function: resolved.symbol.as_deref().map(|s| names::pretty(s, None)),
            file: None,
            line: None,
            origin: FrameOrigin::Unknown,
            inlined: false,
            object: object.map(str::to_owned),
        });
    }
    frames
}

/// The readable name of one frame: its DWARF name when that is qualified (a linkage name), else the qualified
/// name of the same function from the symbol table — the containing function's symbol for the physical frame,
/// an out-of-line copy's symbol for an inlined one — with the DWARF short name telling closures from async
/// bodies; else the short name alone.
fn frame_name(raw: &RawFrame, symbol: Option<&str>) -> Option<String> {
    let short = raw.short.as_deref().or(raw.name.as_deref());
    match raw.name.as_deref() {
        Some(name) if names::is_qualified(name) => Some(names::pretty(name, short)),
        name => match symbol.or(raw.concrete.as_deref()) {
            Some(qualified) => Some(names::pretty(qualified, short)),
            None => name.map(|n| names::pretty(n, None)),
        },
    }
}

/// Hints about the executable's debug info (see [`Symbolizer::hints`]).
fn executable_hints() -> Vec<String> {
    let mut hints = Vec::new();
    match ObjectDebug::open(std::path::Path::new("/proc/self/exe")) {
        Ok(exe) => {
            let (symbols, build_id) = exe.symbols_and_build_id();
            if !symbols {
                hints.push(format!(
                    "the executable is stripped of its symbols (`strip = true` or `\"symbols\"`): stacks show                      addresses, not names{}; build with `strip = \"debuginfo\"` or `strip = false` to keep names",
                    build_id.map(|id| format!(" (build id {id})")).unwrap_or_default()
                ));
            }
            if exe.has_split_units() {
                hints.push(
                    "the executable's debug info is split (`split-debuginfo = \"packed\"` or `\"unpacked\"`),                      which is not read: stacks show names from the symbol table, without file:line; build with                      `split-debuginfo = \"off\"` for file:line"
                        .to_string(),
                );
            } else if exe.compressed {
                hints.push(
                    "the executable's debug sections are compressed and are not read: stacks show names from the \
                     symbol table only; link without --compress-debug-sections"
                        .to_string(),
                );
            } else if !exe.has_lines {
                hints.push(
                    "no file:line in stacks: add `[profile.release] debug = \"line-tables-only\"` to Cargo.toml"
                        .to_string(),
                );
            }
            exe.release_pages();
        }
        Err(e) => hints.push(format!("the executable cannot be read for symbols ({e}): stacks show addresses")),
    }
    hints
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
mod tests;
