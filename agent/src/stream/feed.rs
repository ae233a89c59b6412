//! The stream feed: turns the agent's tables and runtime samples into protocol messages (`wire/PROTOCOL.md`)
//! and hands them to the server, the agent-side recorder and CI reporting.
//!
//! It runs on the agent thread, once per sample interval, never on the hot path. A tick carries only the tasks
//! whose poll count or state changed since the previous tick: the feed remembers, in each task-table entry in
//! use, the low 32 bits of the poll count it last sent (in the entry's padding, so it costs no memory) and
//! learns which tasks finished from the agent thread's reclaim pass.
//!
//! A new client gets a full state instead, built on its own server thread by [`FullStateSource`] from the
//! same tables.

use crate::sampler::RuntimeSample;
use crate::server::Server;
use crate::shared::{Shared, lock};
use crate::tables::{FINISHED, NONE, OTHER_LOCATION, TASK_BUCKETS, TaskCounts, TaskEntry};
use loopscope_wire::check::{AgentInfo, CheckSummary, CheckWriter};
use loopscope_wire::proto::{
    self, AgentCapabilities, FullState, GlobalSample, Goodbye, LatencySample, LocationInfo, LocationSample,
    PROTOCOL_VERSION, ServeAddr, ServerHello, ServerMessage, TaskSample, Tick, WaitHistogram, WaitTimes, WorkerSample,
};
use loopscope_wire::record::Recorder;
use loopscope_wire::{Dropped, Location, LogHistogram, RuntimeInfo, StallEvent, TaskState, ThreadInfo, Totals};
use std::collections::HashMap;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Stream ids of spawn locations. One `Location` value can have several table indexes (one per codegen
/// unit), so ids are assigned per value; the stream never shows the same line twice.
#[derive(Debug, Default)]
pub(crate) struct LocationIds {
    by_value: HashMap<Location, u32>,
    by_index: HashMap<u32, u32>,
    infos: Vec<LocationInfo>,
}

impl LocationIds {
    /// The stream id for a location-table index, assigning one on first sight.
    fn id(&mut self, shared: &Shared, index: u32) -> u32 {
        if let Some(id) = self.by_index.get(&index) {
            return *id;
        }
        let location = match index {
            OTHER_LOCATION => Location::new("<other locations: location table full>", 0, 0),
            NONE => Location::new("<unknown>", 0, 0),
            i => shared.locations.get(i).map_or_else(|| Location::new("<unknown>", 0, 0), Location::from_std),
        };
        let id = match self.by_value.get(&location) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.infos.len()).unwrap_or(u32::MAX);
                self.by_value.insert(location.clone(), id);
                self.infos.push(LocationInfo { id, location });
                id
            }
        };
        self.by_index.insert(index, id);
        id
    }
}

/// What the last tick said about the runtime as a whole; a full state repeats it.
#[derive(Debug, Default, Clone)]
struct Latest {
    seq: u64,
    workers: Vec<WorkerSample>,
    global: GlobalSample,
    waits: WaitTimes,
}

/// Per-location sums while scanning.
#[derive(Debug, Default)]
struct LocAcc {
    live: u64,
    spawned: u64,
    polls: u64,
    busy: u64,
    max: u64,
    slow: u64,
    stalls: u64,
    hist: Option<LogHistogram>,
    sched: Option<LatencySample>,
}

impl LocAcc {
    fn add(&mut self, t: &TaskSample, live: bool) {
        self.live += u64::from(live);
        self.spawned += 1;
        self.polls += t.poll_count;
        self.busy += t.busy_nanos;
        self.max = self.max.max(t.max_poll_nanos);
        self.slow += t.slow_poll_count;
        self.stalls += t.stall_count;
        self.hist.get_or_insert_with(|| LogHistogram::new(TASK_BUCKETS)).merge(&t.poll_histogram);
        if let Some(s) = &t.schedule_latency {
            merge_latency(&mut self.sched, s);
        }
    }

    fn sample(self, id: u32) -> LocationSample {
        LocationSample {
            id,
            live_tasks: self.live,
            spawned_tasks: self.spawned,
            poll_count: self.polls,
            busy_nanos: self.busy,
            max_poll_nanos: self.max,
            slow_poll_count: self.slow,
            stall_count: self.stalls,
            poll_histogram: self.hist.unwrap_or_else(|| LogHistogram::new(TASK_BUCKETS)),
            schedule_latency: self.sched,
        }
    }
}

