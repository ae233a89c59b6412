//! Spawn locations, interned once each (`&'static Location` addresses to small indexes) without a lock.

use super::*;

/// One interned spawn location.
#[derive(Debug)]
struct LocationEntry {
    /// The `&'static Location`'s address; 0 when free. Entries are never freed: code has finitely many
    /// spawn sites, and the table is bounded anyway.
    key: AtomicUsize,
    loc: OnceLock<&'static Location<'static>>,
}

/// Interns `&'static Location`s to small indexes, so task entries and wire messages carry a `u32`.
#[derive(Debug)]
pub(crate) struct LocationTable {
    entries: Box<[LocationEntry]>,
    /// Finished tasks' totals, parallel to `entries`, plus one last for [`OTHER_LOCATION`]. Mapped zeroed: a
    /// location that never had a task finish costs nothing.
    totals: ZeroedSlice<LocationTotals>,
    mask: usize,
    pub(crate) overflow: AtomicU64,
}

const LOC_PROBE: usize = 32;

impl LocationTable {
    pub(crate) fn new(max: usize) -> Self {
        let cap = (max.max(LOC_PROBE) * 2).next_power_of_two();
        let entries = (0..cap).map(|_| LocationEntry { key: AtomicUsize::new(0), loc: OnceLock::new() }).collect();
        LocationTable { entries, totals: ZeroedSlice::new(cap + 1), mask: cap - 1, overflow: AtomicU64::new(0) }
    }

    fn hash(addr: usize) -> usize {
        // Fibonacci hashing: spreads addresses that share low bits (they are all aligned).
        (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32) as usize
    }

    /// The index for `loc`, interning it on first sight.
    pub(crate) fn intern(&self, loc: &'static Location<'static>) -> u32 {
        let addr = loc as *const Location<'static> as usize;
        let h = Self::hash(addr);
        for i in 0..LOC_PROBE {
            let idx = (h.wrapping_add(i)) & self.mask;
            let Some(e) = self.entries.get(idx) else { continue };
            let k = e.key.load(Acquire);
            if k == addr {
                return idx as u32;
            }
            if k == 0 {
                match e.key.compare_exchange(0, addr, AcqRel, Acquire) {
                    Ok(_) => {
                        let _ = e.loc.set(loc);
                        return idx as u32;
                    }
                    Err(actual) if actual == addr => {
                        // Another thread interned it at this moment; make sure the value is visible.
                        let _ = e.loc.set(loc);
                        return idx as u32;
                    }
                    Err(_) => continue,
                }
            }
        }
        self.overflow.fetch_add(1, Relaxed);
        OTHER_LOCATION
    }

    /// The index of an already interned location, by the address of its `&'static Location`; never inserts.
    pub(crate) fn find(&self, addr: usize) -> u32 {
        let h = Self::hash(addr);
        for i in 0..LOC_PROBE {
            let idx = (h.wrapping_add(i)) & self.mask;
            match self.entries.get(idx).map(|e| e.key.load(Acquire)) {
                Some(k) if k == addr => return idx as u32,
                Some(0) | None => return NONE,
                Some(_) => {}
            }
        }
        NONE
    }

    fn totals_of(&self, idx: u32) -> Option<&LocationTotals> {
        let i = if idx == OTHER_LOCATION { self.entries.len() } else { idx as usize };
        self.totals.get(i)
    }

    /// Adds a finished task's final figures to its location's totals.
    pub(crate) fn fold(&self, location: u32, c: &TaskCounts) {
        if let Some(t) = self.totals_of(location) {
            t.fold(c);
        }
    }

    /// The finished tasks' totals of every location where a task finished, by location index.
    pub(crate) fn finished_totals(&self) -> Vec<(u32, FinishedTotals)> {
        // Only interned locations (and the overflow's) can have totals; skipping the others keeps the scan
        // off the totals' unused pages.
        let interned = self.entries.iter().enumerate().filter(|(_, e)| e.key.load(Relaxed) != 0).map(|(i, _)| i as u32);
        interned.chain(std::iter::once(OTHER_LOCATION)).filter_map(|i| Some((i, self.totals_of(i)?.read()?))).collect()
    }

    /// The location at `idx`, if interned.
    pub(crate) fn get(&self, idx: u32) -> Option<&'static Location<'static>> {
        self.entries.get(idx as usize).and_then(|e| e.loc.get().copied())
    }
}
