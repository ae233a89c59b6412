//! The scheduler readings that split a poll's wall time (`accounting.rs`): the watchdog's own, and the ones the
//! polling thread took of itself (`slots::Closing`).

use super::*;

impl Watchdog {
    /// Opening readings of poll `seq` (started at raw `start`) from a reading the thread took of itself before it
    /// began, no more than `max_lead_ns` before: its own reading as it registered (which covers its first poll,
    /// when the watchdog may not even be running yet), or as its last poll past a quarter of the threshold
    /// ended (`slots::Closing`). The thread was running when it took either, so no wait for a CPU was in
    /// progress, and the time between the reading and the poll's start is taken off the poll's figures
    /// (`Reading::lead_ns`).
    pub(super) fn opening_readings(
        &self,
        slot: &WorkerSlot,
        seq: u64,
        start: u64,
        max_lead_ns: u64,
    ) -> Option<PollReadings> {
        if !self.shared.config.probes {
            return None;
        }
        let (raw, clocks) = Self::own_reading_before(slot, start)?;
        let lead_ns = self.shared.clock.delta_as_nanos(raw, start);
        (lead_ns <= max_lead_ns).then_some(PollReadings {
            seq,
            start,
            first: Reading::at(0, lead_ns, clocks),
            latest: None,
            proof: None,
        })
    }

    /// The split of poll `seq`, which ended after `wall_ns` without the watchdog seeing it, from the thread's
    /// own readings: the one that closed it, and the newest before it began (no closing readings are taken
    /// during a poll, so that one is older than the poll's start).
    pub(super) fn own_time(&self, slot: &WorkerSlot, seq: u64, wall_ns: u64) -> Option<StallTime> {
        if !self.shared.config.probes {
            return None;
        }
        let first = slot.closing(seq).and_then(|c| {
            let (raw, clocks) = Self::own_reading_before(slot, c.raw.checked_sub(1)?)?;
            let lead_ns = self.shared.clock.delta_as_nanos(raw, c.raw).saturating_sub(wall_ns);
            let opening = Reading::at(0, lead_ns, clocks);
            let closing = Reading::at(wall_ns, 0, c.clocks);
            Some((opening, closing))
        });
        let (opening, closing) = first.unzip();
        Some(account(wall_ns, opening, None, None, closing))
    }

    /// The first readings of poll `seq`, `elapsed_ns` into it: the thread's own from before it began if that
    /// one is closer to its start, else one taken now. The thread is asked to keep this poll's closing reading
    /// apart (`WorkerSlot::watch`).
    pub(super) fn first_readings(
        &self,
        slot: &WorkerSlot,
        seq: u64,
        start: u64,
        elapsed_ns: u64,
    ) -> Option<PollReadings> {
        let readings = self.opening_readings(slot, seq, start, elapsed_ns).or_else(|| {
            let first = self.read(slot.tid, start)?;
            slot.still_in(seq).then_some(PollReadings { seq, start, first, latest: None, proof: None })
        })?;
        // This poll is measured now: its closing reading must outlast any number of later ones.
        slot.watch(seq);
        Some(readings)
    }

    /// Takes a new reading of poll `seq` while it is still in flight, as its newest. The newest it replaces
    /// becomes the poll's `proof` if it is the first with a switch count.
    pub(super) fn refresh_latest(&self, slot: &WorkerSlot, seq: u64, start: u64, readings: &mut Option<PollReadings>) {
        if let Some(r) = readings.as_mut()
            && r.seq == seq
            && let Some(reading) = self.read(slot.tid, start)
            && slot.still_in(seq)
        {
            if r.proof.is_none() {
                r.proof = r.latest.filter(|l| l.switches.is_some());
            }
            r.latest = Some(reading);
        }
    }

    /// A cheap scheduler reading of thread `tid`, for a poll that started at `start`.
    pub(super) fn read(&self, tid: i32, start: u64) -> Option<Reading> {
        if !self.shared.config.probes {
            return None;
        }
        let at_ns = self.shared.clock.delta_as_nanos(start, self.shared.clock.raw());
        let t = loopscope_probes::thread::sched_times(tid).ok()?;
        Some(Reading::at(at_ns, 0, Clocks::from_sched(t)))
    }

    /// The split of a poll still in flight, `elapsed_ns` into it.
    pub(super) fn time_so_far(&self, elapsed_ns: u64, readings: Option<PollReadings>) -> Option<StallTime> {
        if !self.shared.config.probes {
            return None;
        }
        // A reading taken during this look is a little newer than `elapsed_ns`: the poll has run at least that long.
        let wall_ns = readings
            .map(|r| r.latest.map_or(r.first.at_ns, |l| l.at_ns.max(r.first.at_ns)))
            .map_or(elapsed_ns, |at| at.max(elapsed_ns));
        Some(split(wall_ns, readings, None))
    }

    /// The split of poll `seq`, which ended after `wall_ns`: closed by the thread's own reading as it ended
    /// (exact), or else by one taken now.
    pub(super) fn final_time(
        &self,
        slot: &WorkerSlot,
        seq: u64,
        wall_ns: u64,
        readings: Option<PollReadings>,
    ) -> Option<StallTime> {
        if !self.shared.config.probes {
            return None;
        }
        let closing = readings.and_then(|r| match slot.closing(seq) {
            Some(c) => Some(Reading::at(self.shared.clock.delta_as_nanos(r.start, c.raw), 0, c.clocks)),
            None => self.read(slot.tid, r.start),
        });
        Some(split(wall_ns, readings, closing))
    }

    /// The newest reading thread `slot` took of itself at or before raw clock `raw`: as it registered, or as one
    /// of its polls ended (`slots::Closing`). `(raw, clocks)`.
    pub(super) fn own_reading_before(slot: &WorkerSlot, raw: u64) -> Option<(u64, Clocks)> {
        let born = slot.born.filter(|b| b.raw <= raw).map(|b| (b.raw, b.clocks));
        let closed = slot.closing_before(raw).map(|c| (c.raw, c.clocks));
        match (born, closed) {
            (Some(b), Some(c)) => Some(if c.0 >= b.0 { c } else { b }),
            (b, c) => b.or(c),
        }
    }
}

/// [`account`] of a poll's readings (any of them missing), closed by `closing` once the poll ended.
fn split(wall_ns: u64, readings: Option<PollReadings>, closing: Option<Reading>) -> StallTime {
    let first = readings.map(|r| r.first);
    account(wall_ns, first, readings.and_then(|r| r.proof), readings.and_then(|r| r.latest), closing)
}