fn merge_latency(into: &mut Option<LatencySample>, s: &LatencySample) {
    match into {
        Some(l) => {
            l.count += s.count;
            l.total_nanos += s.total_nanos;
            l.max_nanos = l.max_nanos.max(s.max_nanos);
            l.histogram.merge(&s.histogram);
        }
        None => *into = Some(s.clone()),
    }
}

fn hist(counts: &[u32; TASK_BUCKETS]) -> LogHistogram {
    LogHistogram { counts: counts.iter().map(|&c| u64::from(c)).collect() }
}

/// A task entry's counters in stream form.
fn task_sample(c: &TaskCounts, location: u32) -> TaskSample {
    TaskSample {
        id: c.id,
        location,
        state: if c.state == FINISHED { TaskState::Finished } else { TaskState::Live },
        poll_count: c.polls,
        busy_nanos: c.busy_ns,
        max_poll_nanos: c.max_poll_ns,
        slow_poll_count: c.slow_polls,
        stall_count: c.stalls,
        poll_histogram: hist(&c.poll_hist),
        schedule_latency: (c.sched_count > 0).then(|| LatencySample {
            count: c.sched_count,
            total_nanos: c.sched_total_ns,
            max_nanos: c.sched_max_ns,
            histogram: hist(&c.sched_hist),
        }),
    }
}

/// The result of one pass over the task table.
struct Scan {
    tasks: Vec<TaskSample>,
    locations: HashMap<u32, LocAcc>,
    poll_histogram: LogHistogram,
    totals: Totals,
}

/// Scans the task table. `keep` decides, per entry index and counters, whether the task goes into
/// `Scan::tasks` (it also sees empty entries, as `None`); every task counts toward its location. Holds the agent thread's lock, which it frees
/// entries under, so a task is counted either live or retired, never both.
fn scan(shared: &Shared, ids: &mut LocationIds, mut keep: impl FnMut(usize, Option<&TaskCounts>) -> bool) -> Scan {
    let sentinel = shared.sentinel_task.load(Relaxed);
    let mut locations: HashMap<u32, LocAcc> = HashMap::new();
    let mut tasks = Vec::new();
    let mut totals = Totals::default();
    let mut poll_histogram = LogHistogram::new(TASK_BUCKETS);
    let slots = shared.slots.list();
    for s in &slots {
        totals.poll_count += s.polls.load(Relaxed);
        totals.total_poll_duration += Duration::from_nanos(s.busy_ns.load(Relaxed));
        totals.slow_poll_count += s.slow_polls.load(Relaxed);
        poll_histogram.merge(&s.untracked_histogram());
    }
    let agg = lock(&shared.agg);
    for i in shared.tasks.indexes() {
        let Some(c) = shared.tasks.read(i) else {
            keep(i, None);
            continue;
        };
        if c.id == sentinel {
            continue;
        }
        let id = ids.id(shared, c.location);
        let t = task_sample(&c, id);
        locations.entry(id).or_default().add(&t, c.state != FINISHED);
        if keep(i, Some(&c)) {
            tasks.push(t);
        }
    }
    for (index, retired) in &agg.retired {
        let id = ids.id(shared, *index);
        let acc = locations.entry(id).or_default();
        acc.spawned += retired.spawned_tasks;
        acc.live += retired.live_tasks;
        acc.polls += retired.poll_count;
        acc.busy += proto_nanos(retired.total_poll_duration);
        acc.max = acc.max.max(proto_nanos(retired.max_poll_duration));
        acc.slow += retired.slow_poll_count;
        acc.stalls += retired.stall_count;
        acc.hist.get_or_insert_with(|| LogHistogram::new(TASK_BUCKETS)).merge(&retired.poll_histogram);
        if let Some(s) = &retired.schedule_latency {
            merge_latency(&mut acc.sched, &LatencySample::from(s));
        }
    }
    let retired_workers = agg.retired_workers.clone();
    drop(agg);
    totals.poll_count += retired_workers.polls;
    totals.total_poll_duration += Duration::from_nanos(retired_workers.busy_ns);
    totals.slow_poll_count += retired_workers.slow_polls;
    poll_histogram.merge(&retired_workers.untracked_hist);
    for acc in locations.values() {
        if let Some(h) = &acc.hist {
            poll_histogram.merge(h);
        }
    }
    (totals.spawned_tasks, totals.finished_tasks) = shared.tasks.spawn_counts();
    totals.stall_count = shared.stall_count.load(Relaxed);
    totals.block_in_place_count = shared.block_in_place_count.load(Relaxed);
    totals.stall_reports = shared.stall_reports.load(Relaxed);
    totals.suppressed_reports = shared.suppressed_reports.load(Relaxed);
    Scan { tasks, locations, poll_histogram, totals }
}

