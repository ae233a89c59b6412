//! Where a stalled poll's wall time went: on a CPU, blocked off it, or runnable but waiting for one.
//!
//! Wall time alone can't tell a blocking handler from a machine with more runnable threads than cores: a
//! poll that runs 2 ms of code but waits 20 ms for a CPU looks like a 22 ms stall. The kernel keeps two
//! clocks per thread that tell them apart, the CPU time and the run-queue wait (`run_delay` in
//! `/proc/self/task/<tid>/schedstat`). The watchdog reads both (a [`Reading`]) when a poll passes a quarter of
//! the stall threshold, at every look during a stall, and once just after it ends; [`account`] turns those
//! readings into a [`StallTime`].
//!
//! Every approximation leans toward "blocked", so that an estimate never hides a real stall:
//!
//! * the part of the poll before the first reading is *unmeasured* and counts as the poll's own time;
//! * `run_delay` grows only when a wait ends (the thread gets a CPU). A wait in progress at the first
//!   reading began inside the poll (the thread was running when the poll started), so counting it in full is
//!   right. A wait that ended before the first reading is lost, which can only make the own time larger;
//! * a reading taken after the poll ended covers some time that isn't the poll's; that time is assumed to
//!   have been spent waiting for a CPU, and taken off the poll's run-queue wait.
//!
//! One proof goes the other way. Time that is neither CPU time nor `run_delay` is "off CPU", which is what
//! blocking looks like; but on a virtual machine the hypervisor also takes CPUs away (steal time), and
//! interrupts take time on the thread's CPU, and neither shows in either clock. Measured on a 2-vCPU KVM guest
//! with busy threads beside it: polls of 2 ms of pure CPU work, not one voluntary switch among them, showed
//! 3–10 ms off CPU, enough to fail a 10 ms verdict on their own. A thread that blocks always switches out
//! voluntarily, so when the first reading and the window's end give the same voluntary-switch count, the
//! thread never blocked in between: its off-CPU time there is counted as waiting for a CPU.

use crate::shared::slots::Clocks;
use loopscope_wire::StallTime;
use std::time::Duration;

/// One reading of a thread's scheduler clocks, with the moment it was taken, relative to the poll's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Nanoseconds since the poll started. A reading taken after the poll ended has `at_ns` past its wall
    /// time.
    pub(crate) at_ns: u64,
    /// For a reading taken before the poll started (`at_ns` 0): how long before. That time is not the poll's;
    /// it is taken off the waiting and the CPU time counted from this reading.
    pub(crate) lead_ns: u64,
    /// The thread's CPU time so far.
    pub(crate) cpu_ns: Option<u64>,
    /// The thread's run-queue wait so far.
    pub(crate) run_queue_ns: Option<u64>,
    /// How many times the thread had blocked so far (voluntary switches), where the reading proves it wasn't
    /// blocked at that moment (`loopscope_probes::thread::SchedTimes::voluntary_switches`).
    pub(crate) switches: Option<u64>,
}

impl Reading {
    /// A reading of `clocks`, taken `at_ns` into the poll, or `lead_ns` before it.
    pub(crate) fn at(at_ns: u64, lead_ns: u64, clocks: Clocks) -> Reading {
        Reading { at_ns, lead_ns, cpu_ns: clocks.cpu_ns, run_queue_ns: clocks.run_queue_ns, switches: clocks.switches }
    }
}

/// Readings covering less than this share of the poll make its figures an estimate.
const ESTIMATE_BELOW: f64 = 0.8;

