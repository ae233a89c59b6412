//! `tables.rs`'s tests, in a file of their own to keep that one short.

use super::*;

#[test]
fn insert_find_free_cycle() {
    let t = TaskTable::new(16, true);
    let a = t.insert(5, 0).unwrap();
    assert_eq!(t.find(5), a);
    assert_eq!(t.find(6), NONE);
    let e = t.get(a).unwrap();
    e.record_poll(2_000, false);
    e.record_poll(70_000, true);
    let c = t.read(a as usize).unwrap();
    assert_eq!((c.polls, c.busy_ns, c.max_poll_ns, c.slow_polls), (2, 72_000, 70_000, 1));
    assert_eq!(c.poll_hist.iter().sum::<u32>(), 2);
    // Not finished yet: free() refuses.
    t.free(a as usize);
    assert_eq!(t.find(5), a);
    e.feed_mark.store(3, Relaxed);
    e.state.store(FINISHED, Release);
    t.free(a as usize);
    assert_eq!(t.find(5), NONE);
    assert!(t.read(a as usize).is_none());
    // A new task reusing the slot (the first later id with the same home slot) starts from zero.
    let same_home = (6..).find(|&id| t.home(id) == t.home(5)).unwrap();
    let b = t.insert(same_home, 1).unwrap();
    assert_eq!(b, a);
    assert_eq!(t.read(b as usize).unwrap().polls, 0);
    assert_eq!(t.get(b).unwrap().feed_mark.load(Relaxed), 0, "the feed sends the new task");
}

/// Issue 16 item 1: a task's entry goes back to the table when the task ends, not when the agent thread gets
/// round to it; its figures go to its location's totals and to the ring of recently finished tasks.
#[test]
fn retire_frees_at_once_and_keeps_the_figures() {
    let t = TaskTable::new(16, false);
    let locations = LocationTable::new(4);
    let ring = FinishedRing::new(4, false);
    let loc = locations.intern(Location::caller());
    let a = t.insert(5, loc).unwrap();
    let e = t.get(a).unwrap();
    e.record_poll(2_000, false);
    e.record_poll(70_000, true);
    assert_eq!(t.finish(e, false), Finish::Retire);
    t.retire(a, &locations, &ring);
    assert_eq!(t.find(5), NONE, "freed at once");
    assert!(t.read(a as usize).is_none());
    let totals = locations.finished_totals();
    assert_eq!(totals.len(), 1);
    let (idx, f) = &totals[0];
    assert_eq!((*idx, f.finished, f.polls, f.busy_ns, f.max_poll_ns, f.slow_polls), (loc, 1, 2, 72_000, 70_000, 1));
    assert_eq!(f.poll_hist.iter().sum::<u64>(), 2);
    let mut cursor = RingCursor::default();
    let recent = ring.drain(&mut cursor);
    assert_eq!(recent.iter().map(|c| (c.id, c.polls, c.state)).collect::<Vec<_>>(), [(5, 2, FINISHED)]);
    assert!(ring.drain(&mut cursor).is_empty(), "each record once");
    // The entry is as new for the next task.
    let same_home = (6..).find(|&id| t.home(id) == t.home(5)).unwrap();
    assert_eq!(t.insert(same_home, loc), Some(a));
    let c = t.read(a as usize).unwrap();
    assert_eq!((c.polls, c.busy_ns, c.state, c.seen), (0, 0, LIVE, false));
}

/// A task that ends inside its last poll is retired by that poll's after-hook, which records the poll first.
#[test]
fn a_task_ending_in_its_poll_is_retired_after_it() {
    let t = TaskTable::new(16, false);
    let locations = LocationTable::new(4);
    let ring = FinishedRing::new(4, false);
    let a = t.insert(5, locations.intern(Location::caller())).unwrap();
    let e = t.get(a).unwrap();
    assert_eq!(t.finish(e, true), Finish::AfterPoll);
    assert!(!t.publish(a as usize, 5), "an ending task is not sent to clients");
    assert_eq!(t.finish(e, false), Finish::Nothing, "terminates once");
    e.record_poll(1_000, false);
    t.end_of_poll(a, e, &locations, &ring);
    assert_eq!(t.find(5), NONE);
    assert_eq!(locations.finished_totals()[0].1.polls, 1, "the last poll counts");
}

