//! Console updates in, loopscope stream messages out: a pure function of what the console server sent, so the
//! dashboard's model and widgets show a console-subscriber app as they show a loopscope agent.
//!
//! console-subscriber publishes an `Update` every publish interval (1 s by default) with the tasks that are
//! new and the stats of every task whose stats changed since the previous update (a poll start, a poll end,
//! a wake, a drop each mark them changed). That makes polls in flight visible: a task whose latest stats show
//! `last_poll_started` after `last_poll_ended` was being polled when they were read, and stays so until an
//! update carries newer stats for it. Its elapsed time is measured against the update's own `now`, on the
//! app's clock, never against ours: between two updates a poll may have ended without us knowing, and ticking
//! it up on our clock would flag every poll that happened to be running at a publish instant.

use console_api::field::{Name, Value};
use console_api::instrument::Update;
use console_api::tasks::{Stats, Task};
use loopscope_wire::proto::{
    AgentCapabilities, FullState, GlobalSample, LatencySample, LocationInfo, LocationSample, PROTOCOL_VERSION,
    ServerHello, ServerMessage, TaskSample, Tick, full_state_messages,
};
use loopscope_wire::{
    Classification, Culprit, Dropped, Location, LogHistogram, ProbeStatus, RuntimeInfo, StallEvent, StallKind,
    StallPhase, TaskState, ThreadInfo, Totals,
};
use std::collections::HashMap;
use std::time::Duration;

/// What this mode cannot show, in one line for the status line.
pub const CONSOLE_MODE_NOTE: &str = "console mode: from console-subscriber; no stacks, classification or probes";

/// Why a console stall has no culprit analysis, for its detail pane.
const NO_CULPRIT: &str = "console mode: console-subscriber reports when polls start and end, not what the thread \
                          does (no stack, system call or CPU accounting)";