fn proto_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn dropped(shared: &Shared) -> Dropped {
    Dropped {
        untracked_tasks: shared.tasks.untracked.load(Relaxed),
        untracked_locations: shared.locations.overflow.load(Relaxed),
        events: shared.dropped_events.load(Relaxed),
        watchdog_messages: shared.dropped_watchdog.load(Relaxed),
        stall_details: shared.stalls_without_details.load(Relaxed),
    }
}

/// The state the feed shares with the server's full-state builder.
#[derive(Debug, Default)]
pub(crate) struct FeedShared {
    ids: Mutex<LocationIds>,
    latest: Mutex<Latest>,
}

/// Builds full states for new clients, on the server's threads. Holds the agent weakly: a connected client
/// must not keep a dropped runtime's agent alive.
#[derive(Debug, Clone)]
pub(crate) struct FullStateSource {
    shared: Weak<Shared>,
    feed: Arc<FeedShared>,
}

impl FullStateSource {
    pub(crate) fn new(shared: &Arc<Shared>, feed: Arc<FeedShared>) -> Self {
        FullStateSource { shared: Arc::downgrade(shared), feed }
    }

    /// A full state and its task chunks (empty once the agent is gone).
    pub(crate) fn messages(&self) -> Vec<ServerMessage> {
        let Some(shared) = self.shared.upgrade() else { return Vec::new() };
        let (full, tasks) = full_state(&shared, &self.feed);
        proto::full_state_messages(full, tasks)
    }
}

/// Encoded bytes of stall events a full state carries at most. A frame holds at most 16 MiB
/// (`MAX_FRAME_LEN`), and a stall event with four samples of a deep stack can take a few hundred KB, so the
/// agent's 256 recent stalls may not fit: a full state that cannot be encoded would leave a new client with
/// nothing at all. A quarter of the frame leaves room for the locations and workers.
const FULL_STALLS_BUDGET: usize = 4 << 20;

/// The newest of `events` (given oldest first) whose encodings fit in `budget` bytes, oldest first. Older
/// stalls that do not fit are left out: the totals still count them, and a client that was connected saw
/// them live.
fn newest_within<'a>(events: impl DoubleEndedIterator<Item = &'a StallEvent>, budget: usize) -> Vec<StallEvent> {
    let mut out = Vec::new();
    let mut used = 0;
    for ev in events.rev() {
        let Ok(bytes) = proto::encode_payload(ev, "StallEvent") else { continue };
        if used + bytes.len() > budget {
            break;
        }
        used += bytes.len();
        out.push(ev.clone());
    }
    out.reverse();
    out
}

fn full_state(shared: &Shared, feed: &FeedShared) -> (FullState, Vec<TaskSample>) {
    let latest = lock(&feed.latest).clone();
    let mut ids = lock(&feed.ids);
    let uptime = shared.uptime();
    let mut scan = scan(shared, &mut ids, |_, c| c.is_some());
    let mut location_stats: Vec<LocationSample> = scan.locations.drain().map(|(id, acc)| acc.sample(id)).collect();
    location_stats.sort_by_key(|l| l.id);
    let locations = ids.infos.clone();
    drop(ids);
    // The latest event of each recent stall, oldest first, as many as fit the budget.
    let recent_stalls = newest_within(lock(&shared.recent_stalls).iter().map(|s| &s.last), FULL_STALLS_BUDGET);
    let full = FullState {
        at_unix_nanos: crate::os::unix_nanos(),
        uptime_nanos: proto_nanos(uptime),
        tick_seq: latest.seq,
        probes: crate::probing::status(),
        locations,
        location_stats,
        workers: latest.workers,
        global: latest.global,
        waits: latest.waits,
        poll_histogram: scan.poll_histogram,
        totals: scan.totals,
        dropped: dropped(shared),
        recent_stalls,
        task_count: 0,
        client_dropped_frames: 0,
    };
    (full, scan.tasks)
}

