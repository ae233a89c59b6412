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
use console_api::tasks::Task;
use loopscope_wire::proto::{
    AgentCapabilities, FullState, GlobalSample, LocationInfo, LocationSample, PROTOCOL_VERSION, ServerHello,
    ServerMessage, TaskSample, Tick, full_state_messages,
};
use loopscope_wire::{
    Classification, Culprit, Dropped, Location, ProbeStatus, RuntimeInfo, StallEvent, StallKind, StallPhase,
    ThreadInfo, Totals,
};
use std::collections::HashMap;
use std::time::Duration;

mod task;
pub use task::timestamp_nanos;
use task::{ConsoleTask, Kind, OpenStall, span};

/// What this mode cannot show, in one line for the status line.
pub const CONSOLE_MODE_NOTE: &str = "console mode: from console-subscriber; no stacks, classification or probes";

/// Why a console stall has no culprit analysis, for its detail pane.
const NO_CULPRIT: &str = "console mode: console-subscriber reports when polls start and end, not what the thread \
                          does (no stack, system call or CPU accounting)";

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
    let l = out.entry(t.location).or_insert_with(|| LocationSample::new(t.location));
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
mod tests;
