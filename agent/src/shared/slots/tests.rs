//! `slots.rs`'s tests, in a file of their own to keep that one short.

use super::*;

#[test]
fn in_flight_follows_begin_and_end() {
    let slot = WorkerSlot::new();
    assert!(slot.in_flight().is_none());
    slot.begin(7, 0x70, 700);
    let f = slot.in_flight().expect("a poll in flight");
    assert_eq!((f.seq, f.task_id, f.location_addr, f.start), (1, 7, 0x70, 700));
    assert!(slot.is_polling(7));
    assert_eq!(slot.in_flight_task(), Some(7));
    slot.end(10, false);
    assert!(slot.in_flight().is_none());
    assert_eq!(slot.in_flight_task(), None);
    slot.end(10, false);
    assert_eq!(slot.polls.load(Relaxed), 1, "no poll in flight: nothing ends");
    // A before-hook without its after-hook: counted, and the new poll gets its own odd sequence.
    slot.begin(8, 0x80, 800);
    slot.begin(9, 0x90, 900);
    assert_eq!(slot.nested.load(Relaxed), 1);
    let f = slot.in_flight().expect("a poll in flight");
    assert_eq!((f.seq, f.task_id, f.location_addr, f.start), (5, 9, 0x90, 900));
}

#[test]
fn long_poll_ring_reports_overwritten_entries_as_missing() {
    let slot = WorkerSlot::new();
    for task in 1..=LONG_POLLS as u64 + 1 {
        slot.begin(task, 0, 0);
        slot.record_long(task * 1_000, task as u32, 0);
        slot.end(task * 1_000, true);
    }
    assert_eq!(slot.long_count.load(Relaxed), LONG_POLLS as u64 + 1);
    // Outside a poll there is nothing to remember.
    slot.record_long(1, 1, 1);
    assert_eq!(slot.long_count.load(Relaxed), LONG_POLLS as u64 + 1);
    // The first long poll's entry now holds the last one's: missing, not the wrong poll.
    assert!(slot.long_poll(0).is_none());
    assert!(slot.long_poll_ns(1).is_none());
    let last = slot.long_poll(LONG_POLLS as u64).expect("the newest long poll");
    assert_eq!(
        (last.seq, last.ns, last.task_id),
        (2 * LONG_POLLS as u64 + 1, (LONG_POLLS as u64 + 1) * 1_000, LONG_POLLS as u64 + 1)
    );
    assert_eq!(slot.long_poll_ns(last.seq), Some(last.ns));
    let second = slot.long_poll(1).expect("still in the ring");
    assert_eq!((second.seq, second.task_id), (3, 2));
}

#[test]
fn closing_reading_belongs_to_one_poll() {
    let slot = WorkerSlot::new();
    // Outside a poll there is nothing to close.
    slot.record_closing(5, clocks(Some(1), Some(2), Some(3)));
    assert_eq!(slot.closing(1), None);
    slot.begin(7, 0, 100);
    slot.record_closing(900, clocks(Some(40), None, Some(7)));
    slot.end(800, true);
    assert_eq!(slot.closing(1), Some(ClosingRecord { seq: 1, raw: 900, clocks: clocks(Some(40), None, Some(7)) }));
    slot.begin(8, 0, 1_000);
    slot.record_closing(2_000, clocks(Some(50), Some(60), None));
    slot.end(1_000, true);
    assert_eq!(slot.closing(3), Some(ClosingRecord { seq: 3, raw: 2_000, clocks: clocks(Some(50), Some(60), None) }));
    // The newest is the closing reading of poll 3; the one before opens it.
    assert_eq!(slot.closing(1).map(|c| c.raw), Some(900));
    assert_eq!(slot.closing_before(1_000).map(|c| c.seq), Some(1));
    assert_eq!(slot.closing_before(2_500).map(|c| c.seq), Some(3));
    assert_eq!(slot.closing_before(800), None);
    // Once the ring wraps, the oldest is replaced: poll 1's reads as missing, never as the wrong poll.
    for k in 0..CLOSINGS as u64 - 1 {
        slot.begin(9, 0, 3_000 + k * 1_000);
        slot.record_closing(3_500 + k * 1_000, Clocks::default());
        slot.end(500, true);
    }
    assert_eq!(slot.closing(1), None);
    assert_eq!(slot.closing(5).map(|c| c.raw), Some(3_500));
    assert_eq!(slot.closing(0), None);
    // An opening reading counts as taken at its poll's start.
    slot.begin(10, 0, 50_000);
    slot.record_opening(clocks(Some(70), Some(80), Some(9)));
    let opened = slot.closing_before(50_000).expect("the opening reading");
    assert_eq!((opened.raw, opened.clocks), (50_000, clocks(Some(70), Some(80), Some(9))));
}

