//! Lazily read symbols and DWARF of the loaded objects (the executable, shared libraries).
//!
//! Nothing is read until an address in an object must be symbolized. Then the object's file is mapped
//! read-only (`memmap2`) and parsed (`object`); two compact indexes are built — the text symbols of its symbol
//! table sorted by address (16 bytes per symbol, names read from the mapping when needed) and the address
//! ranges of its compilation units from `.debug_aranges` (24 bytes per range) — and the one compilation unit
//! containing the address gets its own `addr2line` context, built over a view of `.debug_info` holding that
//! unit alone, so `addr2line` never walks the other units. At most [`UNIT_CONTEXTS`] unit contexts are kept per
//! object (least recently used goes first). After each batch, [`ObjectDebug::release_pages`] tells the kernel
//! that the mapped pages we touched are no longer needed (`MADV_DONTNEED`): they stay in the page cache, so
//! the next lookup faults them back in cheaply, but they stop counting as this process's resident memory.
//!
//! Why not `addr2line::Loader` or the `backtrace` crate's resolver: both build a context over the whole
//! `.debug_info`, which reads every unit's header and line-program header up front and keeps them (tens of MB
//! resident for a large binary, and the CPU to match), and neither exposes the DWARF tree the naming code
//! needs for inlined frames.

use std::fs::File;
use std::path::{Path, PathBuf};

use addr2line::Context;
use gimli::{EndianSlice, RunTimeEndian, SectionId};
use memmap2::Mmap;
use object::{Object, ObjectSection};

mod symbols;
mod units;

use symbols::Sym;
use units::{UnitContext, Units, View, short_name};

/// The reader every parsed structure uses: a slice of the object's mapping.
pub(crate) type Slice = EndianSlice<'static, RunTimeEndian>;

/// Unit contexts (parsed line tables and function trees) kept per object.
pub(crate) const UNIT_CONTEXTS: usize = 4;

/// One object mapped into this process, as the dynamic loader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// The path shown in frames (`/proc/self/exe` resolved for the executable).
    pub(crate) display: String,
    /// The path to open: `/proc/self/exe` for the executable (works even when the file was deleted).
    pub(crate) open: PathBuf,
    /// Load bias: file virtual address = runtime address - bias.
    pub(crate) bias: usize,
    /// Whether this is the main executable.
    pub(crate) main: bool,
}

/// Without `dl_iterate_phdr` (macOS), no object is known: frames keep their addresses.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(crate) fn find_object(_addr: usize) -> Option<Mapped> {
    None
}

/// The object containing `addr`, from `dl_iterate_phdr(3)` (the loaded segments, not `dladdr`'s guess, which
/// names the executable by `argv[0]`).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(crate) fn find_object(addr: usize) -> Option<Mapped> {
    struct Search {
        addr: usize,
        found: Option<(usize, Option<String>)>,
    }
    unsafe extern "C" fn callback(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut libc::c_void) -> i32 {
        // SAFETY: `data` is the `&mut Search` passed to `dl_iterate_phdr` below, alive for the whole call, and the
        // loader calls us on one thread at a time.
        let search = unsafe { &mut *(data as *mut Search) };
        // SAFETY: the loader passes a valid `dl_phdr_info` for the duration of the callback.
        let info = unsafe { &*info };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers owned by the loader.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let bias = info.dlpi_addr as usize;
        let inside = headers.iter().any(|h| {
            let start = bias.wrapping_add(h.p_vaddr as usize);
            h.p_type == libc::PT_LOAD && search.addr >= start && search.addr < start.wrapping_add(h.p_memsz as usize)
        });
        if !inside {
            return 0;
        }
        let name = if info.dlpi_name.is_null() {
            None
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the loader; copied at once.
            let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned();
            (!name.is_empty()).then_some(name)
        };
        search.found = Some((bias, name));
        1
    }
    let mut search = Search { addr, found: None };
    // SAFETY: the callback only reads the loader's data for the duration of each call and writes `search`,
    // which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(callback), &mut search as *mut Search as *mut libc::c_void) };
    let (bias, name) = search.found?;
    Some(match name {
        Some(name) => Mapped { display: name.clone(), open: PathBuf::from(name), bias, main: false },
        None => {
            let display = std::fs::read_link("/proc/self/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "/proc/self/exe".into());
            Mapped { display, open: PathBuf::from("/proc/self/exe"), bias, main: true }
        }
    })
}

