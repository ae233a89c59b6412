//! The client-side picture of a runtime, kept up to date from the live stream (or a recording).
//!
//! [`State`] is plain data: feed it every [`ServerMessage`] with [`State::apply`] and read it back with its
//! accessors. It does no rendering and no I/O, so the dashboard, the CI checker and tests share it.
//!
//! * **Bounded.** Every collection has a limit ([`StateLimits`]); whatever a misbehaving stream sends, the
//!   state stays within them and counts what it dropped ([`State::state_dropped`]).
//! * **O(changed).** Applying a [`Tick`] costs time proportional to what the tick carries (changed tasks,
//!   workers), not to the number of live tasks.
//! * **Histories.** Per-worker and global series keep the last [`StateLimits::history`] samples, for
//!   sparklines. Rates come from consecutive cumulative samples through the pure functions in [`rates`].
//!
//! # Examples
//!
//! ```
//! use loopscope_wire::proto::{FullState, ServerMessage, TaskSample, Tick, full_state_messages};
//! use loopscope_wire::state::State;
//!
//! let mut state = State::new();
//! for msg in full_state_messages(FullState::default(), vec![TaskSample::new(1, 0), TaskSample::new(2, 0)]) {
//!     state.apply(&msg);
//! }
//! assert!(state.is_ready());
//! assert_eq!(state.tasks().len(), 2);
//!
//! // A tick: task 2 finished.
//! let tick = Tick { seq: 1, uptime_nanos: 250_000_000, finished: vec![2], ..Tick::default() };
//! state.apply(&ServerMessage::Tick(Box::new(tick)));
//! assert_eq!(state.tasks().len(), 1);
//! assert_eq!(state.finished_tasks().next().map(|t| t.id), Some(2));
//! ```

use crate::proto::{
    FullState, GlobalSample, LocationInfo, LocationSample, ServerHello, ServerMessage, TaskSample, Tick, WaitTimes,
    WorkerSample,
};
use crate::{Dropped, Location, LogHistogram, ProbeStatus, RuntimeInfo, StallEvent, StallPhase, TaskState, Totals};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// Pure functions turning two cumulative samples into rates.
///
/// Counters that went backwards (a different agent, or a reset) give 0 rather than huge numbers, and a zero
/// interval gives 0.
///
/// ```
/// use loopscope_wire::state::rates;
/// use std::time::Duration;
/// assert_eq!(rates::per_second(1_000, 3_000, Duration::from_millis(500)), 4_000.0);
/// assert_eq!(rates::per_second(3_000, 1_000, Duration::from_secs(1)), 0.0);
/// assert_eq!(rates::busy_ratio(0, 125_000_000, Duration::from_millis(250)), 0.5);
/// assert_eq!(rates::per_minute(10, 13, Duration::from_secs(30)), 6.0);
/// ```
pub mod rates;

mod entries;
mod history;
mod limits;
#[cfg(test)]
mod tests;

pub use entries::{LocationEntry, StallEntry, StreamFacts, WorkerView};
pub use history::History;
pub use limits::{StateDropped, StateLimits};

/// Everything a client knows about one runtime. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct State {
    limits: StateLimits,
    hello: Option<ServerHello>,
    probes: Vec<ProbeStatus>,
    locations: HashMap<u32, LocationEntry>,
    tasks: HashMap<u64, TaskSample>,
    /// Newest first.
    finished: VecDeque<TaskSample>,
    workers: BTreeMap<u32, WorkerView>,
    global: GlobalSample,
    global_queue: History<u64>,
    blocking_queue: History<u64>,
    alive_tasks: History<u64>,
    polls_per_second: History<f64>,
    waits: WaitTimes,
    poll_histogram: LogHistogram,
    /// Durations of the stalls that ended, as their events arrived (see [`State::stall_histogram`]).
    stall_histogram: LogHistogram,
    totals: Totals,
    dropped: Dropped,
    /// Newest first.
    stalls: VecDeque<StallEntry>,
    /// (uptime, stall count), for stalls per minute over the last minute.
    stall_counts: VecDeque<(u64, u64)>,
    uptime_nanos: u64,
    at_unix_nanos: u64,
    /// Ticks older than this are already included in the latest full state.
    baseline_uptime: Option<u64>,
    full_pending: u64,
    full_seen: bool,
    state_dropped: StateDropped,
    stream: StreamFacts,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// Buckets of the stall-duration histogram: the last starts at 2^36 ns (about 69 s), so stalls of many seconds