/// The feed's own state, on the agent thread.
#[derive(Debug)]
pub(crate) struct Feed {
    shared_feed: Arc<FeedShared>,
    seq: u64,
    /// Location ids announced in ticks so far.
    announced: usize,
    /// Poll count and live tasks last sent per location id.
    location_sent: HashMap<u32, (u64, u64, u64)>,
}

const FINISHED_BIT: u32 = 1 << 31;

/// What the feed remembers of a task it sent: the low 31 bits of its poll count plus one (never 0, which
/// means "nothing sent"), and whether it was finished.
fn mark(polls: u64, state: u32) -> u32 {
    ((polls as u32 & !FINISHED_BIT).wrapping_add(1) & !FINISHED_BIT).max(1)
        | if state == FINISHED { FINISHED_BIT } else { 0 }
}

/// Stores `m` as what the feed sent of an entry's task; whether it differs from the last one. Agent thread
/// only (see `TaskEntry::feed_mark`), so a plain load and store.
fn update_mark(e: &TaskEntry, m: u32) -> bool {
    if e.feed_mark.load(Relaxed) == m {
        return false;
    }
    e.feed_mark.store(m, Relaxed);
    true
}

impl Feed {
    pub(crate) fn new(shared_feed: Arc<FeedShared>) -> Feed {
        Feed { shared_feed, seq: 0, announced: 0, location_sent: HashMap::new() }
    }

    /// Records every task's current poll count as sent, without building anything: a pass over the table
    /// that reads two words per entry and writes a mark only into entries in use, and only when it changed
    /// (so it never touches a page the tasks left alone).
    fn mark_all(&mut self, shared: &Shared) {
        for i in shared.tasks.indexes() {
            let Some(e) = u32::try_from(i).ok().and_then(|i| shared.tasks.get(i)) else { break };
            if e.key.load(Acquire) == 0 {
                continue;
            }
            let state = e.state.load(Acquire);
            if state != crate::tables::FREE {
                update_mark(e, mark(e.polls.load(Relaxed), state));
            }
        }
    }

    /// Builds the next tick. `finished` are the ids of tasks whose entries the agent thread's reclaim pass
    /// freed since the previous tick.
    pub(crate) fn tick(
        &mut self,
        shared: &Shared,
        sample: Option<&crate::sampler::RuntimeSample>,
        finished: Vec<u64>,
    ) -> Tick {
        self.seq += 1;
        let uptime = shared.uptime();
        let mut ids = lock(&self.shared_feed.ids);
        let mut scan = scan(shared, &mut ids, |i, c| {
            // An empty entry has no mark: the reclaim that freed it cleared it, and put the task it held in
            // `finished`.
            let Some(c) = c else { return false };
            let Some(e) = u32::try_from(i).ok().and_then(|i| shared.tasks.get(i)) else { return false };
            update_mark(e, mark(c.polls, c.state))
        });
        let workers = sample.map(|s| workers(shared, &mut ids, s)).unwrap_or_default();
        let new_locations = ids.infos[self.announced.min(ids.infos.len())..].to_vec();
        self.announced = ids.infos.len();
        drop(ids);
        let mut locations = Vec::new();
        for (id, acc) in scan.locations.drain() {
            let key = (acc.polls, acc.live, acc.spawned);
            if self.location_sent.get(&id) != Some(&key) {
                self.location_sent.insert(id, key);
                locations.push(acc.sample(id));
            }
        }
        locations.sort_by_key(|l| l.id);
        let (global, waits) = sample.map(|s| (global(s), waits(s))).unwrap_or_default();
        *lock(&self.shared_feed.latest) =
            Latest { seq: self.seq, workers: workers.clone(), global: global.clone(), waits: waits.clone() };
        Tick {
            seq: self.seq,
            at_unix_nanos: crate::os::unix_nanos(),
            uptime_nanos: proto_nanos(uptime),
            workers,
            global,
            waits,
            new_locations,
            locations,
            tasks: std::mem::take(&mut scan.tasks),
            finished,
            poll_histogram: scan.poll_histogram,
            totals: scan.totals,
            dropped: dropped(shared),
            client_dropped_frames: 0,
        }
    }
}

