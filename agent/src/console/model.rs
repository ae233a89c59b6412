//! The console's view of the stream, kept on the agent thread: every task the feed has sent, as console-api
//! `Task`s and `Stats`, built from the ticks (tasks that changed, the poll in flight on each worker, tasks
//! finished) and the stall events.
//!
//! tokio-console learns a task's identity once (`new_tasks`: id, metadata, fields, location) and its stats
//! whenever they change (`stats_update`). loopscope's data map onto them like this:
//!
//! * the task id is tokio's (tokio-console shows it in its ID column, through the `task.id` field); its span
//!   id is the same number, as loopscope has no spans;
//! * each spawn location is a `Metadata` of its own (a span named `runtime.spawn`, target `tokio::task`,
//!   as console-subscriber reports tokio's task spans), registered in `new_metadata` before any task uses it;
//! * polls, busy time and scheduled time (wake→poll latency, when tracked) are loopscope's own counters;
//! * the times of the last poll come from the samples: a poll in flight on a worker at a tick starts at the
//!   tick's time less its elapsed time, and is shown running (`last_poll_started > last_poll_ended`); a poll
//!   that ended between two ticks is dated to the later tick. `created_at` is when the feed first saw the
//!   task; `dropped_at` when it saw it finish. So times are good to a sample interval;
//! * a stall re-announces its task with a `loopscope.stall` field describing it ("blocked worker 0 for
//!   120.1ms (still running); blocked in syscall ..."), and makes its poll show as running from the moment it
//!   started. (tokio-console computes its warnings itself, from the stats; a stall of more than a second in a
//!   task's first poll also trips its "never yielded" warning.)
//!
//! Wakes are not counted by loopscope: a live task is reported holding one waker (so tokio-console's
//! lost-waker lint, which fires on a task with no waker, stays quiet), with no wakes.

use crate::config::Config;
use crate::console::hub::{Hub, TASKS_PER_UPDATE};
use console_api as api;
use console_api::instrument::Update;
use console_api::tasks::{self, TaskDetails, TaskUpdate};
use loopscope_wire::TaskState;
use loopscope_wire::proto::{TaskSample, Tick};
use loopscope_wire::{Location, LogHistogram, StallEvent, StallPhase};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Finished tasks kept to include (with their `dropped_at`) in the full state of a client that missed
/// their end; without it such a client would show them alive for good.
const FINISHED_KEPT: usize = 1024;

/// One task, as the console sees it.
#[derive(Debug, Clone)]
struct Entry {
    meta: u64,
    location: Option<Location>,
    created_at: SystemTime,
    first_poll: Option<SystemTime>,
    polls: u64,
    busy_nanos: u64,
    scheduled_nanos: u64,
    last_started: Option<SystemTime>,
    last_ended: Option<SystemTime>,
    /// Seen in flight on a worker at the last tick (or by a stall event since).
    in_flight: bool,
    dropped_at: Option<SystemTime>,
    /// The latest stall, described.
    stall: Option<String>,
    stall_count: u64,
    poll_histogram: LogHistogram,
    max_poll_nanos: u64,
}

impl Entry {
    fn new(meta: u64, location: Option<Location>, created_at: SystemTime) -> Entry {
        Entry {
            meta,
            location,
            created_at,
            first_poll: None,
            polls: 0,
            busy_nanos: 0,
            scheduled_nanos: 0,
            last_started: None,
            last_ended: None,
            in_flight: false,
            dropped_at: None,
            stall: None,
            stall_count: 0,
            poll_histogram: LogHistogram::default(),
            max_poll_nanos: 0,
        }
    }