/// have buckets of their own (the agent's per-task poll histograms end at about 1.07 s; before issue 14 item 5
/// they ended at 16.8 ms, and recordings from then still do).
const STALL_BUCKETS: usize = 28;

/// How long the stall-rate window is.
const STALL_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Samples kept for the stall rate: a minute at 100 ms ticks.
const STALL_RATE_SAMPLES: usize = 600;

impl State {
    /// An empty state with the default [`StateLimits`].
    pub fn new() -> Self {
        State::with_limits(StateLimits::default())
    }

    /// An empty state with custom limits.
    pub fn with_limits(limits: StateLimits) -> Self {
        let h = limits.history;
        State {
            hello: None,
            probes: Vec::new(),
            locations: HashMap::new(),
            tasks: HashMap::new(),
            finished: VecDeque::new(),
            workers: BTreeMap::new(),
            global: GlobalSample::default(),
            global_queue: History::new(h),
            blocking_queue: History::new(h),
            alive_tasks: History::new(h),
            polls_per_second: History::new(h),
            waits: WaitTimes::default(),
            poll_histogram: LogHistogram::default(),
            stall_histogram: LogHistogram::new(STALL_BUCKETS),
            totals: Totals::default(),
            dropped: Dropped::default(),
            stalls: VecDeque::new(),
            stall_counts: VecDeque::new(),
            uptime_nanos: 0,
            at_unix_nanos: 0,
            baseline_uptime: None,
            full_pending: 0,
            full_seen: false,
            state_dropped: StateDropped::default(),
            stream: StreamFacts::default(),
            limits,
        }
    }

