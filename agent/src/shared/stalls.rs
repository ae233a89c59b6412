//! The recent-stalls store behind [`Agent::stalls`](crate::Agent::stalls) and the full state's stall log.
//!
//! A stall's latest event holds up to four samples of a 64-frame stack, each frame with a long generic
//! function name and a file path: about 50 KB as plain `String`s, so 256 stalls took about 13 MB. Yet the
//! samples of one stall nearly always show the same stack, and an app's stalls come from a few places. So
//! the store keeps each distinct frame (name, file, line, origin) once, behind an `Arc`, and each distinct
//! stack once, as a slice of `(ip, frame)` pairs; a stored stall points at its stacks. Events are rebuilt,
//! with their full frames, only when someone reads them (a client connecting, `Agent::stalls`): rare, and
//! never on the hot path. Only the agent thread writes the store.

use loopscope_wire::{Frame, FrameOrigin, StallEvent, StallSummary};
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

/// What a frame says apart from its address: shared by every frame of every stored stack that says it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Symbol {
    function: Option<Box<str>>,
    file: Option<Box<str>>,
    line: Option<u32>,
    origin: FrameOrigin,
}

/// A stack as stored: each frame's address and its shared symbol.
type Stack = Arc<[(u64, Arc<Symbol>)]>;

/// One stall: its latest event without the frames (each sample's `frames` is empty), and each sample's stack.
#[derive(Debug)]
struct Stored {
    event: StallEvent,
    ended: bool,
    stacks: Vec<Option<Stack>>,
}

/// The newest `capacity` stalls, oldest first. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct StallStore {
    capacity: usize,
    stalls: VecDeque<Stored>,
    symbols: HashSet<Arc<Symbol>>,
    stacks: HashSet<Stack>,
    /// Stalls replaced or evicted since the sets were last swept of what no stall uses any more.
    released: usize,
}

impl StallStore {
    pub(crate) fn new(capacity: usize) -> StallStore {
        StallStore { capacity, stalls: VecDeque::new(), symbols: HashSet::new(), stacks: HashSet::new(), released: 0 }
    }

    /// Records `ev` as the latest state of its stall (replacing an earlier event of the same stall), evicting
    /// the oldest stall when full.
    pub(crate) fn remember(&mut self, ev: &StallEvent, ended: bool) {
        let stored = self.compact(ev, ended);
        if let Some(s) = self.stalls.iter_mut().rev().find(|s| s.event.stall_id == ev.stall_id) {
            *s = stored;
            self.released += 1;
        } else {
            if self.stalls.len() >= self.capacity {
                self.stalls.pop_front();
                self.released += 1;
            }
            self.stalls.push_back(stored);
        }
        self.sweep_if_due();
    }