    /// A sample from a tick at `now`.
    fn sample(&mut self, t: &TaskSample, now: SystemTime) {
        if t.poll_count > self.polls {
            let polls = t.poll_count - self.polls;
            let mean = Duration::from_nanos(t.busy_nanos.saturating_sub(self.busy_nanos) / polls);
            // The poll ended since the last tick; it started at least its mean length before. A poll seen in
            // flight keeps the start it was seen with.
            if !self.in_flight {
                let started = now.checked_sub(mean).unwrap_or(now);
                self.last_started = self.last_started.max(Some(started));
            }
            self.first_poll.get_or_insert(self.last_started.unwrap_or(now));
            self.last_ended = Some(now);
        }
        self.polls = t.poll_count;
        self.busy_nanos = t.busy_nanos;
        self.stall_count = t.stall_count;
        self.max_poll_nanos = t.max_poll_nanos;
        self.poll_histogram.clone_from(&t.poll_histogram);
        if let Some(s) = &t.schedule_latency {
            self.scheduled_nanos = s.total_nanos;
        }
        if t.state == TaskState::Finished && self.dropped_at.is_none() {
            self.dropped_at = Some(now);
        }
    }

    /// A poll in flight since `started`: it shows as running.
    fn poll_in_flight(&mut self, started: SystemTime) {
        self.in_flight = true;
        self.last_started = Some(started);
        self.first_poll.get_or_insert(started);
        if self.last_ended.is_some_and(|e| e >= started) {
            // The previous poll's end was dated to a tick, later than it was; it ended before this one began.
            self.last_ended = started.checked_sub(Duration::from_nanos(1));
        }
    }

    fn fields(&self, id: u64) -> Vec<api::Field> {
        let field = |name: &str, value: api::field::Value| api::Field {
            name: Some(api::field::Name::StrName(name.to_string())),
            value: Some(value),
            metadata_id: Some(api::MetaId { id: self.meta }),
        };
        let mut fields = vec![field("kind", "task".into()), field("task.id", id.into())];
        if let Some(l) = &self.location {
            fields.push(field("spawn.location", api::field::Value::StrVal(l.to_string())));
        }
        if self.stall_count > 0 {
            fields.push(field("loopscope.stalls", self.stall_count.into()));
        }
        if let Some(s) = &self.stall {
            fields.push(field("loopscope.stall", api::field::Value::StrVal(s.clone())));
        }
        fields
    }

    fn task(&self, id: u64) -> tasks::Task {
        tasks::Task {
            id: Some(api::Id { id }),
            metadata: Some(api::MetaId { id: self.meta }),
            kind: tasks::task::Kind::Spawn as i32,
            fields: self.fields(id),
            parents: Vec::new(),
            location: self.location.as_ref().map(location),
        }
    }

    fn stats(&self) -> tasks::Stats {
        let live = self.dropped_at.is_none();
        tasks::Stats {
            created_at: Some(self.created_at.into()),
            dropped_at: self.dropped_at.map(Into::into),
            wakes: 0,
            // Not counted by loopscope; one waker held while alive keeps tokio-console's lost-waker lint
            // from firing on every idle task.
            waker_clones: 1,
            waker_drops: u64::from(!live),
            last_wake: None,
            poll_stats: Some(api::PollStats {
                polls: self.polls,
                first_poll: self.first_poll.map(Into::into),
                last_poll_started: self.last_started.map(Into::into),
                last_poll_ended: self.last_ended.map(Into::into),
                busy_time: Some(proto_duration(self.busy_nanos)),
            }),
            self_wakes: 0,
            scheduled_time: Some(proto_duration(self.scheduled_nanos)),
        }
    }
}

