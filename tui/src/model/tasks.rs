//! The by-task table: each task's counters with what the sample has not caught up with folded in (the poll
//! in progress, stalls from the log), finished tasks, and an order of which only the shown window is sorted.

use super::{live_stall, location_matches, p99_nanos};
use crate::view::SortKey;
use loopscope_wire::TaskState;
use loopscope_wire::proto::TaskSample;
use loopscope_wire::state::State;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Duration;

/// What the stall log says of one task: its stalls (in the log), the time the ended ones took, and the
/// longest. The agent's task samples may predate a stall: a task that stalls and then finishes between two
/// samples is sent as "0 polls" and then only as finished (its final counts go to its location), so the log is
/// the one record of that poll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStalls {
    /// Stalls of the task in the log.
    pub count: u64,
    /// Stalls that ended (their polls are complete).
    pub ended: u64,
    /// Time the ended stalls took.
    pub ended_nanos: u64,
    /// The longest stall, ended or not.
    pub longest_nanos: u64,
}

/// One row of the by-task table: a task's counters with the poll it is in right now and its stalls from the
/// log folded in, so a task that is stalling (or stalled and ended) does not read `polls 0 busy 0ns`. Every
/// figure is a lower bound of the truth, never more.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskRow<'a> {
    /// The counters the agent sent (completed polls only).
    pub task: &'a TaskSample,
    /// How long its poll in progress has run, when a worker is polling it now.
    pub running: Option<Duration>,
    /// Whether the task has finished (kept for display: `LOOPSCOPE_RETAIN_FINISHED`).
    pub finished: bool,
    /// What the stall log knows of it.
    pub stalls: TaskStalls,
}

impl TaskRow<'_> {
    fn running_nanos(&self) -> u64 {
        self.running.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Polls, counting the one in progress (and stalls the sample has not counted yet).
    pub fn polls(&self) -> u64 {
        (self.task.poll_count + u64::from(self.running.is_some())).max(self.stalls.ended)
    }

    /// Time spent polling, counting the poll in progress so far.
    pub fn busy_nanos(&self) -> u64 {
        self.task.busy_nanos.saturating_add(self.running_nanos()).max(self.stalls.ended_nanos)
    }

    /// The longest poll, the one in progress included.
    pub fn max_poll_nanos(&self) -> u64 {
        self.task.max_poll_nanos.max(self.running_nanos()).max(self.stalls.longest_nanos)
    }

    /// Stalls: as counted by the agent, or as many as the log shows.
    pub fn stall_count(&self) -> u64 {
        self.task.stall_count.max(self.stalls.count)
    }

    /// Whether the figures include polls the agent's sample has not counted (in progress, or from the log).
    pub fn includes_unsampled(&self) -> bool {
        self.running.is_some() || self.stalls.ended > self.task.poll_count
    }
}

/// What the stall log knows, by task id.
pub fn stalls_by_task(state: &State) -> HashMap<u64, TaskStalls> {
    let mut m: HashMap<u64, TaskStalls> = HashMap::new();
    for e in state.stalls().filter(|e| e.latest.agent_task.is_none()) {
        let s = m.entry(e.latest.task_id).or_default();
        let nanos = u64::try_from(e.latest.elapsed.as_nanos()).unwrap_or(u64::MAX);
        s.count += 1;
        if e.ended {
            s.ended += 1;
            s.ended_nanos = s.ended_nanos.saturating_add(nanos);
        }
        s.longest_nanos = s.longest_nanos.max(nanos);
    }
    m
}

/// The polls in progress now, by task: (task id, how long it has run as of `now_unix_nanos`). A poll past
/// the stall threshold ticks with the clock (see [`live_stall`]); a shorter one is as old as the sample says.
pub fn polls_in_flight(state: &State, now_unix_nanos: u64) -> Vec<(u64, Duration)> {
    state
        .workers()
        .filter_map(|w| {
            // A stall event may arrive before the sample that shows its poll: the stall names the task then.
            if let Some(s) = live_stall(state, w, now_unix_nanos) {
                return Some((s.task_id, s.elapsed));
            }
            let p = w.sample.current_poll.as_ref()?;
            Some((p.task_id, Duration::from_nanos(p.elapsed_nanos)))
        })
        .collect()
}