fn workers(shared: &Shared, ids: &mut LocationIds, s: &crate::sampler::RuntimeSample) -> Vec<WorkerSample> {
    let slots = shared.slots.list();
    let now = shared.clock.raw();
    s.workers
        .iter()
        .map(|w| {
            let slot = w.thread_id.and_then(|t| slots.iter().find(|s| s.thread_id == t && s.alive.load(Relaxed)));
            let current_poll = slot.and_then(|sl| sl.in_flight()).map(|f| {
                let index = shared.locations.find(f.location_addr);
                let location = (index != NONE).then(|| ids.id(shared, index));
                proto::CurrentPoll {
                    task_id: f.task_id,
                    location,
                    elapsed_nanos: shared.clock.delta_as_nanos(f.start, now),
                }
            });
            WorkerSample {
                index: u32::try_from(w.index).unwrap_or(u32::MAX),
                thread: slot.map_or(ThreadInfo { tid: 0, name: None }, |sl| ThreadInfo {
                    tid: sl.tid,
                    name: sl.thread_name.clone(),
                }),
                busy_nanos: proto_nanos(w.busy),
                poll_count: w.polls,
                park_count: w.parks,
                noop_count: w.noops,
                steal_count: w.steals,
                overflow_count: w.overflows,
                local_schedule_count: w.local_schedules,
                local_queue_depth: w.local_queue_depth as u64,
                mean_poll_nanos: proto_nanos(w.mean_poll),
                slow_poll_count: slot.map_or(0, |sl| sl.slow_polls.load(Relaxed)),
                max_poll_nanos: slot.map_or(0, |sl| sl.max_poll_ns.load(Relaxed)),
                current_poll,
            }
        })
        .collect()
}

fn global(s: &crate::sampler::RuntimeSample) -> GlobalSample {
    let g = &s.global;
    GlobalSample {
        workers: u32::try_from(g.workers).unwrap_or(u32::MAX),
        global_queue_depth: g.global_queue_depth as u64,
        alive_tasks: g.alive_tasks as u64,
        spawned_tasks: g.spawned_tasks,
        remote_schedule_count: g.remote_schedules,
        blocking_threads: g.blocking_threads as u64,
        idle_blocking_threads: g.idle_blocking_threads as u64,
        blocking_queue_depth: g.blocking_queue_depth as u64,
        budget_forced_yields: g.budget_forced_yields,
        io_driver_ready_events: g.io_ready_events,
    }
}

fn waits(s: &crate::sampler::RuntimeSample) -> WaitTimes {
    let w = |l: &crate::sampler::LagSample| WaitHistogram {
        count: l.count,
        max_nanos: proto_nanos(l.max),
        histogram: l.histogram.clone(),
        recent_window_nanos: proto_nanos(crate::sampler::LAG_WINDOW),
        recent_p50_nanos: l.p50.map(proto_nanos),
        recent_p99_nanos: l.p99.map(proto_nanos),
        recent_max_nanos: l.window_max.map(proto_nanos),
        pending_nanos: l.pending.map(proto_nanos),
    };
    WaitTimes { first_poll_delay: w(&s.first_poll_delay), timer_lateness: w(&s.timer_lateness) }
}

/// The agent-side recording (`LOOPSCOPE_RECORD`).
pub(crate) type FileRecorder = Recorder<std::io::BufWriter<std::fs::File>>;

/// The greeting: what a client learns first about this agent.
pub(crate) fn hello(shared: &Shared, caps: &crate::Capabilities) -> ServerHello {
    let facts = lock(&shared.facts).clone();
    ServerHello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime: RuntimeInfo {
            id: shared.id,
            name: shared.config.name.clone(),
            flavor: facts.flavor,
            workers: facts.workers,
            pid: std::process::id(),
        },
        pid: std::process::id(),
        program: std::env::args_os().next().map(|a| a.to_string_lossy().into_owned()),
        started_at_unix_nanos: crate::os::unix_nanos().saturating_sub(proto_nanos(shared.uptime())),
        sample_interval: shared.config.sample_interval,
        stall_threshold: shared.config.stall_threshold,
        slow_poll_threshold: shared.config.slow_poll_threshold,
        capabilities: AgentCapabilities {
            poll_timing: caps.poll_timing,
            stall_detection: caps.stall_detection,
            schedule_latency: caps.schedule_latency,
            runtime_metrics: cfg!(tokio_unstable),
            missing: caps.missing.clone(),
        },
    }
}