/// Splits a poll's `wall_ns` using `first`, a reading taken while the poll was in flight, `latest`, the newest
/// reading taken while it was still in flight, and `closing`, one taken after it ended (none while it still
/// runs). Any of them may be missing; with nothing to go on, all of the wall time is unmeasured (own time).
///
/// `proof` is an in-flight reading between `first` and the window's end whose voluntary-switch count is known
/// (module docs). When `first`'s count can't prove that the thread never blocked (it has none, or the thread
/// parked between a reading from before the poll and the poll's start), the same proof from `proof` on still
/// holds for the rest of the window. That matters most for a poll still in flight: a wait for a CPU in progress
/// at the latest look is not in `run_delay` yet, so without the proof it would show as blocked.
pub(crate) fn account(
    wall_ns: u64,
    first: Option<Reading>,
    proof: Option<Reading>,
    latest: Option<Reading>,
    closing: Option<Reading>,
) -> StallTime {
    let wall = Duration::from_nanos(wall_ns);
    let unmeasured = StallTime {
        wall,
        on_cpu: Duration::ZERO,
        off_cpu: Duration::ZERO,
        run_queue: Duration::ZERO,
        unmeasured: wall,
        estimated: true,
    };
    let Some(first) = first.filter(|f| f.at_ns < wall_ns) else { return unmeasured };
    let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // Each later reading gives a lower bound for the run-queue wait inside the poll, and an end for the
    // measured window.
    let latest = latest.filter(|l| l.at_ns > first.at_ns && l.at_ns <= wall_ns);
    // A closing reading without the run-queue figure (the thread exited between the clock and the /proc
    // read) can't split its window: the window then ends at the latest complete reading.
    let closing =
        closing.filter(|c| c.at_ns > first.at_ns && (c.run_queue_ns.is_some() || first.run_queue_ns.is_none()));
    // The window's end reading, and what of its figures fell after the poll's end (CPU, waiting): `proof`'s
    // part of the window is measured against the same end.
    let (window_end, rq_bound, cpu_delta, end, after_end) = match (latest, closing) {
        (None, None) => return unmeasured,
        (Some(l), None) => {
            (l.at_ns, delta(first.run_queue_ns, l.run_queue_ns), delta(first.cpu_ns, l.cpu_ns), l, (0, 0))
        }
        (l, Some(c)) => {
            // The closing reading's window runs past the poll's end by `outside`; whatever of that the thread
            // spent on a CPU (it often starts its next poll at once) it did not spend waiting for one. The CPU
            // time since the last in-flight reading, less all the poll time since then, is a floor for it.
            let outside = c.at_ns.saturating_sub(wall_ns);
            let last_in_flight = l.unwrap_or(first);
            let cpu_after_end = delta(last_in_flight.cpu_ns, c.cpu_ns)
                .map_or(0, |d| d.saturating_sub(wall_ns.saturating_sub(last_in_flight.at_ns)));
            let waited_after_end = outside.saturating_sub(cpu_after_end);
            let from_closing = delta(first.run_queue_ns, c.run_queue_ns).map(|d| d.saturating_sub(waited_after_end));
            let from_latest = l.and_then(|l| delta(first.run_queue_ns, l.run_queue_ns));
            let rq = match (from_closing, from_latest) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let cpu = delta(first.cpu_ns, c.cpu_ns).map(|d| d.saturating_sub(cpu_after_end));
            (c.at_ns.min(wall_ns), rq, cpu, c, (cpu_after_end, waited_after_end))
        }
    };
    let end_switches = end.switches;
    // A first reading from before the poll: what happened before the poll's start is not the poll's.
    let rq_bound = rq_bound.map(|r| r.saturating_sub(first.lead_ns));
    let cpu_delta = cpu_delta.map(|c| c.saturating_sub(first.lead_ns));
    let measured = window_end.saturating_sub(first.at_ns);
    let on_cpu = cpu_delta.unwrap_or(0).min(measured);
    // A wait in progress at the first reading began inside the poll, before that reading, so the run-queue
    // wait may reach back past the window to the poll's start; it can't overlap the window's CPU time.
    let run_queue = rq_bound.unwrap_or(0).min(window_end - on_cpu);
    // Blocked time inside the window, assuming all of the wait fell inside it (the least it can be). With a
    // first reading from before the poll, up to `lead_ns` of what remains may be time the lead was counted
    // twice (taken off both the CPU and the waiting figures): that part is unmeasured, not blocked, so a
    // preempted poll is never called blocked because its opening reading came early. The own time is the same.
    let remainder = (measured - on_cpu).saturating_sub(run_queue);
    let off_cpu = remainder.saturating_sub(first.lead_ns);
    // Not one voluntary switch from the first reading to the window's end: the thread never blocked there, so
    // what looks blocked was taken from it by the machine (module docs). It waited for a CPU.
    let never_blocked = matches!((first.switches, end_switches), (Some(a), Some(b)) if a == b);
    // Failing that, the same proof from a later in-flight reading on: the time in that part of the window that
    // is in neither clock was taken from the thread too. At most the whole remainder moves, so what the thread
    // did before `proof` (where it may have blocked) stays off CPU.
    let taken_after_proof = || {
        let p = proof.filter(|p| p.at_ns > first.at_ns && p.at_ns < window_end)?;
        (p.switches.is_some() && p.switches == end_switches).then_some(())?;
        let (cpu_after_end, waited_after_end) = after_end;
        let span = window_end - p.at_ns;
        let cpu = delta(p.cpu_ns, end.cpu_ns)?.saturating_sub(cpu_after_end).min(span);
        let waited = delta(p.run_queue_ns, end.run_queue_ns)?.saturating_sub(waited_after_end);
        Some(span.saturating_sub(cpu).saturating_sub(waited))
    };
    let (run_queue, off_cpu) = if never_blocked {
        (run_queue + off_cpu, 0)
    } else {
        let taken = taken_after_proof().unwrap_or(0).min(off_cpu);
        (run_queue + taken, off_cpu - taken)
    };
    let unmeasured_ns = wall_ns - on_cpu - run_queue - off_cpu;
    StallTime {
        wall,
        on_cpu: Duration::from_nanos(on_cpu),
        off_cpu: Duration::from_nanos(off_cpu),
        run_queue: Duration::from_nanos(run_queue),
        unmeasured: Duration::from_nanos(unmeasured_ns),
        // Without a run-queue figure nothing is known about preemption; a short window says too little.
        estimated: rq_bound.is_none() || ((wall_ns - unmeasured_ns) as f64) < ESTIMATE_BELOW * wall_ns as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn r(at_ms: u64, cpu_ms: u64, rq_ms: u64) -> Reading {
        Reading {
            at_ns: at_ms * MS,
            lead_ns: 0,
            cpu_ns: Some(cpu_ms * MS),
            run_queue_ns: Some(rq_ms * MS),
            switches: None,
        }
    }

    /// `reading` with the thread's voluntary-switch count.
    fn sw(reading: Reading, switches: u64) -> Reading {
        Reading { switches: Some(switches), ..reading }
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    #[test]
    fn preemption_is_measured_from_first_reading_to_the_end() {
        // 22 ms poll; first reading at 2 ms; from there the thread ran 1 ms and waited 18 ms, read 0.5 ms after
        // the end (parked by then).
        let t = account(22 * MS, Some(r(2, 100, 50)), None, None, Some(Reading { at_ns: 22_500_000, ..r(0, 101, 68) }));
        assert_eq!(ms(t.run_queue), 17.5, "the 18 ms wait, less the 0.5 ms after the end: {t:?}");
        assert_eq!(ms(t.on_cpu), 1.0);
        assert_eq!(ms(t.unmeasured), 2.0);
        assert_eq!(ms(t.self_time()), 4.5);
        assert!(!t.estimated, "{t:?}");
        assert_eq!(t.on_cpu + t.off_cpu + t.run_queue + t.unmeasured, t.wall);
    }

    #[test]
    fn an_in_flight_reading_keeps_the_wait_a_late_closing_reading_would_lose() {
        // The watchdog came back 15 ms after the end: the closing reading alone would leave no wait at all.
        let late = Reading { at_ns: 37 * MS, ..r(0, 103, 70) };
        let alone = account(22 * MS, Some(r(2, 100, 50)), None, None, Some(late));
        assert_eq!(alone.run_queue, Duration::from_millis(5));
        let with_latest = account(22 * MS, Some(r(2, 100, 50)), None, Some(r(20, 101, 66)), Some(late));
        assert_eq!(with_latest.run_queue, Duration::from_millis(16));
    }

    #[test]
    fn time_on_a_cpu_after_the_end_was_not_spent_waiting() {
        // The poll ended at 20 ms; the closing reading came at 24 ms, after the thread ran its next poll for
        // 3 of those 4 ms: at most 1 ms of the wait seen at closing can be after the end.
        let first = r(2, 10, 0);
        let latest = r(19, 11, 16);
        let closing = Reading { at_ns: 24 * MS, ..r(0, 15, 17) };
        let t = account(20 * MS, Some(first), None, Some(latest), Some(closing));
        assert_eq!(ms(t.run_queue), 16.0, "{t:?}");
        assert_eq!(ms(t.on_cpu), 2.0, "the next poll's 3 ms are not this one's");
    }

    #[test]
    fn blocked_polls_are_off_cpu_and_their_own_time() {
        let t = account(
            50 * MS,
            Some(r(3, 10, 5)),
            None,
            Some(r(40, 10, 5)),
            Some(Reading { at_ns: 51 * MS, ..r(0, 10, 6) }),
        );
        assert_eq!(t.run_queue, Duration::ZERO);
        assert_eq!(ms(t.off_cpu), 47.0);
        assert_eq!(t.self_time(), t.wall);
    }

    #[test]
    fn missing_readings_leave_everything_unmeasured() {
        let t = account(30 * MS, None, None, None, None);
        assert_eq!(t.unmeasured, t.wall);
        assert_eq!(t.self_time(), t.wall);
        assert!(t.estimated);
        // One reading, no second one: nothing measured either.
        let t = account(30 * MS, Some(r(5, 1, 1)), None, None, None);
        assert_eq!(t.unmeasured, t.wall);
        // No run-queue figure (schedstat unreadable): never explained away as preemption.
        let no_rq = |at, cpu| Reading {
            at_ns: at * MS,
            lead_ns: 0,
            cpu_ns: Some(cpu * MS),
            run_queue_ns: None,
            switches: None,
        };
        let t = account(30 * MS, Some(no_rq(2, 0)), None, None, Some(no_rq(31, 3)));
        assert_eq!(t.run_queue, Duration::ZERO);
        assert!(t.estimated);
    }

    #[test]
    fn a_wait_in_progress_at_the_first_reading_counts_in_full() {
        // Preempted from 1 ms to 19 ms; the first reading (at 9 ms) saw none of that wait yet; the closing
        // reading, after the poll ended at 20 ms, saw all 18 ms of it.
        let t = account(20 * MS, Some(r(9, 1, 0)), None, None, Some(Reading { at_ns: 20 * MS, ..r(0, 2, 18) }));
        assert_eq!(ms(t.run_queue), 18.0, "{t:?}");
        assert_eq!(ms(t.on_cpu), 1.0);
        assert_eq!(ms(t.self_time()), 2.0);
        assert_eq!(t.on_cpu + t.off_cpu + t.run_queue + t.unmeasured, t.wall);
    }

    #[test]
    fn a_reading_from_before_the_poll_leaves_out_what_came_before() {
        // Taken by the thread 1 ms before the poll began (as it registered, or as its previous poll ended); 1 ms
        // of waiting may fall in that gap.
        let born = Reading { at_ns: 0, lead_ns: MS, cpu_ns: Some(5 * MS), run_queue_ns: Some(40 * MS), switches: None };
        let t = account(20 * MS, Some(born), None, None, Some(Reading { at_ns: 20 * MS, ..r(0, 7, 56) }));
        assert_eq!(ms(t.run_queue), 15.0, "{t:?}");
        assert_eq!(ms(t.self_time()), 5.0);
        // The 1 ms the lead may have been counted twice is unmeasured, not blocked.
        assert_eq!((ms(t.on_cpu), ms(t.off_cpu), ms(t.unmeasured)), (1.0, 3.0, 1.0), "{t:?}");
    }

    #[test]
    fn a_long_lead_is_never_taken_for_blocked_time() {
        // The opening reading came 30 ms before a 20 ms poll that only waited for its CPU: the bounds say
        // nothing, and the poll is unmeasured rather than "blocked off CPU for 20 ms".
        let opening = Reading { at_ns: 0, lead_ns: 30 * MS, cpu_ns: Some(0), run_queue_ns: Some(0), switches: None };
        let t = account(20 * MS, Some(opening), None, None, Some(Reading { at_ns: 20 * MS, ..r(0, 10, 40) }));
        assert_eq!(t.off_cpu, Duration::ZERO, "{t:?}");
        assert_eq!(ms(t.run_queue), 10.0, "{t:?}");
        assert!(t.estimated, "{t:?}");
    }

    #[test]
    fn a_closing_reading_without_the_wait_is_not_taken_for_blocked_time() {
        // The thread exited between the two halves of the closing reading: its window is unknown, not off CPU.
        let closing =
            Reading { at_ns: 26 * MS, lead_ns: 0, cpu_ns: Some(101 * MS), run_queue_ns: None, switches: None };
        let t = account(25 * MS, Some(r(3, 100, 300)), None, Some(r(20, 100, 316)), Some(closing));
        assert_eq!(ms(t.run_queue), 16.0, "{t:?}");
        assert_eq!(ms(t.off_cpu), 1.0, "{t:?}");
        assert_eq!(ms(t.unmeasured), 8.0, "{t:?}");
    }

    #[test]
    fn a_late_first_reading_is_an_estimate_that_leans_toward_blocked() {
        // First reading at 9 ms of a 12 ms poll that waited the whole time.
        let t = account(12 * MS, Some(r(9, 0, 0)), None, None, Some(Reading { at_ns: 12 * MS, ..r(0, 0, 3) }));
        assert!(t.estimated);
        assert_eq!(ms(t.self_time()), 9.0);
    }

    #[test]
    fn counters_going_backwards_or_readings_out_of_order_do_not_underflow() {
        let t = account(
            20 * MS,
            Some(r(5, 100, 100)),
            None,
            Some(r(4, 0, 0)),
            Some(Reading { at_ns: 21 * MS, ..r(0, 0, 0) }),
        );
        assert_eq!(t.on_cpu + t.off_cpu + t.run_queue + t.unmeasured, t.wall);
        assert_eq!(t.run_queue, Duration::ZERO);
    }

    #[test]
    fn time_taken_from_a_thread_that_never_blocked_is_waiting_for_a_cpu() {
        // As measured on a KVM guest: a 12 ms poll, first read 3 ms in; from there 2 ms of CPU, 4 ms in
        // run_delay and 3 ms in neither clock (the virtual CPU was taken away), with no voluntary switch.
        let first = sw(r(3, 100, 50), 40);
        let closing = Reading { at_ns: 12 * MS, ..sw(r(0, 102, 54), 40) };
        let t = account(12 * MS, Some(first), None, None, Some(closing));
        assert_eq!(t.off_cpu, Duration::ZERO, "{t:?}");
        assert_eq!(ms(t.run_queue), 7.0, "{t:?}");
        assert_eq!(ms(t.unmeasured), 3.0, "before the first reading: still the poll's own time");
        assert_eq!(ms(t.self_time()), 5.0);
        assert_eq!(t.on_cpu + t.off_cpu + t.run_queue + t.unmeasured, t.wall);
        // One voluntary switch in the window: the same figures are blocked time, as before.
        let blocked = account(12 * MS, Some(first), None, None, Some(Reading { switches: Some(41), ..closing }));
        assert_eq!(ms(blocked.off_cpu), 3.0, "{blocked:?}");
        assert_eq!(ms(blocked.run_queue), 4.0, "{blocked:?}");
        // No count at either end (unreadable, or the thread was blocked when read from outside): no proof.
        for (f, c) in [(r(3, 100, 50), closing), (first, Reading { switches: None, ..closing })] {
            let t = account(12 * MS, Some(f), None, None, Some(c));
            assert_eq!(ms(t.off_cpu), 3.0, "{t:?}");
        }
    }

    #[test]
    fn a_sleep_in_flight_is_never_taken_for_time_taken_away() {
        // The sleep began before the first reading; the reading from outside found the thread asleep, so it has
        // no count (the probes give none for a blocked thread), and the 40 ms stay blocked even though the
        // count at the end is the one the thread had while asleep.
        let first = Reading { switches: None, ..r(3, 10, 5) };
        let t = account(
            50 * MS,
            Some(first),
            None,
            Some(r(40, 10, 5)),
            Some(Reading { at_ns: 51 * MS, ..sw(r(0, 10, 6), 7) }),
        );
        assert_eq!(ms(t.off_cpu), 47.0, "{t:?}");
        assert_eq!(t.self_time(), t.wall);
    }

    #[test]
    fn an_in_flight_look_at_a_thread_that_never_blocked_counts_the_wait_so_far() {
        // Still running: 3 ms in, then 15 ms in, with no switch between; 4 ms of CPU, 5 in run_delay, 3 in neither.
        let t = account(15 * MS, Some(sw(r(3, 10, 5), 2)), None, Some(sw(r(15, 14, 10), 2)), None);
        assert_eq!((ms(t.on_cpu), ms(t.run_queue), ms(t.off_cpu)), (4.0, 8.0, 0.0), "{t:?}");
    }

    #[test]
    fn a_wait_in_progress_at_a_look_counts_from_a_later_proof_on() {
        // Opened by the thread's own reading 1 ms before the poll (10 voluntary switches); it parked in that
        // lead (11), so its count proves nothing. The look at 3 ms found it runnable with 11; the flagging look
        // at 12 ms too, still waiting for the CPU it lost at about 4 ms: that wait is not in run_delay yet.
        let opening = Reading { at_ns: 0, lead_ns: MS, ..sw(r(0, 100, 50), 10) };
        let proof = sw(r(3, 101, 50), 11);
        let latest = sw(r(12, 102, 50), 11);
        let t = account(12 * MS, Some(opening), Some(proof), Some(latest), None);
        assert_eq!((ms(t.on_cpu), ms(t.run_queue), ms(t.off_cpu)), (1.0, 8.0, 2.0), "{t:?}");
        assert_eq!(ms(t.self_time()), 4.0);
        assert_eq!(t.on_cpu + t.off_cpu + t.run_queue + t.unmeasured, t.wall);
        // Without the proof, or with a switch after it (the thread blocked), the same time stays blocked.
        for p in [None, Some(sw(proof, 10)), Some(Reading { switches: None, ..proof })] {
            let t = account(12 * MS, Some(opening), p, Some(latest), None);
            assert_eq!((ms(t.run_queue), ms(t.off_cpu)), (0.0, 10.0), "{p:?}: {t:?}");
        }
        let blocked_later = account(12 * MS, Some(opening), Some(proof), Some(sw(latest, 12)), None);
        assert_eq!((ms(blocked_later.run_queue), ms(blocked_later.off_cpu)), (0.0, 10.0), "{blocked_later:?}");
    }

    #[test]
    fn a_proof_covers_only_its_part_of_a_closed_window() {
        // From the proof at 3 ms to the poll's end at 12 ms: 2 ms of CPU, 4 ms in run_delay and 3 ms in neither,
        // with no switch. The 2 ms in neither clock before the proof (where the thread switched) stay blocked.
        let first = sw(r(0, 100, 50), 10);
        let proof = sw(r(3, 101, 50), 11);
        let closing = Reading { at_ns: 12 * MS, ..sw(r(0, 103, 54), 11) };
        let t = account(12 * MS, Some(first), Some(proof), None, Some(closing));
        assert_eq!((ms(t.on_cpu), ms(t.run_queue), ms(t.off_cpu)), (3.0, 7.0, 2.0), "{t:?}");
        assert_eq!(t.on_cpu + t.off_cpu + t.run_queue + t.unmeasured, t.wall);
        // A proof outside the window (before the first reading, or at its end) proves nothing.
        for p in [Reading { at_ns: 0, ..proof }, Reading { at_ns: 12 * MS, ..proof }] {
            let t = account(12 * MS, Some(Reading { at_ns: MS, ..first }), Some(p), None, Some(closing));
            assert_eq!(t.run_queue, Duration::from_millis(4), "{p:?}: {t:?}");
        }
    }
}