#[test]
fn the_watched_polls_closing_outlasts_any_number_of_later_ones() {
    let slot = WorkerSlot::new();
    // Poll 1: the watchdog takes its first reading while it runs, then is starved.
    slot.begin(7, 0, 100);
    slot.watch(1);
    slot.record_closing(900, clocks(Some(2), Some(20), Some(1)));
    slot.end(800, true);
    // The thread ends many more polls past a quarter of the threshold (each preempted once, say) before the
    // watchdog looks again: the ring of closings turns over twice.
    for k in 0..2 * CLOSINGS as u64 {
        slot.begin(8, 0, 1_000 + k * 1_000);
        slot.record_closing(1_500 + k * 1_000, clocks(Some(10 + k), Some(30 + k), Some(1)));
        slot.end(500, false);
    }
    let kept = slot.closing(1).expect("the watched poll's own closing is still there");
    assert_eq!((kept.raw, kept.clocks), (900, clocks(Some(2), Some(20), Some(1))));
    // An unwatched poll's closing is lost with the ring, as before; and the copy never answers for another poll.
    assert_eq!(slot.closing(3), None);
    assert_eq!(
        slot.closing(2 * 2 * CLOSINGS as u64 + 1).map(|c| c.raw),
        Some(1_500 + (2 * CLOSINGS as u64 - 1) * 1_000)
    );
    // The next watched poll replaces it.
    slot.begin(9, 0, 90_000);
    let seq = slot.in_flight().expect("in flight").seq;
    slot.watch(seq);
    slot.record_closing(95_000, Clocks::default());
    slot.end(5_000, true);
    assert_eq!(slot.closing(seq).map(|c| c.raw), Some(95_000));
    assert_eq!(slot.closing(1), None);
}

#[test]
fn the_threads_own_opening_moves_the_polls_start_past_its_own_work() {
    let clock = quanta::Clock::new();
    let slot = WorkerSlot::new();
    let start = clock.raw();
    slot.begin(7, 0, start);
    assert!(!slot.restarted_since(start));
    slot.restarting.store(true, Relaxed);
    assert!(slot.restarted_since(start), "the watchdog must not measure a poll whose thread is restarting it");
    slot.record_own_opening(&clock);
    let moved = slot.in_flight().expect("still in flight").start;
    assert!(moved > start, "the hook's reading is not the task's time: {moved} <= {start}");
    assert!(slot.restarted_since(start) && !slot.restarted_since(moved));
    // The opening counts as taken at the new start, and has both figures.
    let opening = slot.closing_before(moved).expect("the opening");
    assert_eq!(opening.raw, moved);
    assert!(opening.clocks.cpu_ns.is_some() && opening.clocks.run_queue_ns.is_some(), "{opening:?}");
    // The closing reading's moment is read with its CPU clock, before the rest of the hook's work.
    let before = clock.raw();
    slot.record_own_closing(&clock);
    let closing = slot.closing(slot.in_flight().expect("in flight").seq).expect("the closing");
    assert!(closing.raw >= before && closing.raw <= clock.raw());
    assert!(closing.clocks.cpu_ns >= opening.clocks.cpu_ns);
    slot.end(1, false);
    // Outside a poll nothing moves.
    slot.restart(u64::MAX);
    assert_eq!(slot.poll_start.load(Relaxed), moved);
}

fn clocks(cpu_ns: Option<u64>, run_queue_ns: Option<u64>, switches: Option<u64>) -> Clocks {
    Clocks { cpu_ns, run_queue_ns, switches }
}