/// Starts the server and the recording at install, so that a bad address or path is an error the app sees
/// at once, and the real port is known before the runtime runs. The default address being taken is not an
/// error: one process often has several runtimes, and only the first can have it.
pub(crate) fn start_outputs(shared: &Arc<Shared>, caps: &crate::Capabilities) -> Result<(), String> {
    let hello = hello(shared, caps);
    if let Some(addr) = &shared.config.serve {
        let source = FullStateSource::new(shared, shared.feed.clone());
        match Server::start(addr, hello.clone(), move || source.messages()) {
            Ok(server) => {
                let _ = shared.server.set(server);
            }
            Err(e) if *addr == ServeAddr::default() => {
                let msg = format!(
                    "{}: {}; this runtime's stream is not served (set LOOPSCOPE_ADDR to another address, \
                     e.g. 127.0.0.1:0, or to off)",
                    e,
                    std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()
                );
                warn_once(&msg);
                let _ = shared.serve_error.set(msg);
            }
            Err(e) => {
                let source = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                return Err(format!("{e}{source}"));
            }
        }
    }
    if let Some(dir) = &shared.config.check_dir {
        let mut info = AgentInfo::for_this_process(shared.id, shared.config.stall_threshold);
        info.runtime_name = shared.config.name.clone();
        info.probes = crate::probing::status();
        info.missing = caps.missing.clone();
        if !caps.stall_detection {
            info.no_stall_detection = Some(caps.missing.join("; "));
        }
        match CheckWriter::create(dir, &info) {
            Ok(w) => *lock(&shared.check) = Some(w),
            // CI mode must not break the app, but the user must know why `loopscope check` saw nothing.
            Err(e) => {
                let msg = format!("loopscope: cannot write CI records to {}: {e}", dir.display());
                tracing::error!(target: "loopscope", "{msg}");
                eprintln!("{msg}");
            }
        }
    }
    if let Some(path) = &shared.config.record {
        let rec = Recorder::create(path, &hello)
            .map_err(|e| format!("loopscope cannot record the stream to {}: {e}", path.display()))?;
        *lock(&shared.recorder) = Some(rec);
    }
    Ok(())
}

/// The default address is usually taken by the process's first runtime; saying so once is enough.
fn warn_once(msg: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::warn!(target: "loopscope::server", "{msg}"));
}

/// The feed's outputs, driven by the agent thread.
#[derive(Debug)]
pub(crate) struct Outputs {
    feed: Feed,
    recorder: Option<FileRecorder>,
    /// CI records (`LOOPSCOPE_CHECK_DIR`).
    check: Option<CheckWriter>,
    /// The recording starts with a full state, written at the first tick.
    recorder_primed: bool,
    hello_complete: bool,
}

impl Outputs {
    pub(crate) fn new(shared: &Arc<Shared>) -> Outputs {
        Outputs {
            feed: Feed::new(shared.feed.clone()),
            recorder: lock(&shared.recorder).take(),
            check: lock(&shared.check).take(),
            recorder_primed: false,
            hello_complete: false,
        }
    }

    /// Whether anyone would read a tick now.
    fn listening(&self, shared: &Shared) -> bool {
        self.recorder.is_some() || shared.server.get().is_some_and(|s| s.client_count() > 0)
    }

    /// Once the runtime's flavor and workers are known, new clients are greeted with them.
    pub(crate) fn refresh_hello(&mut self, shared: &Shared) {
        if self.hello_complete || lock(&shared.facts).workers.is_none() {
            return;
        }
        self.hello_complete = true;
        if let Some(server) = shared.server.get() {
            let caps = crate::Agent::capabilities_of(shared);
            if let Err(e) = server.set_hello(&hello(shared, &caps)) {
                tracing::debug!(target: "loopscope::server", "could not update the greeting: {e}");
            }
        }
    }

    /// One sample interval: a tick for every listener. `freed` are the ids of tasks reclaimed since the last
    /// call; it is emptied either way.
    pub(crate) fn tick(&mut self, shared: &Arc<Shared>, sample: Option<&RuntimeSample>, freed: &mut Vec<u64>) {
        if !self.listening(shared) {
            // Nobody to tell; a client that connects later gets a full state. Keep the marks current, though,
            // so that the first tick after it connects carries only what changed, not every task.
            self.feed.mark_all(shared);
            freed.clear();
            return;
        }
        if let Some(rec) = &mut self.recorder
            && !self.recorder_primed
        {
            self.recorder_primed = true;
            let source = FullStateSource::new(shared, shared.feed.clone());
            for msg in source.messages() {
                if let Err(e) = rec.write(&msg) {
                    self.recording_failed(&e);
                    break;
                }
            }
        }
        let tick = ServerMessage::Tick(Box::new(self.feed.tick(shared, sample, std::mem::take(freed))));
        self.emit(shared, &tick);
    }