/// A task a client was sent must be reported finished to it: the hooks leave its entry to the agent thread.
#[test]
fn seen_tasks_wait_for_the_agent_thread() {
    let t = TaskTable::new(16, false);
    let locations = LocationTable::new(4);
    let ring = FinishedRing::new(4, false);
    let a = t.insert(5, 0).unwrap();
    assert!(t.publish(a as usize, 5));
    assert!(t.publish(a as usize, 5), "twice is fine");
    assert!(!t.publish(a as usize, 6), "not another task's entry");
    let e = t.get(a).unwrap();
    assert_eq!(t.finish(e, true), Finish::Queue);
    t.end_of_poll(a, e, &locations, &ring);
    let c = t.read(a as usize).unwrap();
    assert_eq!((c.id, c.state, c.seen), (5, FINISHED, true), "still there for the agent thread");
    assert!(locations.finished_totals().is_empty() && ring.drain(&mut RingCursor::default()).is_empty());
    t.free(a as usize);
    assert_eq!(t.find(5), NONE);
}

/// The ring keeps the newest records, oldest first, however many were written since the last drain.
#[test]
fn finished_ring_keeps_the_newest() {
    let ring = FinishedRing::new(3, false);
    let mut cursor = RingCursor::default();
    let push = |id| ring.push(&TaskCounts { id, polls: id * 10, ..TaskCounts::default() });
    for id in 1..=10 {
        push(id);
    }
    // Four records (3 rounded up to a power of two).
    assert_eq!(ring.drain(&mut cursor).iter().map(|c| c.id).collect::<Vec<_>>(), [7, 8, 9, 10]);
    push(11);
    let recent = ring.drain(&mut cursor);
    assert_eq!(recent.iter().map(|c| (c.id, c.polls)).collect::<Vec<_>>(), [(11, 110)]);
    assert_eq!(ring.skipped.load(Relaxed), 0);
    let none = FinishedRing::new(0, false);
    none.push(&TaskCounts::default());
    assert!(none.drain(&mut RingCursor::default()).is_empty());
}

/// Issue 14 item 5: stalls of 50 ms and 300 ms land in buckets of their own (both fell into `≥16.8ms`), and
/// the narrow counters of the slow buckets saturate rather than wrap.
#[test]
fn slow_polls_have_buckets_up_to_a_second() {
    let t = TaskTable::new(16, false);
    let a = t.insert(5, 0).unwrap();
    let e = t.get(a).unwrap();
    for ns in [20_000, 50_000_000, 300_000_000, 2_000_000_000] {
        e.record_poll(ns, true);
    }
    let h = t.read(a as usize).unwrap().poll_hist;
    let at = |ns| LogHistogram::bucket_index(ns, TASK_BUCKETS);
    assert_eq!((at(50_000_000), at(300_000_000), at(2_000_000_000)), (16, 19, TASK_BUCKETS - 1));
    assert_eq!((h[at(20_000)], h[16], h[19], h[TASK_BUCKETS - 1]), (1, 1, 1, 1));
    assert_eq!(h.iter().sum::<u32>(), 4);
    for _ in 0..70_000 {
        e.record_poll(40_000_000, false);
    }
    assert_eq!(t.read(a as usize).unwrap().poll_hist[16], u32::from(u16::MAX), "saturated, not wrapped");
    assert_eq!(t.read(a as usize).unwrap().polls, 70_004, "the poll count stays exact");
}

/// A full scan reads only the pages spawns have written: reading a page first maps the kernel's zero page,
/// and replacing it at the next spawn's write costs a TLB flush on every CPU (see `insert`).
#[test]
fn scans_read_only_pages_that_spawns_wrote() {
    let t = TaskTable::new(1 << 16, true);
    assert_eq!(t.indexes().count(), 0, "an empty table is not scanned at all");
    let a = t.insert(1, 0).unwrap() as usize;
    let pages: Vec<usize> = t.indexes().map(|i| i / ENTRIES_PER_PAGE).collect();
    assert_eq!(pages.len(), ENTRIES_PER_PAGE, "one page of entries");
    assert!(pages.iter().all(|&p| p == a / ENTRIES_PER_PAGE));
    assert!(t.indexes().any(|i| i == a));
    // Every inserted task is found by a scan, however many pages they spread over.
    let ids: Vec<u64> = (2..2_000).collect();
    let idx: Vec<usize> = ids.iter().map(|&id| t.insert(id, 0).unwrap() as usize).collect();
    let scanned: std::collections::HashSet<usize> = t.indexes().collect();
    assert!(idx.iter().all(|i| scanned.contains(i)));
    for (&id, &i) in ids.iter().zip(&idx) {
        assert_eq!(t.find(id) as usize, i);
        assert_eq!(t.read(i).map(|c| c.id), Some(id));
    }
}