/// A `google.protobuf.Timestamp` as nanoseconds since the Unix epoch. `None` before the epoch or with nanos out
/// of range (a malformed timestamp): a time we cannot trust is no time, rather than a huge or negative elapsed.
pub fn timestamp_nanos(t: &prost_types::Timestamp) -> Option<i128> {
    if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    Some(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

/// A `google.protobuf.Duration` as nanoseconds, 0 when negative or malformed.
fn duration_nanos(d: &prost_types::Duration) -> u64 {
    if d.seconds < 0 || d.nanos < 0 {
        return 0;
    }
    let n = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A non-negative nanosecond difference as a `u64` (0 when negative).
fn span(from: i128, to: i128) -> u64 {
    u64::try_from(to.saturating_sub(from).max(0)).unwrap_or(u64::MAX)
}

/// What kind of task tokio said it spawned (the span's `kind` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `tokio::spawn`, `spawn_local`, `block_on`: polls that must return quickly.
    Async,
    /// `spawn_blocking`: one "poll" is the whole closure, long by design, never a stall.
    Blocking,
}

/// A stall we reported and have not ended yet.
#[derive(Clone, Debug)]
struct OpenStall {
    id: u64,
    /// When the poll started, on the app's clock.
    started: i128,
    /// The task's poll count when the poll was first seen in flight (console counts a poll when it starts).
    polls_at_start: u64,
    /// The task's busy time then: the time of its completed polls, which excludes this one.
    busy_at_start: u64,
    /// The longest elapsed time seen so far: a lower bound of the poll's length.
    elapsed: u64,
    /// The next elapsed time that gets an `Updated` event (2×, 4×, ... the threshold, as the agent does).
    next_update: u64,
}

#[derive(Clone, Debug)]
struct ConsoleTask {
    /// tokio's task id (the span's `task.id` field), or console's span id when tokio did not give one.
    id: u64,
    location: u32,
    kind: Kind,
    stats: Option<Stats>,
    max_poll_nanos: u64,
    stall_count: u64,
    /// The start of the latest completed poll already judged (so one poll is never counted twice).
    judged_start: Option<i128>,
    stall: Option<OpenStall>,
    changed: bool,
    finished: bool,
}

impl ConsoleTask {
    fn polls(&self) -> u64 {
        self.stats.as_ref().and_then(|s| s.poll_stats.as_ref()).map_or(0, |p| p.polls)
    }

    fn busy_nanos(&self) -> u64 {
        self.stats
            .as_ref()
            .and_then(|s| s.poll_stats.as_ref())
            .and_then(|p| p.busy_time.as_ref())
            .map_or(0, duration_nanos)
    }

    /// (start, end) of the latest poll, on the app's clock.
    fn last_poll(&self) -> (Option<i128>, Option<i128>) {
        let p = self.stats.as_ref().and_then(|s| s.poll_stats.as_ref());
        let started = p.and_then(|p| p.last_poll_started.as_ref()).and_then(timestamp_nanos);
        let ended = p.and_then(|p| p.last_poll_ended.as_ref()).and_then(timestamp_nanos);
        (started, ended)
    }

    /// The start of the poll running when the stats were read, if one was.
    fn in_flight(&self) -> Option<i128> {
        match self.last_poll() {
            (Some(s), None) => Some(s),
            (Some(s), Some(e)) if s > e => Some(s),
            _ => None,
        }
    }

    fn sample(&self) -> TaskSample {
        let scheduled = self.stats.as_ref().and_then(|s| s.scheduled_time.as_ref()).map_or(0, duration_nanos);
        TaskSample {
            id: self.id,
            location: self.location,
            state: if self.finished { TaskState::Finished } else { TaskState::Live },
            poll_count: self.polls(),
            busy_nanos: self.busy_nanos(),
            max_poll_nanos: self.max_poll_nanos,
            // Console has no slow-poll count (its histogram would need a stream per task); stalls are ours.
            slow_poll_count: self.stall_count,
            stall_count: self.stall_count,
            poll_histogram: LogHistogram::default(),
            // Console's scheduled time: the total time from a wake to the poll it caused.
            schedule_latency: Some(LatencySample {
                count: self.polls(),
                total_nanos: scheduled,
                max_nanos: 0,
                histogram: LogHistogram::default(),
            }),
        }
    }
}

/// Turns a console server's updates into the loopscope stream the dashboard reads. See the [module
/// docs](self).
#[derive(Debug)]
pub struct Converter {
    threshold: Duration,
    hello: ServerHello,
    /// Console span id → task.
    tasks: HashMap<u64, ConsoleTask>,
    locations: HashMap<Location, u32>,
    /// Location by id (ids are indexes).
    location_names: Vec<Location>,
    /// What the tasks forgotten after they finished add to their locations' counters.
    retired: HashMap<u32, LocationSample>,
    /// Polls and busy time of the forgotten tasks.
    retired_polls: u64,
    retired_busy: u64,
    new_locations: Vec<LocationInfo>,
    sent_locations: HashMap<u32, LocationSample>,
    /// Our clock minus the app's, as of the latest update (nanoseconds): event times are shown on our clock,
    /// because the dashboard ticks live stalls against it.
    offset: i128,
    /// The app's clock at the first update: uptimes count from here.
    base: Option<i128>,
    uptime: u64,
    seq: u64,
    next_stall_id: u64,
    spawned: u64,
    finished: u64,
    stalls: u64,
    stall_reports: u64,
    /// Events console-subscriber dropped (its buffer was full): its figures are incomplete.
    console_dropped: u64,
    full_sent: bool,
}

impl Converter {
    /// A converter for the console server at `source`, flagging polls longer than
    /// `threshold`. `now_unix_nanos` (our clock) identifies this connection: a reconnect is a new app to the
    /// dashboard, since console says nothing that identifies a process.
    pub fn new(source: &str, threshold: Duration, now_unix_nanos: u64) -> Converter {
        let hello = ServerHello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "console-subscriber (console-api 0.9)".into(),
            runtime: RuntimeInfo {
                id: now_unix_nanos,
                name: Some("console".into()),
                flavor: None,
                workers: None,
                pid: 0,
            },
            pid: 0,
            program: Some("console-subscriber app".into()),
            started_at_unix_nanos: now_unix_nanos,
            sample_interval: Duration::from_secs(1),
            stall_threshold: threshold,
            slow_poll_threshold: threshold,
            capabilities: AgentCapabilities {
                poll_timing: true,
                stall_detection: true,
                schedule_latency: true,
                runtime_metrics: false,
                missing: vec![
                    CONSOLE_MODE_NOTE.into(),
                    "no workers: console-subscriber does not say which thread polls a task".into(),
                    format!(
                        "stalls are seen at console's publish interval (1 s by default) from {source}: a stall \
                         shorter than that may be found only after it ended, or not at all, and a stall's length is \
                         the shortest it can have been when console's figures do not pin it down"
                    ),
                ],
            },
        };
        Converter {
            threshold,
            hello,
            tasks: HashMap::new(),
            locations: HashMap::new(),
            location_names: Vec::new(),
            retired: HashMap::new(),
            retired_polls: 0,
            retired_busy: 0,
            new_locations: Vec::new(),
            sent_locations: HashMap::new(),
            offset: 0,
            base: None,
            uptime: 0,
            seq: 0,
            next_stall_id: 1,
            spawned: 0,
            finished: 0,
            stalls: 0,
            stall_reports: 0,
            console_dropped: 0,
            full_sent: false,
        }
    }

    /// The greeting the dashboard gets for this connection.
    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    /// The stall threshold in force.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Events console-subscriber said it dropped so far.
    pub fn console_dropped(&self) -> u64 {
        self.console_dropped
    }

    fn location_id(&mut self, loc: Location) -> u32 {
        if let Some(&id) = self.locations.get(&loc) {
            return id;
        }
        let id = u32::try_from(self.locations.len()).unwrap_or(u32::MAX);
        self.locations.insert(loc.clone(), id);
        self.location_names.push(loc.clone());
        self.new_locations.push(LocationInfo { id, location: loc });
        id
    }

    fn add_task(&mut self, t: &Task) {
        let Some(span_id) = t.id.as_ref().map(|i| i.id) else { return };
        if self.tasks.contains_key(&span_id) {
            return;
        }
        let mut id = span_id;
        let mut kind = Kind::Async;
        for f in &t.fields {
            let Some(Name::StrName(name)) = &f.name else { continue };
            match (name.as_str(), &f.value) {
                ("task.id", Some(Value::U64Val(v))) => id = *v,
                ("kind", Some(Value::DebugVal(k) | Value::StrVal(k))) if k == "blocking" => kind = Kind::Blocking,
                _ => {}
            }
        }
        let location = match &t.location {
            Some(l) => Location::new(
                l.file.clone().unwrap_or_else(|| "<unknown>".into()),
                l.line.unwrap_or(0),
                l.column.unwrap_or(0),
            ),
            None => Location::new("<unknown>", 0, 0),
        };
        let location = self.location_id(location);
        self.spawned += 1;
        self.tasks.insert(
            span_id,
            ConsoleTask {
                id,
                location,
                kind,
                stats: None,
                max_poll_nanos: 0,
                stall_count: 0,
                judged_start: None,
                stall: None,
                changed: true,
                finished: false,
            },
        );
    }

    fn stall_event(
        &self,
        t: &ConsoleTask,
        phase: StallPhase,
        elapsed: u64,
        at_app: i128,
        in_flight: bool,
    ) -> StallEvent {
        let at = u64::try_from((at_app + self.offset).max(0)).unwrap_or(u64::MAX);
        StallEvent {
            stall_id: t.stall.as_ref().map_or(0, |s| s.id),
            phase,
            kind: StallKind::WorkerBlocked,
            runtime_id: self.hello.runtime.id,
            worker: None,
            thread: ThreadInfo { tid: 0, name: None },
            task_id: t.id,
            location: self.location_names.get(t.location as usize).cloned(),
            elapsed: Duration::from_nanos(elapsed),
            threshold: self.threshold,
            at_unix_nanos: at,
            suppressed: 0,
            caught_in_flight: in_flight,
            culprit: Some(Culprit {
                classification: Classification::Unknown,
                reason: NO_CULPRIT.into(),
                on_cpu_ratio: None,
                run_queue_ratio: None,
                counters: None,
                voluntary_switches: None,
                involuntary_switches: None,
                samples: Vec::new(),
                stack_moved: None,
            }),
            time: None,
            agent_task: None,
        }
    }

    /// Applies one update received at `local_unix_nanos` (our clock) and returns the messages for the
    /// dashboard: a full state the first time, the stall events it reveals, then a tick.
    pub fn apply(&mut self, update: &Update, local_unix_nanos: u64) -> Vec<ServerMessage> {
        let local = i128::from(local_unix_nanos);
        // An update without a usable `now` (never from console-subscriber): judge it on our clock.
        let now = update.now.as_ref().and_then(timestamp_nanos).unwrap_or(local - self.offset);
        self.offset = local - now;
        let base = *self.base.get_or_insert(now);
        self.uptime = self.uptime.max(span(base, now));

        let mut out = Vec::new();
        if let Some(tu) = &update.task_update {
            for t in &tu.new_tasks {
                self.add_task(t);
            }
            self.console_dropped = self.console_dropped.saturating_add(tu.dropped_events);
            for (span_id, stats) in &tu.stats_update {
                if let Some(t) = self.tasks.get_mut(span_id) {
                    t.stats = Some(*stats);
                    t.changed = true;
                }
            }
        }
        let threshold = u64::try_from(self.threshold.as_nanos()).unwrap_or(u64::MAX);
        let mut ids: Vec<u64> = self.tasks.keys().copied().collect();
        ids.sort_unstable();
        for span_id in ids {
            let Some(mut t) = self.tasks.remove(&span_id) else { continue };
            self.judge(&mut t, now, threshold, &mut out);
            self.tasks.insert(span_id, t);
        }
        if !self.full_sent {
            self.full_sent = true;
            out.splice(0..0, self.full_state(now));
        } else {
            out.push(ServerMessage::Tick(Box::new(self.tick(now))));
        }
        out
    }

    /// Looks at one task's latest stats: ends its open stall, flags a poll in flight past the threshold, or
    /// one that completed past it since the previous update.
    fn judge(&mut self, t: &mut ConsoleTask, now: i128, threshold: u64, out: &mut Vec<ServerMessage>) {
        let (started, ended) = t.last_poll();
        let in_flight = t.in_flight();
        if let Some((s, Some(e))) = started.map(|s| (s, ended)).filter(|(s, e)| e.is_some_and(|e| e >= *s)) {
            // The latest poll completed: its length is exact.
            t.max_poll_nanos = t.max_poll_nanos.max(span(s, e));
        }
        let dropped = t.stats.as_ref().and_then(|s| s.dropped_at.as_ref()).is_some();

        // 1. An open stall ends when the poll it follows is no longer the one in flight.
        if let Some(open) = t.stall.clone()
            && (in_flight != Some(open.started) || dropped)
        {
            let added = t.busy_nanos().saturating_sub(open.busy_at_start);
            let exact = match (started, ended) {
                // The same poll ended: its own timestamps.
                (Some(s), Some(e)) if s == open.started && e >= s => Some(span(s, e)),
                // Exactly one poll started since: the busy time added is this poll's, plus that one's when it
                // completed too (console adds a poll's time to busy time when it ends).
                (Some(s), e) if s > open.started && t.polls() == open.polls_at_start + 1 => match e {
                    Some(e) if e >= s => Some(added.saturating_sub(span(s, e))),
                    _ => Some(added),
                },
                _ => None,
            };
            // Otherwise only a lower bound is known: the longest elapsed time seen in flight.
            let elapsed = exact.map_or(open.elapsed, |d| d.max(open.elapsed));
            t.max_poll_nanos = t.max_poll_nanos.max(elapsed);
            let at = open.started.saturating_add(i128::from(elapsed));
            out.push(ServerMessage::Stall(Box::new(self.stall_event(t, StallPhase::Ended, elapsed, at, true))));
            self.stall_reports += 1;
            t.judged_start = Some(open.started);
            t.stall = None;
            t.changed = true;
        }

        // 2. A poll in flight past the threshold, as of the update's `now`.
        if t.kind == Kind::Async
            && !dropped
            && let Some(s) = in_flight
        {
            let elapsed = span(s, now);
            t.max_poll_nanos = t.max_poll_nanos.max(elapsed);
            match &mut t.stall {
                None if elapsed >= threshold && t.judged_start != Some(s) => {
                    t.stall = Some(OpenStall {
                        id: self.next_stall_id,
                        started: s,
                        polls_at_start: t.polls(),
                        busy_at_start: t.busy_nanos(),
                        elapsed,
                        next_update: threshold.saturating_mul(2),
                    });
                    self.next_stall_id += 1;
                    self.stalls += 1;
                    t.stall_count += 1;
                    t.changed = true;
                    out.push(ServerMessage::Stall(Box::new(self.stall_event(
                        t,
                        StallPhase::Started,
                        elapsed,
                        now,
                        true,
                    ))));
                    self.stall_reports += 1;
                }
                Some(open) if open.started == s => {
                    open.elapsed = open.elapsed.max(elapsed);
                    if elapsed >= open.next_update {
                        while open.next_update <= elapsed {
                            open.next_update = open.next_update.saturating_mul(2);
                        }
                        out.push(ServerMessage::Stall(Box::new(self.stall_event(
                            t,
                            StallPhase::Updated,
                            elapsed,
                            now,
                            true,
                        ))));
                        self.stall_reports += 1;
                    }
                }
                _ => {}
            }
        }

        // 3. The latest completed poll, if it passed the threshold and was never seen in flight as a stall.
        if t.kind == Kind::Async
            && let (Some(s), Some(e)) = (started, ended)
            && e >= s
            && span(s, e) >= threshold
            && t.judged_start.is_none_or(|j| j < s)
        {
            let mut found = t.clone();
            found.stall = Some(OpenStall {
                id: self.next_stall_id,
                started: s,
                polls_at_start: 0,
                busy_at_start: 0,
                elapsed: span(s, e),
                next_update: 0,
            });
            self.next_stall_id += 1;
            self.stalls += 1;
            t.stall_count += 1;
            t.changed = true;
            t.judged_start = Some(s);
            found.stall_count = t.stall_count;
            out.push(ServerMessage::Stall(Box::new(self.stall_event(&found, StallPhase::Ended, span(s, e), e, false))));
            self.stall_reports += 1;
        }
        if t.in_flight().is_none()
            && let Some(s) = started
        {
            // Every poll up to the latest is judged now.
            t.judged_start = Some(t.judged_start.map_or(s, |j| j.max(s)));
        }
        if dropped && !t.finished {
            t.finished = true;
            t.changed = true;
        }
    }

    fn location_samples(&self) -> HashMap<u32, LocationSample> {
        let mut out = self.retired.clone();
        for t in self.tasks.values() {
            add_to_location(&mut out, t, !t.finished);
        }
        out
    }

    fn totals(&self) -> Totals {
        Totals {
            spawned_tasks: self.spawned,
            finished_tasks: self.finished,
            poll_count: self.retired_polls + self.tasks.values().map(ConsoleTask::polls).sum::<u64>(),
            total_poll_duration: Duration::from_nanos(
                self.retired_busy + self.tasks.values().map(ConsoleTask::busy_nanos).sum::<u64>(),
            ),
            slow_poll_count: self.stalls,
            stall_count: self.stalls,
            block_in_place_count: 0,
            stall_reports: self.stall_reports,
            suppressed_reports: 0,
        }
    }

    fn global(&self) -> GlobalSample {
        GlobalSample {
            alive_tasks: self.tasks.values().filter(|t| !t.finished).count() as u64,
            spawned_tasks: self.spawned,
            ..GlobalSample::default()
        }
    }

    fn at(&self, now: i128) -> u64 {
        u64::try_from((now + self.offset).max(0)).unwrap_or(u64::MAX)
    }

    /// Drops the tasks that finished from our table once the dashboard was told (console keeps them for an
    /// hour; the dashboard keeps its own list of finished tasks).
    fn forget_finished(&mut self) -> Vec<u64> {
        let gone: Vec<u64> = self.tasks.iter().filter(|(_, t)| t.finished).map(|(k, _)| *k).collect();
        let mut ids = Vec::with_capacity(gone.len());
        for k in gone {
            if let Some(t) = self.tasks.remove(&k) {
                self.finished += 1;
                self.retired_polls += t.polls();
                self.retired_busy += t.busy_nanos();
                add_to_location(&mut self.retired, &t, false);
                ids.push(t.id);
            }
        }
        ids
    }

    fn full_state(&mut self, now: i128) -> Vec<ServerMessage> {
        let tasks: Vec<TaskSample> = self.tasks.values().map(ConsoleTask::sample).collect();
        for t in self.tasks.values_mut() {
            t.changed = false;
        }
        let locations = self.location_samples();
        self.sent_locations = locations.clone();
        let full = FullState {
            at_unix_nanos: self.at(now),
            uptime_nanos: self.uptime,
            tick_seq: 0,
            probes: vec![
                ProbeStatus { name: "stack".into(), active: false, detail: NO_CULPRIT.into() },
                ProbeStatus { name: "syscall".into(), active: false, detail: NO_CULPRIT.into() },
                ProbeStatus { name: "classification".into(), active: false, detail: NO_CULPRIT.into() },
            ],
            locations: std::mem::take(&mut self.new_locations),
            location_stats: locations.into_values().collect(),
            workers: Vec::new(),
            global: self.global(),
            totals: self.totals(),
            dropped: Dropped::default(),
            ..FullState::default()
        };
        // Tasks that were already gone when we connected go out as finished in the full state, once.
        let _ = self.forget_finished();
        full_state_messages(full, tasks)
    }

    fn tick(&mut self, now: i128) -> Tick {
        self.seq += 1;
        let tasks: Vec<TaskSample> = self.tasks.values().filter(|t| t.changed).map(ConsoleTask::sample).collect();
        for t in self.tasks.values_mut() {
            t.changed = false;
        }
        let locations = self.location_samples();
        let changed: Vec<LocationSample> =
            locations.values().filter(|l| self.sent_locations.get(&l.id) != Some(*l)).cloned().collect();
        self.sent_locations.extend(locations);
        let global = self.global();
        let finished = self.forget_finished();
        Tick {
            seq: self.seq,
            at_unix_nanos: self.at(now),
            uptime_nanos: self.uptime,
            workers: Vec::new(),
            global,
            new_locations: std::mem::take(&mut self.new_locations),
            locations: changed,
            tasks,
            finished,
            totals: self.totals(),
            ..Tick::default()
        }
    }
}

/// Adds a task's counters to its location's.
fn add_to_location(out: &mut HashMap<u32, LocationSample>, t: &ConsoleTask, live: bool) {
    let l = out.entry(t.location).or_insert_with(|| LocationSample {
        id: t.location,
        live_tasks: 0,
        spawned_tasks: 0,
        poll_count: 0,
        busy_nanos: 0,
        max_poll_nanos: 0,
        slow_poll_count: 0,
        stall_count: 0,
        poll_histogram: LogHistogram::default(),
        schedule_latency: None,
    });
    l.spawned_tasks += 1;
    if live {
        l.live_tasks += 1;
    }
    l.poll_count += t.polls();
    l.busy_nanos += t.busy_nanos();
    l.max_poll_nanos = l.max_poll_nanos.max(t.max_poll_nanos);
    l.slow_poll_count += t.stall_count;
    l.stall_count += t.stall_count;
}

#[cfg(test)]
mod tests {
    //! The converter on updates written by hand, for the cases a live app produces only by chance: a poll
    //! seen in flight over several updates, a stall's end pinned down by busy time, blocking tasks, drops.
    use super::*;
    use console_api::tasks::TaskUpdate;
    use console_api::{Field, Id, PollStats};
    use loopscope_wire::state::State;

    const BASE: i64 = 1_764_547_200;
    const MS: u64 = 1_000_000;

    fn ts(ms: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds: BASE + ms / 1000, nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap() }
    }

    fn field(name: &str, value: Value) -> Field {
        Field { name: Some(Name::StrName(name.into())), value: Some(value), metadata_id: None }
    }

    fn task(span_id: u64, tokio_id: u64, line: u32, kind: &str) -> Task {
        Task {
            id: Some(Id { id: span_id }),
            metadata: None,
            kind: 0,
            fields: vec![field("task.id", Value::U64Val(tokio_id)), field("kind", Value::DebugVal(kind.into()))],
            parents: Vec::new(),
            location: Some(console_api::Location {
                file: Some("src/app.rs".into()),
                module_path: None,
                line: Some(line),
                column: Some(5),
            }),
        }
    }

    /// Stats with `polls` polls, the latest started (and ended) at these milliseconds, and `busy_ms` of
    /// completed polls.
    fn stats(polls: u64, started: Option<i64>, ended: Option<i64>, busy_ms: i64) -> Stats {
        Stats {
            created_at: Some(ts(0)),
            poll_stats: Some(PollStats {
                polls,
                first_poll: Some(ts(0)),
                last_poll_started: started.map(ts),
                last_poll_ended: ended.map(ts),
                busy_time: Some(prost_types::Duration {
                    seconds: busy_ms / 1000,
                    nanos: i32::try_from((busy_ms % 1000) * 1_000_000).unwrap(),
                }),
            }),
            scheduled_time: Some(prost_types::Duration { seconds: 0, nanos: 3_000_000 }),
            ..Stats::default()
        }
    }

    fn update(now_ms: i64, new_tasks: Vec<Task>, stats: Vec<(u64, Stats)>) -> Update {
        Update {
            now: Some(ts(now_ms)),
            task_update: Some(TaskUpdate { new_tasks, stats_update: stats.into_iter().collect(), dropped_events: 0 }),
            ..Update::default()
        }
    }

    /// Applies `u` received "now" (our clock 5 ms ahead of the app's) to `state`; returns the stall events.
    fn feed(conv: &mut Converter, state: &mut State, u: &Update) -> Vec<StallEvent> {
        let now = u.now.as_ref().and_then(timestamp_nanos).unwrap() + 5 * i128::from(MS);
        let mut events = Vec::new();
        for m in conv.apply(u, u64::try_from(now).unwrap()) {
            if let ServerMessage::Stall(ev) = &m {
                events.push((**ev).clone());
            }
            state.apply(&m);
        }
        events
    }

    fn setup() -> (Converter, State) {
        let conv = Converter::new("test", Duration::from_millis(50), 1);
        let mut state = State::new();
        state.apply_hello(conv.hello());
        (conv, state)
    }

    #[test]
    fn a_poll_in_flight_is_a_stall_at_the_update_that_shows_it_past_the_threshold_and_ends_exactly() {
        let (mut conv, mut state) = setup();
        // At 1000 ms the poll started at 980 ms is 20 ms old: not a stall yet.
        let evs = feed(
            &mut conv,
            &mut state,
            &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(3, Some(980), Some(970), 5))]),
        );
        assert!(evs.is_empty(), "{evs:?}");
        assert!(state.is_ready());
        // No new stats for it at 1100: the poll is still running (its end would have marked them changed).
        let evs = feed(&mut conv, &mut state, &update(1100, vec![], vec![]));
        assert_eq!(evs.len(), 1, "{evs:?}");
        let ev = &evs[0];
        assert_eq!((ev.phase, ev.task_id, ev.elapsed), (StallPhase::Started, 7, Duration::from_millis(120)));
        assert_eq!(ev.location, Some(Location::new("src/app.rs", 10, 5)));
        assert!(ev.caught_in_flight);
        // Shown on our clock (5 ms ahead), so the dashboard's live timer starts at the poll's real start.
        assert_eq!(ev.at_unix_nanos, u64::try_from(BASE).unwrap() * 1_000_000_000 + 1105 * MS);
        // At 1200 it is 220 ms old: past 2x the threshold, an update.
        let evs = feed(&mut conv, &mut state, &update(1200, vec![], vec![]));
        assert_eq!(evs.iter().map(|e| e.phase).collect::<Vec<_>>(), vec![StallPhase::Updated]);
        // It ended at 1250: exactly 270 ms.
        let evs = feed(&mut conv, &mut state, &update(1300, vec![], vec![(1, stats(3, Some(980), Some(1250), 275))]));
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!((evs[0].phase, evs[0].elapsed), (StallPhase::Ended, Duration::from_millis(270)));
        // Counted once, in the task's, the location's and the runtime's figures.
        let t = state.task(7).expect("task");
        assert_eq!((t.stall_count, t.max_poll_nanos, t.busy_nanos), (1, 270 * MS, 275 * MS));
        assert_eq!(state.totals().stall_count, 1);
        assert_eq!(state.locations().filter_map(|l| l.stats.as_ref()).map(|s| s.stall_count).sum::<u64>(), 1);
        assert!(feed(&mut conv, &mut state, &update(1400, vec![], vec![])).is_empty());
    }

    #[test]
    fn a_stall_ended_by_the_next_poll_takes_its_length_from_the_busy_time_added() {
        let (mut conv, mut state) = setup();
        feed(
            &mut conv,
            &mut state,
            &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(4, Some(900), Some(890), 40))]),
        );
        // The poll from 900 ended, and the next one (polls 4 -> 5) started at 1150 and runs: 40 -> 190 ms busy,
        // so the first poll took 150 ms, not the 100 ms seen in flight.
        let evs = feed(&mut conv, &mut state, &update(1160, vec![], vec![(1, stats(5, Some(1150), Some(1050), 190))]));
        let ended: Vec<_> = evs.iter().filter(|e| e.phase == StallPhase::Ended).collect();
        assert_eq!(ended.len(), 1, "{evs:?}");
        assert_eq!(ended[0].elapsed, Duration::from_millis(150));
        // Several polls later instead: only the lower bound seen in flight is known.
        let (mut conv, mut state) = setup();
        feed(
            &mut conv,
            &mut state,
            &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(4, Some(900), Some(890), 40))]),
        );
        let evs = feed(&mut conv, &mut state, &update(1200, vec![], vec![(1, stats(9, Some(1190), Some(1180), 300))]));
        let ended: Vec<_> = evs.iter().filter(|e| e.phase == StallPhase::Ended).collect();
        assert_eq!(ended[0].elapsed, Duration::from_millis(100));
    }

    #[test]
    fn a_completed_long_poll_is_found_once_and_blocking_tasks_and_short_polls_never() {
        let (mut conv, mut state) = setup();
        let tasks = vec![task(1, 7, 10, "task"), task(2, 8, 20, "blocking"), task(3, 9, 30, "task")];
        let evs = feed(
            &mut conv,
            &mut state,
            &update(
                1000,
                tasks,
                vec![
                    // Completed between two updates: 80 ms.
                    (1, stats(2, Some(700), Some(780), 81)),
                    // spawn_blocking: its one "poll" is the whole closure, running for seconds.
                    (2, stats(1, Some(0), None, 0)),
                    // Short polls.
                    (3, stats(50, Some(990), Some(991), 20)),
                ],
            ),
        );
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!((evs[0].phase, evs[0].task_id, evs[0].caught_in_flight), (StallPhase::Ended, 7, false));
        assert_eq!(evs[0].elapsed, Duration::from_millis(80));
        let evs = feed(&mut conv, &mut state, &update(5000, vec![], vec![(1, stats(2, Some(700), Some(780), 81))]));
        assert!(evs.is_empty(), "the same poll is not found twice, and blocking tasks never: {evs:?}");
        assert_eq!(state.task(9).map(|t| t.stall_count), Some(0));
    }

    #[test]
    fn a_dropped_task_is_finished_and_its_counts_stay_with_its_location() {
        let (mut conv, mut state) = setup();
        feed(
            &mut conv,
            &mut state,
            &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(2, Some(900), Some(901), 2))]),
        );
        let mut gone = stats(3, Some(950), Some(951), 3);
        gone.dropped_at = Some(ts(960));
        feed(&mut conv, &mut state, &update(1100, vec![], vec![(1, gone)]));
        assert!(state.task(7).is_none());
        assert_eq!(state.finished_tasks().next().map(|t| (t.id, t.poll_count)), Some((7, 3)));
        feed(
            &mut conv,
            &mut state,
            &update(1200, vec![task(2, 8, 10, "task")], vec![(2, stats(1, Some(1150), Some(1151), 1))]),
        );
        let loc = state.locations().find_map(|l| l.stats.clone()).expect("location stats");
        assert_eq!((loc.spawned_tasks, loc.live_tasks, loc.poll_count), (2, 1, 4));
        assert_eq!(state.totals().poll_count, 4);
    }

    #[test]
    fn console_timestamps_convert_exactly_and_refuse_nonsense() {
        let t = prost_types::Timestamp { seconds: 1_764_547_200, nanos: 123_456_789 };
        assert_eq!(timestamp_nanos(&t), Some(1_764_547_200_123_456_789));
        assert_eq!(timestamp_nanos(&prost_types::Timestamp { seconds: -1, nanos: 0 }), None);
        assert_eq!(timestamp_nanos(&prost_types::Timestamp { seconds: 1, nanos: 1_000_000_000 }), None);
        assert_eq!(timestamp_nanos(&prost_types::Timestamp { seconds: 1, nanos: -1 }), None);
        assert_eq!(duration_nanos(&prost_types::Duration { seconds: 2, nanos: 5 }), 2_000_000_005);
        assert_eq!(duration_nanos(&prost_types::Duration { seconds: -2, nanos: 0 }), 0);
        assert_eq!(span(10, 4), 0);
    }
}