fn task_key(t: &TaskRow<'_>, sort: SortKey) -> u64 {
    match sort {
        SortKey::Busy => t.busy_nanos(),
        SortKey::Polls => t.polls(),
        SortKey::MaxPoll => t.max_poll_nanos(),
        SortKey::P99Poll => p99_nanos(&t.task.poll_histogram),
        SortKey::SlowPolls => t.task.slow_poll_count,
        SortKey::SchedP99 => t.task.schedule_latency.as_ref().map_or(0, |l| p99_nanos(&l.histogram)),
        SortKey::Stalls => t.stall_count(),
        SortKey::Name => t.task.id,
    }
}

/// Which tasks the by-task table lists, besides the filter.
#[derive(Clone, Debug, Default)]
pub struct TaskScope {
    /// Also list the recently finished tasks the agent kept (a task that stalled and then ended stays
    /// findable).
    pub finished: bool,
    /// Polls in progress, from [`polls_in_flight`].
    pub in_flight: Vec<(u64, Duration)>,
    /// Tasks the workers or the stall log name but no task sample has described yet: polled now (a task is
    /// sent with the first tick after it changes, and a stall may come first), or stalled and gone before any
    /// tick listed them (`true`: listed with the finished tasks).
    pub unsampled: Vec<(TaskSample, bool)>,
}

impl TaskScope {
    /// The scope for `state` as of `now_unix_nanos`.
    pub fn new(state: &State, now_unix_nanos: u64, finished: bool) -> TaskScope {
        let in_flight = polls_in_flight(state, now_unix_nanos);
        let known = |id: u64| state.task(id).is_some() || state.finished_tasks().any(|t| t.id == id);
        let mut unsampled: Vec<(TaskSample, bool)> = Vec::new();
        let location_id = |loc: Option<&loopscope_wire::Location>| {
            state.locations().find(|l| Some(&l.location) == loc).map_or(u32::MAX, |l| l.id)
        };
        for w in state.workers() {
            let polled = match live_stall(state, w, now_unix_nanos) {
                Some(s) => Some((s.task_id, location_id(s.location.as_ref()))),
                None => w.sample.current_poll.as_ref().map(|p| (p.task_id, p.location.unwrap_or(u32::MAX))),
            };
            if let Some((id, loc)) = polled
                && !known(id)
                && !unsampled.iter().any(|(t, _)| t.id == id)
            {
                unsampled.push((TaskSample::new(id, loc), false));
            }
        }
        if finished {
            for e in state.stalls().filter(|e| e.ended && e.latest.agent_task.is_none()) {
                let id = e.latest.task_id;
                if known(id) || unsampled.iter().any(|(t, _)| t.id == id) {
                    continue;
                }
                let mut t = TaskSample::new(id, location_id(e.latest.location.as_ref()));
                t.state = loopscope_wire::TaskState::Finished;
                unsampled.push((t, true));
            }
        }
        TaskScope { finished, in_flight, unsampled }
    }
}

/// (sort key, task id, task): small, because every task of every frame is moved around by the partial sort.
/// The id breaks ties, so the order is stable from frame to frame (an id is listed once: live or finished).
type Ranked<'a> = (u64, u64, &'a TaskSample);

/// Tasks, filtered and ordered, of which only the shown window is ever fully sorted.
#[derive(Debug)]
pub struct TaskOrder<'a> {
    rows: Vec<Ranked<'a>>,
    descending: bool,
    live: usize,
    in_flight: &'a [(u64, Duration)],
    /// What the stall log knows, sorted by task id.
    logged: Vec<(u64, TaskStalls)>,
}