#[test]
fn full_window_is_counted_not_lost() {
    let t = TaskTable::new(8, false);
    assert_eq!(t.capacity(), 16, "the smallest table: two halves of 8");
    let tracked: Vec<(u64, u32)> = (1..=100).filter_map(|id| Some((id, t.insert(id, 0)?))).collect();
    assert_eq!(tracked.len(), 16, "every entry is used before a task goes untracked");
    assert_eq!(t.untracked.load(Relaxed), 84);
    assert_eq!(t.spawned.load(Relaxed), 100);
    for (id, idx) in tracked {
        assert_eq!(t.find(id), idx, "task {id}");
    }
}

/// Issue 16: a storm's consecutive ids take consecutive entries (so it streams through memory), and a task
/// whose slot is taken by a live task of an earlier block goes to the other half, not untracked.
#[test]
fn consecutive_ids_take_consecutive_entries() {
    let t = TaskTable::new(1 << 16, false);
    let idx: Vec<u32> = (64..128).map(|id| t.insert(id, 0).unwrap()).collect();
    assert!(idx.windows(2).all(|w| w[1] == w[0] + 1), "one block, one run of entries: {idx:?}");
    assert!((idx[0] as usize) < t.capacity() / 2);
    // The first later id with the same slot, while task 64 is alive, goes to the second half.
    let same_home = (128..).find(|&id| t.home(id) == t.home(64)).unwrap();
    let b = t.insert(same_home, 0).unwrap();
    assert!(b as usize >= t.capacity() / 2);
    assert_eq!((t.find(64), t.find(same_home)), (idx[0], b));
}

/// Issue 11 #8: a block of long-lived tasks (say, connections accepted at startup) must not leave later
/// tasks without an entry. With `id & mask` as the home slot, 30k consecutive ids filled a contiguous run
/// of the default table for good, and about half of all later tasks found their probe window full.
#[test]
fn long_lived_block_leaves_room_for_later_tasks() {
    let t = TaskTable::new(crate::config::Config::default().max_tasks, false);
    let mut id = 1;
    for _ in 0..30_000 {
        assert!(t.insert(id, 0).is_some(), "task {id} of the long-lived block");
        id += 1;
    }
    // A million short-lived tasks after them, a few alive at a time, each freed once it finishes.
    let mut live = std::collections::VecDeque::new();
    for _ in 0..1_000_000 {
        if let Some(idx) = t.insert(id, 0) {
            live.push_back(idx);
        }
        id += 1;
        if live.len() > 64
            && let Some(idx) = live.pop_front()
            && let Some(e) = t.get(idx)
        {
            e.state.store(FINISHED, Release);
            t.free(idx as usize);
        }
    }
    assert_eq!(t.untracked.load(Relaxed), 0, "later tasks left untracked");
    // And lookups stay one probe in the common case: most live tasks sit in their first-half slot.
    let mut at_home = 0;
    for i in t.indexes() {
        if let Some(c) = t.read(i) {
            at_home += usize::from(t.home(c.id) == i as u64);
        }
    }
    assert!(at_home * 10 >= 30_000 * 9, "only {at_home} of ~30k live tasks in their home slot");
}

#[test]
fn terminations_without_an_entry_count_only_against_untracked_spawns() {
    let t = TaskTable::new(8, false);
    for id in 1..=16 {
        assert!(t.insert(id, 0).is_some());
    }
    assert!(t.insert(17, 0).is_none(), "table full: task 17 is untracked");
    // Task 17 and two tasks the spawn hook never saw (spawn_blocking) terminate without an entry.
    for _ in 0..3 {
        t.count_termination(false, 0);
    }
    assert_eq!(t.spawn_counts(), (17, 1));
    for _ in 1..=16 {
        t.count_termination(true, 1);
    }
    assert_eq!(t.spawn_counts(), (17, 17));
}

#[test]
fn finished_queue_is_bounded_and_fifo() {
    let q = FinishedQueue::new(100);
    for i in 0..100 {
        assert_eq!(q.push(i), Ok(()));
    }
    assert_eq!(q.push(100), Err(100), "full: the sweep finds it instead");
    assert_eq!(q.pop(), Some(0));
    assert_eq!(q.push(100), Ok(()));
    let drained: Vec<u32> = std::iter::from_fn(|| q.pop()).collect();
    assert_eq!(drained, (1..=100).collect::<Vec<_>>());
}

#[test]
fn locations_intern_once() {
    let t = LocationTable::new(4);
    let l1 = Location::caller();
    let l2 = Location::caller();
    let a = t.intern(l1);
    assert_eq!(t.intern(l1), a);
    let b = t.intern(l2);
    assert_ne!(a, b);
    assert_eq!(t.get(a).map(|l| l.line()), Some(l1.line()));
    assert_eq!(t.find(l1 as *const _ as usize), a);
    assert_eq!(t.find(0x1000), NONE);
}