    /// Stalls kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.stalls.len()
    }

    /// Every stall, oldest first, with its frames.
    pub(crate) fn summaries(&self) -> Vec<StallSummary> {
        self.stalls.iter().map(|s| StallSummary { last: expand(s), ended: s.ended }).collect()
    }

    /// The latest events, newest first, rebuilt one at a time (a caller that stops early builds no more).
    pub(crate) fn events_newest_first(&self) -> impl Iterator<Item = StallEvent> + '_ {
        self.stalls.iter().rev().map(expand)
    }

    /// Heap bytes the store holds, counting each shared stack and symbol once: what `Agent::stalls` costs
    /// in memory (the figure BENCHMARKS.md quotes, and what the tests bound).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let s = |x: &Option<String>| x.as_ref().map_or(0, String::capacity);
        let b = |x: &Option<Box<str>>| x.as_ref().map_or(0, |x| x.len());
        let mut n = self.stalls.capacity() * size_of::<Stored>();
        for st in &self.stalls {
            let ev = &st.event;
            n += s(&ev.thread.name) + s(&ev.agent_task) + ev.location.as_ref().map_or(0, |l| l.file.capacity());
            n += st.stacks.capacity() * size_of::<Option<Stack>>();
            if let Some(c) = &ev.culprit {
                n += size_of::<loopscope_wire::Culprit>() + c.reason.capacity();
                n += c.samples.capacity() * size_of::<loopscope_wire::CulpritSample>();
                n += c.samples.iter().map(|x| s(&x.stack_error) + s(&x.syscall) + s(&x.fd_target)).sum::<usize>();
            }
        }
        // Each interned stack and symbol once (an `Arc`'s two counters, then the value), plus the sets' slots.
        n += self.stacks.iter().map(|st| 16 + st.len() * size_of::<(u64, Arc<Symbol>)>()).sum::<usize>();
        n += self.symbols.iter().map(|y| 16 + size_of::<Symbol>() + b(&y.function) + b(&y.file)).sum::<usize>();
        n + (self.stacks.capacity() + self.symbols.capacity()) * size_of::<usize>() * 2
    }

    fn compact(&mut self, ev: &StallEvent, ended: bool) -> Stored {
        let mut event = ev.clone();
        let mut stacks = Vec::new();
        if let Some(c) = &mut event.culprit {
            for sample in &mut c.samples {
                let frames = std::mem::take(&mut sample.frames);
                stacks.push((!frames.is_empty()).then(|| self.intern_stack(frames)));
            }
        }
        Stored { event, ended, stacks }
    }

    fn intern_stack(&mut self, frames: Vec<Frame>) -> Stack {
        let stack: Stack = frames
            .into_iter()
            .map(|f| {
                let symbol = Symbol {
                    function: f.function.map(String::into_boxed_str),
                    file: f.file.map(String::into_boxed_str),
                    line: f.line,
                    origin: f.origin,
                };
                (f.ip, intern(&mut self.symbols, symbol))
            })
            .collect();
        match self.stacks.get(&stack) {
            Some(s) => s.clone(),
            None => {
                self.stacks.insert(stack.clone());
                stack
            }
        }
    }

    /// Drops interned stacks and symbols that no stored stall uses any more (their only owner is the set),
    /// once an eighth of the store has been replaced: a sweep walks every entry, so sweeping that seldom
    /// costs a few hundred steps per stall, and what departed stalls leave behind stays under an eighth.
    fn sweep_if_due(&mut self) {
        if self.released < (self.capacity / 8).max(1) {
            return;
        }
        self.released = 0;
        // Stacks first: they hold the symbols.
        self.stacks.retain(|s| Arc::strong_count(s) > 1);
        self.symbols.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// The shared copy of `value`, adding it when new.
fn intern<T: Eq + Hash>(set: &mut HashSet<Arc<T>>, value: T) -> Arc<T> {
    match set.get(&value) {
        Some(v) => v.clone(),
        None => {
            let v = Arc::new(value);
            set.insert(v.clone());
            v
        }
    }
}

/// The stored stall's event with its frames back.
fn expand(s: &Stored) -> StallEvent {
    let mut ev = s.event.clone();
    if let Some(c) = &mut ev.culprit {
        for (sample, stack) in c.samples.iter_mut().zip(&s.stacks) {
            if let Some(stack) = stack {
                sample.frames = stack
                    .iter()
                    .map(|(ip, y)| Frame {
                        ip: *ip,
                        function: y.function.as_deref().map(str::to_string),
                        file: y.file.as_deref().map(str::to_string),
                        line: y.line,
                        origin: y.origin,
                        inlined: false,
                        object: None,
                    })
                    .collect();
            }
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_wire::example_stall;

    /// BENCHMARKS.md's store figure: every stall of a recording (`LOOPSCOPE_STORE_RECORDING=FILE.lsrec`), as the
    /// client state rebuilds it, kept in a store; prints the store's heap bytes per stall.
    #[test]
    #[ignore = "a measurement: needs LOOPSCOPE_STORE_RECORDING"]
    fn measure_the_store_on_a_recording() {
        let path = std::env::var("LOOPSCOPE_STORE_RECORDING").expect("LOOPSCOPE_STORE_RECORDING=FILE.lsrec");
        let mut state = loopscope_wire::state::State::new();
        let mut store = StallStore::new(crate::shared::RECENT_STALLS);
        for rec in loopscope_wire::record::RecordingReader::open(&path).expect("a recording") {
            let msg = rec.expect("a good record").message;
            state.apply(&msg);
            let id = match &msg {
                loopscope_wire::proto::ServerMessage::Stall(ev) => ev.stall_id,
                loopscope_wire::proto::ServerMessage::StallPart(p) => p.event.stall_id,
                _ => continue,
            };
            let entry = state.stalls().find(|e| e.latest.stall_id == id).expect("the stall");
            store.remember(&entry.latest, entry.ended);
        }
        let n = store.len().max(1);
        let plain: usize = store.summaries().iter().map(|s| plain_bytes(&s.last)).sum();
        println!(
            "{} stalls: store {} B ({} B per stall); as plain events {} B ({} B per stall)",
            store.len(),
            store.heap_bytes(),
            store.heap_bytes() / n,
            plain,
            plain / n
        );
    }

    /// Heap bytes of an event kept as it is (the store before issue 12).
    fn plain_bytes(ev: &StallEvent) -> usize {
        use std::mem::size_of;
        let s = |x: &Option<String>| x.as_ref().map_or(0, String::capacity);
        let mut n = size_of::<loopscope_wire::StallSummary>() + s(&ev.thread.name) + s(&ev.agent_task);
        n += ev.location.as_ref().map_or(0, |l| l.file.capacity());
        if let Some(c) = &ev.culprit {
            n += size_of::<loopscope_wire::Culprit>() + c.reason.capacity();
            n += c.samples.capacity() * size_of::<loopscope_wire::CulpritSample>();
            for smp in &c.samples {
                n += smp.frames.capacity() * size_of::<Frame>() + s(&smp.stack_error) + s(&smp.syscall);
                n += s(&smp.fd_target) + smp.frames.iter().map(|f| s(&f.function) + s(&f.file)).sum::<usize>();
            }
        }
        n
    }

    #[test]
    fn events_come_back_as_they_went_in() {
        let mut store = StallStore::new(4);
        let mut moved = example_stall(7, 60, 3);
        // A stack that moved between samples, and a sample without one, must survive as they were.
        let c = moved.culprit.as_mut().unwrap();
        c.samples[1].frames.truncate(20);
        c.samples[2].frames.clear();
        c.samples[2].stack_error = Some("timed out".into());
        store.remember(&example_stall(1, 60, 4), false);
        store.remember(&moved, true);
        let got = store.summaries();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].last, example_stall(1, 60, 4));
        assert!(!got[0].ended);
        assert_eq!(got[1].last, moved);
        assert!(got[1].ended);
        let ids: Vec<u64> = store.events_newest_first().map(|e| e.stall_id).collect();
        assert_eq!(ids, [7, 1]);
    }

    #[test]
    fn a_later_event_replaces_its_stall_and_the_oldest_stall_goes_first() {
        let mut store = StallStore::new(3);
        for id in 0..5 {
            store.remember(&example_stall(id, 10, 1), false);
        }
        let mut ended = example_stall(3, 10, 2);
        ended.elapsed *= 2;
        store.remember(&ended, true);
        let got = store.summaries();
        let ids: Vec<u64> = got.iter().map(|s| s.last.stall_id).collect();
        assert_eq!(ids, [2, 3, 4]);
        assert_eq!(got[1].last, ended);
        assert!(got[1].ended);
    }

    /// The goal of issue 12: at most 2 MB for the store at its default size, with stalls as deep as real
    /// ones (four samples of 64 frames of long generic names). As plain events they took about 13 MB.
    #[test]
    fn a_full_store_of_deep_stalls_stays_under_two_megabytes() {
        let mut store = StallStore::new(crate::shared::RECENT_STALLS);
        for id in 0..1000 {
            store.remember(&example_stall(id, 64, 4), id % 3 == 0);
        }
        assert_eq!(store.len(), crate::shared::RECENT_STALLS);
        let bytes = store.heap_bytes();
        let plain: usize = store.summaries().iter().map(|s| plain_bytes(&s.last)).sum();
        println!("{} deep stalls: {bytes} B in the store, {plain} B as plain events", store.len());
        assert!(bytes < 2 << 20, "{bytes} bytes for {} stalls", store.len());
        // The worst case: every stall its own stack, with 64 function names of its own (nothing shared
        // across stalls). The names themselves are most of it (5.9 MB; 19.8 MB as plain events), and the
        // sweep keeps what evicted stalls left behind to an eighth.
        let mut store = StallStore::new(crate::shared::RECENT_STALLS);
        for id in 0..1000u64 {
            let mut ev = example_stall(id, 64, 4);
            for s in &mut ev.culprit.as_mut().unwrap().samples {
                for f in &mut s.frames {
                    f.ip += id << 20;
                    f.function = f.function.take().map(|n| format!("{n}{id}"));
                }
            }
            store.remember(&ev, true);
        }
        let bytes = store.heap_bytes();
        println!("{} distinct deep stalls: {bytes} B in the store", store.len());
        assert!(bytes < 7 << 20, "{bytes} bytes for {} distinct stalls", store.len());
        assert!(store.stacks.len() <= crate::shared::RECENT_STALLS * 9 / 8 + 1, "{} stacks kept", store.stacks.len());
    }
}