    /// Every event of every stall, rate-limited or not, for CI mode.
    pub(crate) fn check_stall(&mut self, ev: &StallEvent) {
        if let Some(w) = &mut self.check
            && let Err(e) = w.write_stall(ev)
            && w.failed_writes() == 1
        {
            tracing::error!(target: "loopscope", "loopscope: cannot write a CI record to {}: {e}", w.path().display());
        }
    }

    /// A stall event, as delivered to subscribers.
    pub(crate) fn stall(&mut self, shared: &Shared, ev: &StallEvent) {
        self.emit(shared, &ServerMessage::Stall(Box::new(ev.clone())));
    }

    fn emit(&mut self, shared: &Shared, msg: &ServerMessage) {
        if let Some(server) = shared.server.get() {
            server.broadcast(msg);
        }
        if self.recorder_primed
            && let Some(rec) = &mut self.recorder
            && let Err(e) = rec.write(msg)
        {
            self.recording_failed(&e);
        }
    }

    fn recording_failed(&mut self, e: &loopscope_wire::record::RecordError) {
        tracing::warn!(target: "loopscope", "loopscope stopped recording the stream: {e}");
        self.recorder = None;
    }

    /// The runtime is gone: say goodbye to clients and close the recording properly.
    pub(crate) fn finish(&mut self, shared: &Shared, reason: &str) {
        if let Some(mut w) = self.check.take() {
            finish_check(shared, &mut w);
        }
        let bye = ServerMessage::Goodbye(Goodbye { reason: reason.to_string() });
        if let Some(mut rec) = self.recorder.take() {
            let done = if self.recorder_primed {
                rec.write(&bye).and_then(|()| rec.finish().map(drop))
            } else {
                rec.finish().map(drop)
            };
            if let Err(e) = done {
                tracing::warn!(target: "loopscope", "loopscope could not finish the recording: {e}");
            }
        }
        if let Some(server) = shared.server.get() {
            server.shutdown_with(reason);
        }
    }
}

/// The last CI record: the agent's totals.
pub(crate) fn finish_check(shared: &Shared, w: &mut CheckWriter) {
    let snap = crate::snapshot::build(shared);
    let summary = CheckSummary {
        finished_at_unix_nanos: crate::os::unix_nanos(),
        totals: snap.totals,
        dropped: snap.dropped,
        failed_writes: 0,
    };
    if let Err(e) = w.finish(&summary) {
        tracing::error!(target: "loopscope", "loopscope: cannot finish the CI record {}: {e}", w.path().display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_wire::proto::{MAX_FRAME_LEN, ServerFrame};

    /// A stall as deep as the probes capture: four samples of 128 frames with long generic names.
    fn deep_stall(id: u64) -> StallEvent {
        loopscope_wire::example_stall(id, 128, 4)
    }

    #[test]
    fn a_full_state_with_many_deep_stalls_still_fits_in_a_frame() {
        let recent: Vec<StallEvent> = (0..crate::shared::RECENT_STALLS as u64).map(deep_stall).collect();
        let full = |recent_stalls| ServerMessage::Full(Box::new(FullState { recent_stalls, ..FullState::default() }));
        // All of them would not fit: the full state could not be sent at all.
        assert!(ServerFrame::encode(&full(recent.clone())).is_err(), "the test needs more than a frame of stalls");

        let kept = newest_within(recent.iter(), FULL_STALLS_BUDGET);
        assert!(!kept.is_empty() && kept.len() < recent.len(), "kept {}", kept.len());
        let ids: Vec<u64> = kept.iter().map(|e| e.stall_id).collect();
        let newest: Vec<u64> = (recent.len() - kept.len()..recent.len()).map(|i| i as u64).collect();
        assert_eq!(ids, newest, "the newest stalls, oldest first");
        let frame = ServerFrame::encode(&full(kept)).expect("fits");
        assert!(frame.wire_len() <= FULL_STALLS_BUDGET + 1024 && frame.wire_len() < MAX_FRAME_LEN as usize);
        // Small stalls all fit.
        let small: Vec<StallEvent> = (0..10).map(|i| StallEvent { culprit: None, ..deep_stall(i) }).collect();
        assert_eq!(newest_within(small.iter(), FULL_STALLS_BUDGET).len(), 10);
    }
}