/// A unit's address range: `[start, end)` belongs to the unit at `unit` in `.debug_info`.
#[derive(Debug, Clone, Copy)]
struct UnitRange {
    start: u64,
    end: u64,
    unit: usize,
}

/// The DWARF sections the parser reads, as slices of the mapping.
const SECTIONS: &[SectionId] = &[
    SectionId::DebugAbbrev,
    SectionId::DebugAddr,
    SectionId::DebugAranges,
    SectionId::DebugInfo,
    SectionId::DebugLine,
    SectionId::DebugLineStr,
    SectionId::DebugStr,
    SectionId::DebugStrOffsets,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
];

/// One frame as the debug info gives it, before naming and classification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawFrame {
    /// The DWARF name: a linkage name (mangled) when the compiler recorded one, else the plain `DW_AT_name`
    /// (`{closure#0}<()>`, `hash_spin`).
    pub(crate) name: Option<String>,
    /// The qualified name of an out-of-line copy of the same function, found through the DWARF tree (the
    /// concrete `DW_TAG_subprogram` with the same abstract origin) and the symbol table.
    pub(crate) concrete: Option<String>,
    /// The plain `DW_AT_name` of the function (through its abstract origin): tells a closure from an async
    /// body when the linkage name says only `{{closure}}`.
    pub(crate) short: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
}

/// What an object knows about one address: its frames (inlined callees first) and the symbol-table name of
/// the function containing it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    pub(crate) frames: Vec<RawFrame>,
    pub(crate) symbol: Option<String>,
}

/// The lazily read debug information of one object file.
///
/// Field order matters: everything borrowing the mapping is declared (and so dropped) before `map`.
pub(crate) struct ObjectDebug {
    units: Units,
    object: object::File<'static>,
    sections: Vec<(SectionId, &'static [u8])>,
    endian: RunTimeEndian,
    symbols: Option<Vec<Sym>>,
    unit_ranges: Option<Vec<UnitRange>>,
    /// Whether the object has line tables at all.
    pub(crate) has_lines: bool,
    /// Debug sections that are compressed, which this reader leaves alone (their data would have to be
    /// inflated into memory).
    pub(crate) compressed: bool,
    map: Mmap,
}

impl std::fmt::Debug for ObjectDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectDebug")
            .field("units", &self.units.0.len())
            .field("symbols", &self.symbols.as_ref().map(Vec::len))
            .field("unit_ranges", &self.unit_ranges.as_ref().map(Vec::len))
            .field("has_lines", &self.has_lines)
            .finish()
    }
}

