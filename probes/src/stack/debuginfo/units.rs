//! The parsed compilation units of an object: each unit's `addr2line` context over its own view of
//! `.debug_info`, and the walks of its DIE tree that name inlined frames. Split out of `debuginfo.rs`, which
//! maps objects and decides which unit to parse.

use super::Slice;
use addr2line::Context;

/// Which part of `.debug_info` a context sees.
#[derive(Debug, Clone, Copy)]
pub(super) enum View {
    Whole,
    Unit(usize),
    Prefix(usize),
}

/// A parsed compilation unit: its `addr2line` context, and the gimli unit (same bytes) to walk its DIE tree.
pub(super) struct UnitContext {
    pub(super) offset: usize,
    pub(super) context: Context<Slice>,
    pub(super) unit: gimli::Unit<Slice>,
    pub(super) dwarf: gimli::Dwarf<Slice>,
    /// Abstract origin DIE → address of a concrete (out-of-line) instance, built on first need.
    pub(super) concrete: Option<Vec<(usize, u64)>>,
    /// The context sees every unit up to this offset (the unit refers into other units); `None`: itself only.
    pub(super) wide: Option<usize>,
}

/// The parsed units of an object, most recently used first.
///
/// `addr2line` caches parsed line tables and functions in `OnceCell`s, so a context is `Send` but not `Sync`.
/// Every use goes through `&mut ObjectDebug` (lookups need `&mut` for the LRU order anyway), and `ObjectDebug`'s
/// `units` field is private, so no `&Units` is ever shared between threads: the wrapper only states that. Its
/// own field is visible to `debuginfo.rs` only, which holds the one `Units` of each object.
pub(super) struct Units(pub(super) Vec<UnitContext>);

// SAFETY: `Units` is only reached through `&mut ObjectDebug` (see `unit_context` and `resolve`); a shared
// `&ObjectDebug` on another thread cannot touch it (no method taking `&self` reads `units` beyond its length
// in `Debug`, which reads no `OnceCell`), so the non-`Sync` cells inside are never accessed concurrently.
unsafe impl Sync for Units {}

/// The `DW_AT_name` of the DIE at `die`, following `DW_AT_abstract_origin` and `DW_AT_specification` (a few
/// hops at most).
pub(super) fn short_name(dwarf: &gimli::Dwarf<Slice>, unit: &gimli::Unit<Slice>, die: usize) -> Option<String> {
    let unit = gimli::UnitRef::new(dwarf, unit);
    let mut offset = gimli::UnitOffset(die);
    for _ in 0..4 {
        let entry = unit.entry(offset).ok()?;
        if let Some(name) = entry.attr_value(gimli::DW_AT_name) {
            return unit.attr_string(name).ok().map(|s| s.to_string_lossy().into_owned());
        }
        match entry.attr_value(gimli::DW_AT_abstract_origin).or_else(|| entry.attr_value(gimli::DW_AT_specification)) {
            Some(gimli::AttributeValue::UnitRef(o)) => offset = o,
            _ => return None,
        }
    }
    None
}

impl UnitContext {
    /// The start address of an out-of-line instance of the function that the DIE at `die` (a subprogram or
    /// an inlined subroutine) is, if the unit has one.
    pub(super) fn concrete_address(&mut self, die: usize) -> Option<u64> {
        let unit = gimli::UnitRef::new(&self.dwarf, &self.unit);
        let entry = unit.entry(gimli::UnitOffset(die)).ok()?;
        let origin = match entry.attr_value(gimli::DW_AT_abstract_origin) {
            Some(gimli::AttributeValue::UnitRef(o)) => o.0,
            _ => die,
        };
        if self.concrete.is_none() {
            let mut map = Vec::new();
            let mut entries = unit.entries();
            while let Ok(Some(entry)) = entries.next_dfs() {
                if entry.tag() != gimli::DW_TAG_subprogram {
                    continue;
                }
                let Some(gimli::AttributeValue::UnitRef(o)) = entry.attr_value(gimli::DW_AT_abstract_origin) else {
                    continue;
                };
                let low = match entry.attr_value(gimli::DW_AT_low_pc) {
                    Some(gimli::AttributeValue::Addr(a)) => Some(a),
                    Some(gimli::AttributeValue::DebugAddrIndex(i)) => unit.address(i).ok(),
                    _ => None,
                };
                let low = low.or_else(|| {
                    let mut ranges = unit.die_ranges(entry).ok()?;
                    ranges.next().ok().flatten().map(|r| r.begin)
                });
                if let Some(low) = low.filter(|&a| a != 0) {
                    map.push((o.0, low));
                }
            }
            map.sort_unstable();
            self.concrete = Some(map);
        }
        let map = self.concrete.as_deref()?;
        let i = map.partition_point(|(o, _)| *o < origin);
        map.get(i).filter(|(o, _)| *o == origin).map(|(_, a)| *a)
    }
}