fn proto_duration(nanos: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

fn location(l: &Location) -> api::Location {
    api::Location { file: Some(l.file.clone()), module_path: None, line: Some(l.line), column: Some(l.column) }
}

fn unix(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A stall, in a few words for the `loopscope.stall` field.
fn describe(ev: &StallEvent) -> String {
    let worker = ev.worker.map_or_else(|| "its thread".to_string(), |w| format!("worker {w}"));
    let (what, still) = match ev.phase {
        StallPhase::Started | StallPhase::Updated => ("has blocked", " (still running)"),
        StallPhase::Ended => ("blocked", ""),
    };
    let mut s = format!("{what} {worker} for {:.1?}{still}", ev.elapsed);
    if let Some(c) = &ev.culprit {
        s.push_str(&format!("; {}", c.classification));
        if let Some(f) = c.first_user_frame() {
            s.push_str(&format!(" in {}", f.display_short()));
        }
    }
    s
}

/// The most tasks a full state holds: the task table's bound and the finished tasks it retains (the view's
/// own bound on live entries), and the finished ones kept here ([`FINISHED_KEPT`]).
pub(crate) fn full_state_tasks(config: &Config) -> usize {
    max_tasks(config).saturating_add(FINISHED_KEPT)
}

fn max_tasks(config: &Config) -> usize {
    config.max_tasks.saturating_add(config.retain_finished)
}

/// What the console output keeps between ticks, on the agent thread.
#[derive(Debug)]
pub(crate) struct ConsoleModel {
    /// Tasks past this many are left out (counted in `dropped_events`): the task table's own bound.
    max_tasks: usize,
    /// The stream's location ids, from the ticks' `new_locations`.
    locations: HashMap<u32, Location>,
    /// One metadata per spawn location (plus one for tasks whose location is unknown).
    metas: HashMap<Option<Location>, u64>,
    all_meta: Vec<api::register_metadata::NewMetadata>,
    /// Registered since the last update sent.
    new_meta: Vec<api::register_metadata::NewMetadata>,
    tasks: HashMap<u64, Entry>,
    /// Tasks to announce again (new, or with a new stall) at the next tick.
    announce: HashSet<u64>,
    /// Tasks whose stats changed since the last tick.
    changed: HashSet<u64>,
    /// Tasks seen in flight at the last tick.
    flying: Vec<u64>,
    /// Tasks known only from a stall event so far, with the ticks since their stall ended. The feed never
    /// sends a task that was born and gone between two ticks, nor lists it as finished; one not sent within
    /// two ticks of its stall's end is such a task, and is shown finished.
    unconfirmed: HashMap<u64, u8>,
    finished: VecDeque<(u64, Entry)>,
    dropped_events: u64,
}

impl ConsoleModel {
    pub(crate) fn new(config: &Config) -> ConsoleModel {
        ConsoleModel {
            max_tasks: max_tasks(config),
            locations: HashMap::new(),
            metas: HashMap::new(),
            all_meta: Vec::new(),
            new_meta: Vec::new(),
            tasks: HashMap::new(),
            announce: HashSet::new(),
            changed: HashSet::new(),
            flying: Vec::new(),
            unconfirmed: HashMap::new(),
            finished: VecDeque::new(),
            dropped_events: 0,
        }
    }

    fn meta_for(&mut self, l: Option<&Location>) -> u64 {
        if let Some(id) = self.metas.get(&l.cloned()) {
            return *id;
        }
        let id = self.metas.len() as u64 + 1;
        let meta = api::Metadata {
            name: "runtime.spawn".to_string(),
            target: "tokio::task".to_string(),
            module_path: String::new(),
            location: l.map(location),
            kind: api::metadata::Kind::Span as i32,
            level: api::metadata::Level::Trace as i32,
            field_names: ["kind", "task.id", "spawn.location", "loopscope.stalls", "loopscope.stall"]
                .map(String::from)
                .to_vec(),
        };
        let new = api::register_metadata::NewMetadata { id: Some(api::MetaId { id }), metadata: Some(meta) };
        self.all_meta.push(new.clone());
        self.new_meta.push(new);
        self.metas.insert(l.cloned(), id);
        id
    }

    /// The task's entry, created (seen first at `at`) if new and there is room.
    fn entry(&mut self, id: u64, l: Option<&Location>, at: SystemTime) -> Option<&mut Entry> {
        // Sent by the feed now (a stall event marks it unconfirmed again afterwards, if it has to be).
        self.unconfirmed.remove(&id);
        if !self.tasks.contains_key(&id) {
            if self.tasks.len() >= self.max_tasks {
                self.dropped_events += 1;
                return None;
            }
            let meta = self.meta_for(l);
            self.tasks.insert(id, Entry::new(meta, l.cloned(), at));
            self.announce.insert(id);
        }
        self.tasks.get_mut(&id)
    }

    /// A stall event (every one, before the rate limit). loopscope's own tasks are left out, and so are
    /// stalls of unknown tasks (stable mode without `Agent::spawn`): the console has no task to show them on.
    pub(crate) fn stall(&mut self, ev: &StallEvent) {
        if ev.task_id == 0 || ev.agent_task.is_some() {
            return;
        }
        let at = unix(ev.at_unix_nanos);
        let started = at.checked_sub(ev.elapsed).unwrap_or(at);
        let known = self.tasks.contains_key(&ev.task_id) && !self.unconfirmed.contains_key(&ev.task_id);
        let Some(e) = self.entry(ev.task_id, ev.location.as_ref(), started) else { return };
        e.stall = Some(describe(ev));
        match ev.phase {
            StallPhase::Started | StallPhase::Updated => e.poll_in_flight(started),
            StallPhase::Ended => {
                if !e.in_flight || e.last_started.is_none() {
                    e.poll_in_flight(started);
                }
                e.in_flight = false;
                e.last_ended = Some(at);
                if ev.phase == StallPhase::Ended && ev.task_id != 0 {
                    e.stall_count = e.stall_count.max(1);
                }
            }
        }
        self.announce.insert(ev.task_id);
        self.changed.insert(ev.task_id);
        if !known {
            self.unconfirmed.insert(ev.task_id, 0);
        }
    }

    /// A tick: updates the tasks, and publishes the changes (or a full state) to the consoles.
    pub(crate) fn tick(&mut self, tick: &Tick, hub: &Hub) {
        let now = unix(tick.at_unix_nanos);
        for l in &tick.new_locations {
            self.locations.insert(l.id, l.location.clone());
        }
        for t in &tick.tasks {
            let l = self.locations.get(&t.location).cloned();
            if let Some(e) = self.entry(t.id, l.as_ref(), now) {
                e.sample(t, now);
                self.changed.insert(t.id);
            }
        }
        for id in &tick.finished {
            if let Some(e) = self.tasks.get_mut(id)
                && e.dropped_at.is_none()
            {
                e.dropped_at = Some(now);
                self.changed.insert(*id);
            }
        }
        // Tasks known only from their stall that the feed still has not sent: gone before a tick saw them.
        let mut gone = Vec::new();
        for (id, age) in &mut self.unconfirmed {
            match self.tasks.get_mut(id) {
                Some(e) if !e.in_flight && e.dropped_at.is_none() => {
                    *age += 1;
                    if *age > 2 {
                        e.dropped_at = Some(now);
                        self.changed.insert(*id);
                        gone.push(*id);
                    }
                }
                Some(_) => {}
                None => gone.push(*id),
            }
        }
        for id in gone {
            self.unconfirmed.remove(&id);
        }
        // The polls in flight now, and those that were at the last tick and ended since.
        let flying: Vec<(u64, u64)> =
            tick.workers.iter().filter_map(|w| w.current_poll.as_ref()).map(|p| (p.task_id, p.elapsed_nanos)).collect();
        for id in std::mem::take(&mut self.flying) {
            if !flying.iter().any(|(f, _)| *f == id)
                && let Some(e) = self.tasks.get_mut(&id)
                && e.in_flight
            {
                e.in_flight = false;
                e.last_ended = e.last_ended.max(Some(now));
                self.changed.insert(id);
            }
        }
        for (id, elapsed) in flying {
            if let Some(e) = self.tasks.get_mut(&id) {
                e.poll_in_flight(now.checked_sub(Duration::from_nanos(elapsed)).unwrap_or(now));
                self.changed.insert(id);
                self.flying.push(id);
            }
        }

        if hub.wants_updates() {
            let delta = self.delta(now);
            hub.publish(&delta, || self.full(now));
        }
        self.new_meta.clear();
        self.announce.clear();
        self.changed.clear();
        self.dropped_events = 0;

        // Finished tasks went out with their `dropped_at`; keep a bounded few for later full states.
        let done: Vec<u64> = self.tasks.iter().filter(|(_, e)| e.dropped_at.is_some()).map(|(id, _)| *id).collect();
        for id in done {
            if let Some(e) = self.tasks.remove(&id) {
                if self.finished.len() >= FINISHED_KEPT {
                    self.finished.pop_front();
                }
                self.finished.push_back((id, e));
            }
        }

        let watched = hub.detail_tasks();
        if !watched.is_empty() {
            hub.publish_details(|id| self.details(id, now));
        }
    }

    /// The changes since the last tick, in as many updates as it takes.
    fn delta(&self, now: SystemTime) -> Vec<Update> {
        let ids = self.announce.iter().chain(self.changed.iter().filter(|id| !self.announce.contains(id)));
        let items = ids.filter_map(|id| self.tasks.get(id).map(|e| (*id, e, self.announce.contains(id))));
        updates(now, self.new_meta.clone(), items, self.dropped_events)
    }

    /// Everything, for a console that connects or missed an update.
    fn full(&self, now: SystemTime) -> Vec<Update> {
        let items = self.tasks.iter().chain(self.finished.iter().map(|(id, e)| (id, e))).map(|(id, e)| (*id, e, true));
        updates(now, self.all_meta.clone(), items, 0)
    }

    fn details(&self, id: u64, now: SystemTime) -> Option<TaskDetails> {
        let e = self.tasks.get(&id).or_else(|| self.finished.iter().find(|(i, _)| *i == id).map(|(_, e)| e))?;
        Some(TaskDetails {
            task_id: Some(api::Id { id }),
            now: Some(now.into()),
            poll_times_histogram: histogram(&e.poll_histogram, e.max_poll_nanos)
                .map(tasks::task_details::PollTimesHistogram::Histogram),
            scheduled_times_histogram: None,
        })
    }
}

/// Updates carrying `items` (each task with its stats, and its `Task` when `announce`), at most
/// [`TASKS_PER_UPDATE`] tasks each; the first carries the metadata. Always at least one update, so that a
/// console's clock moves on even when nothing changed.
fn updates<'a>(
    now: SystemTime,
    meta: Vec<api::register_metadata::NewMetadata>,
    items: impl Iterator<Item = (u64, &'a Entry, bool)>,
    dropped_events: u64,
) -> Vec<Update> {
    let mut out = Vec::new();
    let mut current = TaskUpdate { dropped_events, ..TaskUpdate::default() };
    let mut n = 0;
    for (id, e, announce) in items {
        if n == TASKS_PER_UPDATE {
            out.push(std::mem::take(&mut current));
            n = 0;
        }
        if announce {
            current.new_tasks.push(e.task(id));
        }
        current.stats_update.insert(id, e.stats());
        n += 1;
    }
    out.push(current);
    let mut meta = Some(api::RegisterMetadata { metadata: meta });
    out.into_iter()
        .map(|t| Update {
            now: Some(now.into()),
            task_update: Some(t),
            resource_update: None,
            async_op_update: None,
            new_metadata: meta.take().filter(|m| !m.metadata.is_empty()),
        })
        .collect()
}

/// A task's poll-time histogram as tokio-console reads it: an HdrHistogram in its V2 serialization. Each
/// of loopscope's power-of-two buckets is recorded at its middle, clamped to the longest poll.
fn histogram(h: &LogHistogram, max_nanos: u64) -> Option<tasks::DurationHistogram> {
    let high = max_nanos.max(2);
    let mut hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, high, 2).ok()?;
    for (i, &n) in h.counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let (lo, hi) = h.bucket_range(i);
        let lo = u64::try_from(lo.as_nanos()).unwrap_or(u64::MAX);
        let mid = hi.map_or(lo, |hi| lo / 2 + u64::try_from(hi.as_nanos()).unwrap_or(u64::MAX) / 2);
        hdr.record_n(mid.clamp(1, high), n).ok()?;
    }
    let mut raw = Vec::new();
    hdrhistogram::serialization::Serializer::serialize(
        &mut hdrhistogram::serialization::V2Serializer::new(),
        &hdr,
        &mut raw,
    )
    .ok()?;
    Some(tasks::DurationHistogram { raw_histogram: raw, max_value: high, high_outliers: 0, highest_outlier: None })
}

#[cfg(test)]
mod tests;