impl ObjectDebug {
    /// Maps and parses the object's headers. Reads no symbol or DWARF data yet.
    pub(crate) fn open(path: &Path) -> Result<ObjectDebug, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: a read-only private mapping of a file we only read. If another process truncated the file
        // while mapped, a read past its new end would raise SIGBUS — the same exposure the dynamic loader and
        // the `backtrace` crate accept for loaded objects (a running executable cannot be written to).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("mmap {}: {e}", path.display()))?;
        // SAFETY: the slice points into `map`, whose pages stay mapped at the same address until `map` is
        // dropped; every structure borrowing it is a field of `ObjectDebug` declared before `map`, so it is
        // dropped first, and the slice is never handed out with a lifetime longer than `&self`.
        let data: &'static [u8] = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        let object = object::File::parse(data).map_err(|e| format!("{}: {e}", path.display()))?;
        let endian = if object.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
        let mut compressed = false;
        let mut sections = Vec::new();
        for &id in SECTIONS {
            let Some(section) = object.section_by_name(id.name()) else { continue };
            let is_compressed =
                section.compressed_file_range().map(|r| r.format != object::CompressionFormat::None).unwrap_or(true);
            if is_compressed {
                compressed = true;
                continue;
            }
            if let Ok(bytes) = section.data() {
                sections.push((id, bytes));
            }
        }
        let has_lines = sections.iter().any(|(id, b)| *id == SectionId::DebugLine && !b.is_empty());
        Ok(ObjectDebug {
            units: Units(Vec::new()),
            object,
            sections,
            endian,
            symbols: None,
            unit_ranges: None,
            has_lines,
            compressed,
            map,
        })
    }

    /// Whether the object's own compilation units are skeletons of split debug info (`.dwo`/`.dwp` files,
    /// which this reader doesn't read). Scans unit headers until it finds one with a DWO id.
    pub(crate) fn has_split_units(&self) -> bool {
        let Ok(dwarf) = self.dwarf(View::Whole) else { return false };
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            if let Ok(unit) = dwarf.unit(header)
                && unit.dwo_id.is_some()
            {
                return true;
            }
        }
        false
    }

    /// Whether the object has a symbol table (`false` for a stripped executable), and its GNU build id.
    pub(crate) fn symbols_and_build_id(&self) -> (bool, Option<String>) {
        let id = self.object.build_id().ok().flatten().map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        (self.object.symbol_table().is_some(), id)
    }

    /// Opens `path`, or the separate debug file installed for it (`/usr/lib/debug/.build-id/xx/yyyy.debug`,
    /// or the `.gnu_debuglink` name under `/usr/lib/debug/<dir>/` or `<dir>/.debug/`) when the object itself
    /// was stripped of its symbol table or line tables, as distributions ship shared libraries.
    pub(crate) fn open_with_separate_debug(path: &Path) -> Result<ObjectDebug, String> {
        let main = ObjectDebug::open(path)?;
        if main.object.symbol_table().is_some() && main.has_lines {
            return Ok(main);
        }
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(Some(id)) = main.object.build_id()
            && let Some((first, rest)) = id.split_first()
        {
            let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
            candidates.push(PathBuf::from(format!("/usr/lib/debug/.build-id/{first:02x}/{hex}.debug")));
        }
        if let Ok(Some((name, _crc))) = main.object.gnu_debuglink() {
            let name = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
            let dir = std::fs::canonicalize(path).ok().and_then(|p| p.parent().map(Path::to_path_buf));
            if let Some(dir) = dir {
                candidates.push(Path::new("/usr/lib/debug").join(dir.strip_prefix("/").unwrap_or(&dir)).join(name));
                candidates.push(dir.join(".debug").join(name));
            }
        }
        main.release_pages();
        for candidate in candidates {
            if let Ok(debug) = ObjectDebug::open(&candidate)
                && debug.object.symbol_table().is_some()
            {
                return Ok(debug);
            }
        }
        Ok(main)
    }

    fn section(&self, id: SectionId) -> &'static [u8] {
        self.sections.iter().find(|(s, _)| *s == id).map(|(_, b)| *b).unwrap_or(&[])
    }

    /// Drops this process's page-table entries for the mapping (the pages stay in the page cache).
    pub(crate) fn release_pages(&self) {
        // SAFETY: the mapping is private, read-only and never written, so discarding its pages loses nothing:
        // the next access reads the same bytes from the file again.
        let _ = unsafe { self.map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }

    fn unit_ranges(&mut self) -> &[UnitRange] {
        if self.unit_ranges.is_none() {
            let ranges = self.build_unit_ranges();
            self.unit_ranges = Some(ranges);
        }
        self.unit_ranges.as_deref().unwrap_or(&[])
    }

    fn build_unit_ranges(&self) -> Vec<UnitRange> {
        let mut ranges = Vec::new();
        let aranges = gimli::DebugAranges::new(self.section(SectionId::DebugAranges), self.endian);
        let mut headers = aranges.headers();
        while let Ok(Some(header)) = headers.next() {
            let unit = header.debug_info_offset().0;
            let mut entries = header.entries();
            loop {
                match entries.next() {
                    Ok(Some(e)) if e.length() != 0 => {
                        let r = e.range();
                        ranges.push(UnitRange { start: r.begin, end: r.end, unit });
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if ranges.is_empty() {
            // No `.debug_aranges` (some linkers and compilers omit it): read each unit's root ranges instead.
            // Costlier (every unit header is parsed once), but only once per object.
            if let Ok(dwarf) = self.dwarf(View::Whole) {
                let mut units = dwarf.units();
                while let Ok(Some(header)) = units.next() {
                    let Some(offset) = header.debug_info_offset() else { continue };
                    let Ok(unit) = dwarf.unit(header) else { continue };
                    let Ok(mut iter) = dwarf.unit_ranges(&unit) else { continue };
                    while let Ok(Some(r)) = iter.next() {
                        if r.end > r.begin {
                            ranges.push(UnitRange { start: r.begin, end: r.end, unit: offset.0 });
                        }
                    }
                }
            }
        }
        ranges.sort_by_key(|r| r.start);
        // Merge touching ranges of one unit (functions of a unit are usually laid out together).
        let mut merged: Vec<UnitRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.unit == r.unit && r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged.shrink_to_fit();
        merged
    }

    /// A `gimli::Dwarf` over the object's sections, with `.debug_info` restricted to the unit at `offset` alone
    /// (`Unit`), so that a context built on it parses that unit only, or to everything up to `end` (`Prefix`),
    /// for a unit that refers into other units (see `resolve`).
    fn dwarf(&self, view: View) -> Result<gimli::Dwarf<Slice>, gimli::Error> {
        let info = self.section(SectionId::DebugInfo);
        let eof = gimli::Error::UnexpectedEof(gimli::ReaderOffsetId(0));
        let restricted = match view {
            View::Whole => None,
            View::Unit(offset) => {
                let end = self.unit_end(offset)?;
                Some((info.get(offset..end).ok_or(eof)?, true))
            }
            View::Prefix(end) => Some((info.get(..end).ok_or(eof)?, false)),
        };
        gimli::Dwarf::load(|id| {
            let bytes = match (id, restricted) {
                (SectionId::DebugInfo, Some((unit, _))) => unit,
                // Offsets in `.debug_aranges` refer to the whole `.debug_info`: useless for a single unit's view.
                (SectionId::DebugAranges, Some((_, true))) => &[],
                _ => self.section(id),
            };
            Ok::<_, gimli::Error>(EndianSlice::new(bytes, self.endian))
        })
    }

    /// The end offset of the unit starting at `offset` in `.debug_info`.
    fn unit_end(&self, offset: usize) -> Result<usize, gimli::Error> {
        let header = gimli::DebugInfo::new(self.section(SectionId::DebugInfo), self.endian)
            .header_from_offset(gimli::DebugInfoOffset(offset))?;
        Ok(offset.saturating_add(header.length_including_self()))
    }

    /// The end offset of the unit containing `target` (walking unit headers only).
    fn end_of_unit_containing(&self, target: usize) -> Option<usize> {
        let mut units = gimli::DebugInfo::new(self.section(SectionId::DebugInfo), self.endian).units();
        while let Ok(Some(header)) = units.next() {
            let start = header.debug_info_offset()?.0;
            let end = start.saturating_add(header.length_including_self());
            if target < end {
                return Some(end);
            }
        }
        None
    }

    /// The context for the unit at `offset`, most recently used first; `wide_end` asks for one over everything
    /// up to that offset (replacing a single-unit one).
    fn unit_context(&mut self, offset: usize, wide_end: Option<usize>) -> Option<&mut UnitContext> {
        if let Some(i) = self.units.0.iter().position(|u| u.offset == offset) {
            let unit = self.units.0.remove(i);
            if wide_end.is_none() || unit.wide >= wide_end {
                self.units.0.insert(0, unit);
                return self.units.0.first_mut();
            }
        }
        let (view, unit_offset) = match wide_end {
            Some(end) => (View::Prefix(end), offset),
            None => (View::Unit(offset), 0),
        };
        let dwarf = self.dwarf(view).ok()?;
        let header = dwarf.debug_info.header_from_offset(gimli::DebugInfoOffset(unit_offset)).ok()?;
        let unit = dwarf.unit(header).ok()?;
        let context = Context::from_dwarf(self.dwarf(view).ok()?).ok()?;
        let units = &mut self.units.0;
        units.truncate(UNIT_CONTEXTS - 1);
        let wide = wide_end;
        units.insert(0, UnitContext { offset, context, unit, dwarf, concrete: None, wide });
        units.first_mut()
    }

    /// Resolves `svma` (a file virtual address inside the instruction of interest).
    pub(crate) fn resolve(&mut self, svma: u64) -> Resolved {
        let symbol = self.symbol_name(svma).map(str::to_owned);
        let mut frames = Vec::new();
        let unit = {
            let ranges = self.unit_ranges();
            ranges.partition_point(|r| r.start <= svma).checked_sub(1).map(|i| ranges[i]).filter(|r| svma < r.end)
        };
        let mut concrete_wanted: Vec<(usize, usize)> = Vec::new();
        if let Some(range) = unit {
            // Release builds (thin LTO across codegen units) inline functions whose DWARF entries live in other
            // units (`DW_FORM_ref_addr`), which a single unit's view cannot follow: then widen the view to every
            // unit up to the one referred to, once for this unit.
            let mut wide_end = None;
            for _ in 0..4 {
                let Some(ctx) = self.unit_context(range.unit, wide_end) else { break };
                // A skeleton unit (`split-debuginfo = "packed"` or `"unpacked"`): its functions and inlining are
                // in a `.dwo`/`.dwp` file, which is not read, and its line table alone gives the innermost
                // *inlined* location (e.g. `core/src/cmp.rs`) under the physical function's name, which would
                // misplace the frame. The symbol's name alone is right; see `Symbolizer::hints`.
                if ctx.unit.dwo_id.is_some() {
                    break;
                }
                match ctx.context.find_frames(svma).skip_all_loads().and_then(|mut iter| {
                    let mut out = Vec::new();
                    while let Some(frame) = iter.next()? {
                        let name = frame.function.as_ref().and_then(|f| f.raw_name().ok()).map(|n| n.into_owned());
                        let short = frame.dw_die_offset.and_then(|off| short_name(&ctx.dwarf, &ctx.unit, off.0));
                        out.push((
                            frame.dw_die_offset.map(|o| o.0),
                            RawFrame {
                                name,
                                concrete: None,
                                short,
                                file: frame.location.as_ref().and_then(|l| l.file).map(str::to_owned),
                                line: frame.location.as_ref().and_then(|l| l.line),
                            },
                        ));
                    }
                    Ok(out)
                }) {
                    Ok(found) => {
                        for (die, frame) in found {
                            if let Some(die) = die {
                                concrete_wanted.push((frames.len(), die));
                            }
                            frames.push(frame);
                        }
                        break;
                    }
                    Err(gimli::Error::NoEntryAtGivenOffset(target))
                        if ctx.wide.is_none_or(|end| (target as usize) >= end) =>
                    {
                        let seen = ctx.wide;
                        let end = self.unit_end(range.unit).ok();
                        let other = self.end_of_unit_containing(target as usize);
                        wide_end = end.zip(other).map(|(a, b)| a.max(b).max(seen.unwrap_or(0)));
                        if wide_end.is_none() {
                            break;
                        }
                    }
                    Err(_) => {
                        // Lines alone (the function tree could not be read).
                        if let Ok(Some(loc)) = ctx.context.find_location(svma) {
                            frames.push(RawFrame {
                                name: None,
                                concrete: None,
                                short: None,
                                file: loc.file.map(str::to_owned),
                                line: loc.line,
                            });
                        }
                        break;
                    }
                }
            }
            // Inlined frames whose DWARF name is unqualified (line-tables-only builds carry no namespaces or
            // linkage names): find an out-of-line copy of the same function and take its symbol's name.
            let needs: Vec<(usize, usize)> = concrete_wanted
                .into_iter()
                .filter(|(i, _)| frames[*i].name.as_deref().is_some_and(|n| !super::names::is_qualified(n)))
                // std's units are large and its frames are shown collapsed: not worth a walk of the unit's tree.
                .filter(|(i, _)| !frames[*i].file.as_deref().is_some_and(|f| f.starts_with("/rustc/")))
                .collect();
            if !needs.is_empty() {
                let addrs: Vec<(usize, Option<u64>)> = match self.units.0.first_mut() {
                    Some(ctx) => needs.iter().map(|&(i, die)| (i, ctx.concrete_address(die))).collect(),
                    None => Vec::new(),
                };
                for (i, addr) in addrs {
                    if let Some(addr) = addr
                        && let Some(name) = self.symbol_name(addr)
                    {
                        frames[i].concrete = Some(name.to_owned());
                    }
                }
            }
        }
        Resolved { frames, symbol }
    }
}