    /// Applies one message from the stream.
    pub fn apply(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::Hello(h) => self.apply_hello(h),
            ServerMessage::Refused(r) => self.stream.refused = Some(r.reason.clone()),
            ServerMessage::Full(f) => self.apply_full(f),
            ServerMessage::FullTasks(chunk) => {
                self.full_pending = self.full_pending.saturating_sub(chunk.tasks.len() as u64);
                for t in &chunk.tasks {
                    self.upsert_task(t);
                }
            }
            ServerMessage::Tick(t) => self.apply_tick(t),
            ServerMessage::Stall(ev) => self.apply_stall(ev),
            ServerMessage::StallPart(part) => {
                // The base is the stall's previous event as this client holds it (see `StallPart`).
                let previous = self.stalls.iter().find(|e| e.latest.stall_id == part.event.stall_id);
                let ev = part.apply(previous.map(|e| &e.latest));
                self.apply_stall(&ev);
            }
            ServerMessage::Pong(p) => self.stream.last_pong = Some(p.nonce),
            ServerMessage::Goodbye(g) => self.stream.goodbye = Some(g.reason.clone()),
            ServerMessage::ReservedEnvelope => {}
        }
    }

    /// Applies the agent's greeting (the client receives it during the handshake, see
    /// [`Client::hello`](crate::client::Client::hello)). A greeting from a different agent (another process
    /// or runtime, or the app restarted) clears everything; the same agent again (a reconnect) keeps the
    /// histories and the stall log.
    pub fn apply_hello(&mut self, hello: &ServerHello) {
        let same = self.hello.as_ref().is_some_and(|h| {
            h.pid == hello.pid
                && h.runtime.id == hello.runtime.id
                && h.started_at_unix_nanos == hello.started_at_unix_nanos
        });
        if !same {
            *self = State::with_limits(self.limits.clone());
        }
        self.stream.goodbye = None;
        self.stream.refused = None;
        self.hello = Some(hello.clone());
    }

    fn apply_full(&mut self, f: &FullState) {
        self.stream.fulls += 1;
        self.full_seen = true;
        self.full_pending = f.task_count;
        self.baseline_uptime = Some(f.uptime_nanos);
        self.uptime_nanos = f.uptime_nanos;
        self.at_unix_nanos = f.at_unix_nanos;
        self.stream.last_tick_seq = Some(f.tick_seq);
        self.stream.client_dropped_frames = f.client_dropped_frames;

        self.probes = f.probes.iter().take(self.limits.max_probes).cloned().collect();
        self.state_dropped.probes += f.probes.len().saturating_sub(self.limits.max_probes) as u64;
        self.locations.clear();
        self.add_locations(&f.locations);
        self.update_location_stats(&f.location_stats);
        // Tasks arrive in the FullTasks frames that follow.
        self.tasks.clear();
        self.finished.clear();
        // Keep the histories of workers that still exist; their rates restart from this sample.
        let mut workers = std::mem::take(&mut self.workers);
        for w in f.workers.iter() {
            if self.workers.len() >= self.limits.max_workers {
                self.state_dropped.workers += 1;
                continue;
            }
            let mut view = workers.remove(&w.index).unwrap_or_else(|| self.new_worker(w));
            view.sample = w.clone();
            view.uptime_nanos = f.uptime_nanos;
            self.workers.insert(w.index, view);
        }
        self.global = f.global.clone();
        self.waits = f.waits.clone();
        self.poll_histogram = f.poll_histogram.clone();
        self.totals = f.totals.clone();
        self.dropped = f.dropped.clone();
        self.record_stall_count();
        for ev in &f.recent_stalls {
            self.merge_stall(ev);
        }
    }

    fn new_worker(&self, w: &WorkerSample) -> WorkerView {
        let h = self.limits.history;
        WorkerView {
            sample: w.clone(),
            uptime_nanos: 0,
            local_queue: History::new(h),
            busy_ratio: History::new(h),
            polls_per_second: History::new(h),
            steals_per_second: History::new(h),
        }
    }

    fn apply_tick(&mut self, t: &Tick) {
        if self.baseline_uptime.is_some_and(|b| t.uptime_nanos < b) {
            self.stream.stale_ticks += 1;
            return;
        }
        if let Some(prev) = self.stream.last_tick_seq
            && t.seq > prev
        {
            self.stream.missed_ticks += t.seq - prev - 1;
        }
        let had_sample = self.full_seen || self.stream.ticks > 0;
        self.stream.last_tick_seq = Some(t.seq);
        self.stream.ticks += 1;
        self.stream.client_dropped_frames = t.client_dropped_frames;
        let prev_uptime = self.uptime_nanos;
        let interval = Duration::from_nanos(t.uptime_nanos.saturating_sub(prev_uptime));
        let prev_totals = std::mem::replace(&mut self.totals, t.totals.clone());
        self.uptime_nanos = t.uptime_nanos;
        self.at_unix_nanos = t.at_unix_nanos;

        self.add_locations(&t.new_locations);
        self.update_location_stats(&t.locations);
        for task in &t.tasks {
            self.upsert_task(task);
        }
        for id in &t.finished {
            if let Some(mut task) = self.tasks.remove(id) {
                task.state = TaskState::Finished;
                self.push_finished(task);
            }
        }

        for w in &t.workers {
            let Some((view, fresh)) = self.worker_entry(w) else { continue };
            // A worker seen for the first time has no earlier sample to compute rates from.
            if !fresh {
                let interval = Duration::from_nanos(t.uptime_nanos.saturating_sub(view.uptime_nanos));
                view.busy_ratio.push(rates::worker_busy_ratio(&view.sample, w, interval));
                view.polls_per_second.push(rates::worker_polls_per_second(&view.sample, w, interval));
                view.steals_per_second.push(rates::per_second(view.sample.steal_count, w.steal_count, interval));
            }
            view.local_queue.push(w.local_queue_depth);
            view.sample = w.clone();
            view.uptime_nanos = t.uptime_nanos;
        }

        self.global = t.global.clone();
        self.global_queue.push(t.global.global_queue_depth);
        self.blocking_queue.push(t.global.blocking_queue_depth);
        self.alive_tasks.push(t.global.alive_tasks);
        if had_sample {
            self.polls_per_second.push(rates::polls_per_second(&prev_totals, &t.totals, interval));
        }
        self.waits = t.waits.clone();
        self.poll_histogram = t.poll_histogram.clone();
        self.dropped = t.dropped.clone();
        self.record_stall_count();
    }

    /// The view of worker `w.index`, created if there is room; `true` when it was just created.
    fn worker_entry(&mut self, w: &WorkerSample) -> Option<(&mut WorkerView, bool)> {
        let mut fresh = false;
        if !self.workers.contains_key(&w.index) {
            if self.workers.len() >= self.limits.max_workers {
                self.state_dropped.workers += 1;
                return None;
            }
            let view = self.new_worker(w);
            self.workers.insert(w.index, view);
            fresh = true;
        }
        self.workers.get_mut(&w.index).map(|v| (v, fresh))
    }

    fn add_locations(&mut self, infos: &[LocationInfo]) {
        for l in infos {
            let full = self.locations.len() >= self.limits.max_locations;
            match self.locations.get_mut(&l.id) {
                Some(e) => e.location = l.location.clone(),
                None if full => self.state_dropped.locations += 1,
                None => {
                    self.locations.insert(l.id, LocationEntry { id: l.id, location: l.location.clone(), stats: None });
                }
            }
        }
    }

    fn update_location_stats(&mut self, samples: &[LocationSample]) {
        for s in samples {
            let full = self.locations.len() >= self.limits.max_locations;
            match self.locations.get_mut(&s.id) {
                Some(e) => e.stats = Some(s.clone()),
                // Stats for a location we never heard of (dropped for room, or a stream that skipped it): keep
                // them under a placeholder name rather than lose the counts, if there is room.
                None if full => self.state_dropped.locations += 1,
                None => {
                    self.locations.insert(
                        s.id,
                        LocationEntry { id: s.id, location: Location::new("<unknown>", 0, 0), stats: Some(s.clone()) },
                    );
                }
            }
        }
    }

    fn upsert_task(&mut self, t: &TaskSample) {
        if t.state == TaskState::Finished {
            self.tasks.remove(&t.id);
            // A finished task may be reported twice (final sample, then again in a later full state).
            if let Some(pos) = self.finished.iter().take(8).position(|f| f.id == t.id) {
                self.finished.remove(pos);
            }
            self.push_finished(t.clone());
            return;
        }
        let full = self.tasks.len() >= self.limits.max_tasks;
        match self.tasks.get_mut(&t.id) {
            Some(e) => e.clone_from(t),
            None if full => self.state_dropped.tasks += 1,
            None => {
                self.tasks.insert(t.id, t.clone());
            }
        }
    }

    fn push_finished(&mut self, t: TaskSample) {
        if self.limits.max_finished == 0 {
            return;
        }
        if self.finished.len() >= self.limits.max_finished {
            self.finished.pop_back();
        }
        self.finished.push_front(t);
    }

    fn apply_stall(&mut self, ev: &StallEvent) {
        self.stream.stall_events += 1;
        self.merge_stall(ev);
    }

    fn merge_stall(&mut self, ev: &StallEvent) {
        // The log is short (max_stalls), and stall events are rare: a linear search is cheaper than an index.
        if let Some(e) = self.stalls.iter_mut().find(|e| e.latest.stall_id == ev.stall_id) {
            // A full state's copy of a stall we already follow may be older than what we have.
            let newer = ev.phase == StallPhase::Ended || ev.elapsed >= e.latest.elapsed;
            if newer && !(e.ended && ev.phase != StallPhase::Ended) {
                if !e.ended && ev.phase == StallPhase::Ended {
                    self.stall_histogram.record(ev.elapsed);
                }
                e.latest = ev.clone();
                e.ended |= ev.phase == StallPhase::Ended;
            }
            if ev.culprit.is_some() {
                e.culprit.clone_from(&ev.culprit);
            }
            e.events = e.events.saturating_add(1);
            return;
        }
        if ev.phase == StallPhase::Ended {
            self.stall_histogram.record(ev.elapsed);
        }
        if self.limits.max_stalls == 0 {
            return;
        }
        if self.stalls.len() >= self.limits.max_stalls {
            self.stalls.pop_back();
            self.state_dropped.stalls_evicted += 1;
        }
        self.stalls.push_front(StallEntry {
            latest: ev.clone(),
            first_at_unix_nanos: ev.at_unix_nanos,
            ended: ev.phase == StallPhase::Ended,
            events: 1,
            culprit: ev.culprit.clone(),
        });
    }

    fn record_stall_count(&mut self) {
        if self.stall_counts.back().is_some_and(|&(u, _)| u >= self.uptime_nanos) {
            self.stall_counts.pop_back();
        }
        if self.stall_counts.len() >= STALL_RATE_SAMPLES {
            self.stall_counts.pop_front();
        }
        self.stall_counts.push_back((self.uptime_nanos, self.totals.stall_count));
    }

    // ---- accessors ----

    /// The agent's greeting, once received.
    pub fn hello(&self) -> Option<&ServerHello> {
        self.hello.as_ref()
    }

    /// The runtime the stream describes, once the greeting arrived.
    pub fn runtime(&self) -> Option<&RuntimeInfo> {
        self.hello.as_ref().map(|h| &h.runtime)
    }

    /// Whether a full state and all of its tasks have arrived, so the picture is complete.
    pub fn is_ready(&self) -> bool {
        self.full_seen && self.full_pending == 0
    }

    /// The OS probes' statuses.
    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
    }

    /// A location by its id.
    pub fn location(&self, id: u32) -> Option<&LocationEntry> {
        self.locations.get(&id)
    }

    /// Every location, in no particular order.
    pub fn locations(&self) -> impl Iterator<Item = &LocationEntry> {
        self.locations.values()
    }

    /// The number of locations known.
    pub fn location_count(&self) -> usize {
        self.locations.len()
    }

    /// Live tasks by id.
    pub fn tasks(&self) -> &HashMap<u64, TaskSample> {
        &self.tasks
    }

    /// A live task by id.
    pub fn task(&self, id: u64) -> Option<&TaskSample> {
        self.tasks.get(&id)
    }

    /// Recently finished tasks, newest first (at most [`StateLimits::max_finished`]).
    pub fn finished_tasks(&self) -> impl Iterator<Item = &TaskSample> {
        self.finished.iter()
    }

    /// Where a task was spawned, if its location is known.
    pub fn task_location(&self, t: &TaskSample) -> Option<&Location> {
        self.locations.get(&t.location).map(|e| &e.location)
    }

    /// Workers, by index.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerView> {
        self.workers.values()
    }

    /// A worker by index.
    pub fn worker(&self, index: u32) -> Option<&WorkerView> {
        self.workers.get(&index)
    }

    /// The latest whole-runtime figures.
    pub fn global(&self) -> &GlobalSample {
        &self.global
    }

    /// Global (injection) queue depth per tick.
    pub fn global_queue_history(&self) -> &History<u64> {
        &self.global_queue
    }

    /// Blocking-pool queue depth per tick.
    pub fn blocking_queue_history(&self) -> &History<u64> {
        &self.blocking_queue
    }

    /// Alive tasks per tick.
    pub fn alive_tasks_history(&self) -> &History<u64> {
        &self.alive_tasks
    }

    /// Runtime-wide polls per second per tick interval.
    pub fn polls_per_second_history(&self) -> &History<f64> {
        &self.polls_per_second
    }

    /// The latest wait-time distributions.
    pub fn waits(&self) -> &WaitTimes {
        &self.waits
    }

    /// Distribution of every poll's duration.
    pub fn poll_histogram(&self) -> &LogHistogram {
        &self.poll_histogram
    }

    /// Durations of the stalls that ended since this client started watching (each counted once, when its
    /// `Ended` event arrives; the log may since have evicted it). Its buckets reach past a minute, where the
    /// per-task poll histograms end at about 1.07 s, so it shows how long the longest stalls really were. Stalls whose
    /// events the agent's rate limit suppressed are not in it (the header's total counts them).
    pub fn stall_histogram(&self) -> &LogHistogram {
        &self.stall_histogram
    }

    /// The stall log, newest first, one entry per stall.
    pub fn stalls(&self) -> impl Iterator<Item = &StallEntry> {
        self.stalls.iter()
    }

    /// Whole-runtime counters.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// What the agent dropped to stay bounded.
    pub fn dropped(&self) -> &Dropped {
        &self.dropped
    }

    /// What this state dropped to stay within its limits.
    pub fn state_dropped(&self) -> &StateDropped {
        &self.state_dropped
    }

    /// Facts about the stream: ticks received and missed, frames the agent dropped for this client, goodbye.
    pub fn stream(&self) -> &StreamFacts {
        &self.stream
    }

    /// The limits in force.
    pub fn limits(&self) -> &StateLimits {
        &self.limits
    }

    /// Monotonic time of the latest sample since the agent started.
    pub fn uptime(&self) -> Duration {
        Duration::from_nanos(self.uptime_nanos)
    }

    /// Wall-clock time of the latest sample, nanoseconds since the Unix epoch.
    pub fn sampled_at_unix_nanos(&self) -> u64 {
        self.at_unix_nanos
    }

    /// Stalls per minute over the last minute (or over the samples received so far, when fewer).
    pub fn stalls_per_minute(&self) -> f64 {
        let Some(&(now, count)) = self.stall_counts.back() else { return 0.0 };
        let window_start = now.saturating_sub(u64::try_from(STALL_RATE_WINDOW.as_nanos()).unwrap_or(u64::MAX));
        let Some(&(then, prev)) = self.stall_counts.iter().find(|(u, _)| *u >= window_start) else { return 0.0 };
        rates::per_minute(prev, count, Duration::from_nanos(now.saturating_sub(then)))
    }
}