impl<'a> TaskOrder<'a> {
    /// Filters the tasks of `state` (case-insensitive substring of the spawn location, or of the task id)
    /// and prepares them for ordering by `sort`.
    pub fn new(state: &'a State, filter: &str, sort: SortKey, descending: bool, scope: &'a TaskScope) -> Self {
        let needle = filter.trim().to_lowercase();
        let locs = (!needle.is_empty()).then(|| location_matches(state, &needle));
        let id_filter = !needle.is_empty() && needle.bytes().all(|b| b.is_ascii_digit());
        let keep = |t: &TaskSample| match &locs {
            None => true,
            Some(m) => {
                m.get(t.location as usize).copied().unwrap_or(false)
                    || (id_filter && t.id.to_string().contains(&needle))
            }
        };
        // Looked up for every task of every frame (100,000 of them): a short sorted list (the log holds at
        // most a few hundred stalls) and a binary search cost less than hashing each id.
        let mut logged: Vec<(u64, TaskStalls)> = stalls_by_task(state).into_iter().collect();
        logged.sort_unstable_by_key(|(id, _)| *id);
        let mut order =
            TaskOrder { rows: Vec::new(), descending, live: 0, in_flight: &scope.in_flight, logged: Vec::new() };
        order.logged = logged;
        let rank = |o: &TaskOrder<'a>, t: &'a TaskSample| (task_key(&o.row(t), sort), t.id, t);
        let mut rows: Vec<Ranked<'a>> = Vec::with_capacity(state.tasks().len());
        rows.extend(state.tasks().values().filter(|t| keep(t)).map(|t| rank(&order, t)));
        rows.extend(scope.unsampled.iter().filter(|(t, done)| !done && keep(t)).map(|(t, _)| rank(&order, t)));
        let live = rows.len();
        if scope.finished {
            rows.extend(scope.unsampled.iter().filter(|(t, done)| *done && keep(t)).map(|(t, _)| rank(&order, t)));
            rows.extend(
                state
                    .finished_tasks()
                    .filter(|t| keep(t) && !state.tasks().contains_key(&t.id))
                    .map(|t| rank(&order, t)),
            );
        }
        order.rows = rows;
        order.live = live;
        order
    }

    /// A task's row: its sample with its poll in progress and its stalls from the log.
    fn row(&self, t: &'a TaskSample) -> TaskRow<'a> {
        let finished = t.state == TaskState::Finished;
        let running = if finished { None } else { self.in_flight.iter().find(|(id, _)| *id == t.id).map(|(_, d)| *d) };
        let stalls = if self.logged.is_empty() {
            TaskStalls::default()
        } else {
            self.logged
                .binary_search_by_key(&t.id, |(id, _)| *id)
                .map_or_else(|_| TaskStalls::default(), |i| self.logged[i].1)
        };
        TaskRow { task: t, running, finished, stalls }
    }

    /// Tasks that passed the filter.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Of those, the live ones.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Whether no task passed the filter.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn cmp(desc: bool) -> impl Fn(&Ranked<'_>, &Ranked<'_>) -> Ordering + Copy {
        move |a, b| {
            let by_key = if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) };
            by_key.then(a.1.cmp(&b.1))
        }
    }

    /// Where task `id` is in the order, if it passed the filter: O(n), without sorting (the selection
    /// follows its task as the order changes).
    pub fn position(&self, id: u64) -> Option<usize> {
        let cmp = Self::cmp(self.descending);
        let me = self.rows.iter().find(|r| r.1 == id)?;
        Some(self.rows.iter().filter(|r| cmp(r, me) == Ordering::Less).count())
    }

    /// Rows `start..start + len` of the ordered list. Costs O(n + (start + len) log(start + len)): the rows
    /// after the window are never sorted.
    pub fn window(&mut self, start: usize, len: usize) -> Vec<TaskRow<'a>> {
        let cmp = Self::cmp(self.descending);
        let end = start.saturating_add(len).min(self.rows.len());
        if start >= end {
            return Vec::new();
        }
        if end < self.rows.len() {
            self.rows.select_nth_unstable_by(end, cmp);
        }
        self.rows[..end].sort_unstable_by(cmp);
        self.rows[start..end].iter().map(|r| self.row(r.2)).collect()
    }
}
