//! The agent thread (`loopscope-agent`). It owns every map and does everything slow, off the hot path and
//! off the watchdog:
//!
//! * turns watchdog flags into [`StallEvent`]s: names the location, applies the rate limit (counting what it
//!   suppresses), logs `tracing` warnings, and fans events out to subscribers;
//! * reclaims the finished tasks that went out to clients (`SEEN`; the hooks retire every other task's entry
//!   themselves): folds their final counts into their location's totals, lists them in the stream's next
//!   tick, and frees their table entries; keeps a bounded list of recently finished tasks, from those and from
//!   the ring the hooks fill;
//! * folds exited threads' counts into totals and forgets their slots;
//! * spawns the sentinel task that tells it when the runtime is dropped.
//!
//! It wakes on a watchdog message or every [`AGG_TICK`], never per event on the hot path.
//!
//! It reads the prober's messages and the shared state (tables, slots, counters), and writes stall events
//! (to subscribers, `recent_stalls` and the stream's outputs), the retired totals (`shared/retired.rs`) and
//! the latest runtime sample (`shared/sample.rs`, from `sampler.rs`); it drives the stream's outputs once
//! per sample interval.

pub(crate) mod sampler;

use crate::scan::pass::recent_finished;
use crate::scan::snapshot;
use crate::shared::tables::{FINISHED, LIVE, RingCursor, TERMINATING, TaskCounts};
use crate::shared::{AGENT_THREAD, Shared};
use crate::stream::outputs::Outputs;
use crate::sync::lock;
use crate::watch::probing::BusyVerdict;
use crate::watch::watchdog::{Flag, Verdict, WatchMsg};
use loopscope_wire::{StallEvent, StallPhase, ThreadInfo};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// The note about where stall reports went is printed once per process, not per runtime.
static STDERR_NOTE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How often finished tasks are reclaimed.
pub(crate) const AGG_TICK: Duration = Duration::from_millis(100);
/// How often the whole task table is swept for finished entries the queue missed.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

struct Open {
    event: StallEvent,
    delivered: bool,
    /// Looks at the stalled thread, the first taken when the stall was flagged.
    looks: Vec<crate::watch::probing::Look>,
    /// Stable mode: the watchdog's verdict to update, and the app's frames under the poll that confirmed the
    /// stall, by which later looks tell whether it still runs.
    busy: Option<(Arc<Verdict>, Option<crate::watch::probing::UserFrames>)>,
}

struct RateLimit {
    per_sec: u32,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn allow(&mut self) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let now = Instant::now();
        let cap = f64::from(self.per_sec);
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * cap).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct AgentThread {
    shared: Arc<Shared>,
    open: HashMap<u64, Open>,
    limit: RateLimit,
    suppressed_since: u64,
    /// When the rate limit last suppressed a report, and whether that quiet spell was already logged.
    last_suppressed: Option<Instant>,
    summary_logged: bool,
    pending: Vec<u32>,
    last_sweep: Instant,
    /// The stream: server, recording.
    outputs: Outputs,
    /// Ids of tasks reclaimed since the stream's last tick.
    freed: Vec<u64>,
    /// How far the list of finished tasks has read the hooks' ring.
    ring: RingCursor,
    /// Stable mode: per thread (its slot's address), the busy span (tagged sequence number) whose last candidate
    /// was rejected, and the run of agreeing stacks it ended on, for the span's next candidate to continue.
    carry: HashMap<usize, (u64, (crate::watch::probing::UserFrames, usize))>,
    /// Stalls that ended while the process's first stack was being symbolized, oldest first, with the time
    /// after which they stop waiting: their end events go out with names once the symbols are read, and
    /// meanwhile this thread goes on delivering (`probing::symbols_loading`).
    ending: Vec<(Open, Instant)>,
}

/// The longest an ended stall waits for the first symbols before this thread waits with it.
const ENDING_WAIT: Duration = Duration::from_secs(2);
/// How often the agent thread checks on the first symbols while stalls wait for them.
const ENDING_POLL: Duration = Duration::from_millis(5);

pub(crate) fn run(shared: Arc<Shared>, handle: Option<Handle>, rx: Receiver<WatchMsg>) {
    crate::shared::AGENT_THREAD.with(|f| f.set(true));
    let per_sec = shared.config.max_reports_per_second;
    let mut me = AgentThread {
        limit: RateLimit { per_sec, tokens: f64::from(per_sec), last: Instant::now() },
        open: HashMap::new(),
        suppressed_since: 0,
        last_suppressed: None,
        summary_logged: false,
        pending: Vec::new(),
        last_sweep: Instant::now(),
        outputs: Outputs::new(&shared),
        freed: Vec::new(),
        ring: RingCursor::default(),
        carry: HashMap::new(),
        ending: Vec::new(),
        shared,
    };
    let mut sampler = None;
    if let Some(h) = &handle {
        me.refresh_facts(h);
        me.outputs.refresh_hello(&me.shared);
        me.spawn_sentinel(h);
        sampler = Some(crate::agent_thread::sampler::Sampler::new(h.clone(), &me.shared));
    }
    let sample_interval = me.shared.config.sample_interval;
    let mut next_tick = Instant::now() + AGG_TICK;
    let mut next_sample = Instant::now();
    loop {
        if let Some(s) = &mut sampler
            && Instant::now() >= next_sample
        {
            let sample = s.sample(&me.shared);
            me.reclaim();
            me.outputs.tick(&me.shared, Some(&sample), &mut me.freed);
            *lock(&me.shared.runtime_sample) = Some(sample);
            next_sample += sample_interval;
            if next_sample < Instant::now() {
                next_sample = Instant::now() + sample_interval;
            }
        }
        let mut wake = if sampler.is_some() { next_tick.min(next_sample) } else { next_tick };
        if !me.ending.is_empty() {
            wake = wake.min(Instant::now() + ENDING_POLL);
        }
        let timeout = wake.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(msg) => me.on_msg(msg),
            Err(RecvTimeoutError::Timeout) => {}
            // The watchdog exited (runtime gone): drain, reclaim, and stop.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        me.finish_ending(false);
        if Instant::now() >= next_tick {
            if let Some(h) = &handle {
                me.refresh_facts(h);
                me.outputs.refresh_hello(&me.shared);
            }
            me.reclaim();
            me.log_suppression_summary();
            next_tick = Instant::now() + AGG_TICK;
        }
        // Agent handles, hooks and the two background threads all hold the Arc; when only the threads do,
        // nobody can observe the agent any more.
        if Arc::strong_count(&me.shared) <= 2 && me.shared.started.load(Relaxed) {
            me.shared.stop();
        }
    }
    me.finish_ending(true);
    me.reclaim();
    let last = lock(&me.shared.runtime_sample).clone();
    me.outputs.tick(&me.shared, last.as_ref(), &mut me.freed);
    me.outputs.finish(&me.shared, "the runtime shut down");
    drop(sampler);
    drop(handle);
    me.shared.slots.mark_agent_gone();
    // Closing the subscriber channels tells every subscriber the runtime is gone.
    lock(&me.shared.subscribers).clear();
    me.shared.drained.store(true, Release);
}

impl AgentThread {
    fn refresh_facts(&self, h: &Handle) {
        let mut f = lock(&self.shared.facts);
        f.flavor = Some(
            match h.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
                tokio::runtime::RuntimeFlavor::MultiThread => "multi_thread",
                _ => "other",
            }
            .to_string(),
        );
        let m = h.metrics();
        f.workers = Some(m.num_workers());
        #[cfg(tokio_unstable)]
        {
            f.worker_threads = (0..m.num_workers()).map(|i| m.worker_thread_id(i)).collect();
        }
    }

    /// Spawns a task that never completes. tokio drops every task when the runtime shuts down; the guard's
    /// drop then stops the agent's threads, which lets go of the runtime `Handle`.
    fn spawn_sentinel(&self, h: &Handle) {
        struct Guard(Arc<Shared>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.stop();
                // In CI mode the last records must reach the disk before `main` returns and the process exits
                // under the agent thread's feet; wait for it, briefly. (Never otherwise: the app's shutdown is
                // not ours to slow down.)
                if self.0.config.check_dir.is_some() && !AGENT_THREAD.with(std::cell::Cell::get) {
                    // Generous: on a loaded CI machine the last stacks may still be waiting for their names,
                    // and a record cut short fails the check with less to go on.
                    let end = Instant::now() + Duration::from_secs(10);
                    while !self.0.drained.load(Acquire) && Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        let guard = Guard(self.shared.clone());
        let j = h.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        self.shared.sentinel_task.store(crate::taskid::task_id(j.id()), Relaxed);
    }

    fn on_msg(&mut self, msg: WatchMsg) {
        match msg {
            WatchMsg::Started(flag) => self.started(*flag),
            WatchMsg::Late(flag) => self.late(*flag),
            WatchMsg::Sampled { stall_id, look, time } => {
                if let Some(open) = self.open.get_mut(&stall_id) {
                    open.looks.extend(look);
                    open.event.time = time.or(open.event.time.take());
                }
            }
            WatchMsg::Updated { stall_id, elapsed_ns, at_unix_nanos, look, time } => {
                let threshold = self.shared.config.stall_threshold;
                if let Some(look) = &look
                    && let Some(open) = self.open.get(&stall_id)
                    && let Some((_, frames)) = &open.busy
                    && crate::watch::probing::same_poll(look, frames.as_ref()) == Some(false)
                {
                    self.busy_poll_ended(stall_id);
                    return;
                }
                let Some(open) = self.open.get_mut(&stall_id) else { return };
                open.looks.extend(look);
                open.event.elapsed = Duration::from_nanos(elapsed_ns);
                open.event.at_unix_nanos = at_unix_nanos;
                open.event.time = time.or(open.event.time.take());
                // The stall is still running: don't wait for symbols (see probing.rs).
                open.event.culprit =
                    crate::watch::probing::culprit(&open.looks, false, open.event.time.as_ref(), threshold, false);
                // A stall whose start was rate-limited is still worth one report as it grows.
                open.event.phase = if open.delivered { StallPhase::Updated } else { StallPhase::Started };
                let ev = open.event.clone();
                self.remember(&ev, false);
                self.deliver_limited(stall_id, ev);
            }
            WatchMsg::Ended { stall_id, elapsed_ns, at_unix_nanos, time } => {
                let Some(mut open) = self.open.remove(&stall_id) else { return };
                open.event.phase = StallPhase::Ended;
                open.event.elapsed = Duration::from_nanos(elapsed_ns).max(open.event.elapsed);
                // The split of the whole poll, now that it ended; without a closing reading, the latest one.
                open.event.time = time.or(open.event.time.take());
                open.event.at_unix_nanos = at_unix_nanos;
                self.ended(open);
            }
        }
    }

    /// A stall whose poll ended: its end goes out now, or, while the process's first stack is symbolized on a
    /// thread of its own, once the names are read (`ending`), so that this thread goes on delivering meanwhile.
    fn ended(&mut self, open: Open) {
        if !open.looks.is_empty() && crate::watch::probing::symbols_loading() {
            self.ending.push((open, Instant::now() + ENDING_WAIT));
        } else {
            self.end(open);
        }
    }

    /// Sends the end of a stall whose poll ended: the final word on the culprit, with every stack symbolized
    /// (waiting for symbols if needed).
    fn end(&mut self, mut open: Open) {
        let threshold = self.shared.config.stall_threshold;
        if !open.looks.is_empty() {
            open.event.culprit =
                crate::watch::probing::culprit(&open.looks, true, open.event.time.as_ref(), threshold, true);
        } else if let Some(t) = &open.event.time {
            // Every look came after the poll ended (and was thrown away): the time split still tells.
            open.event.culprit = crate::watch::probing::culprit_from_time(t, threshold);
        }
        self.remember(&open.event, true);
        if open.delivered {
            // Never rate-limited: it closes a record the subscriber already has.
            open.event.suppressed = std::mem::take(&mut self.suppressed_since);
            self.deliver(&open.event);
        }
    }

    /// Sends the ends that waited for the first symbols, once they are read, or once waited for
    /// [`ENDING_WAIT`], or, with `all`, now (the runtime is gone: the last records must go out).
    fn finish_ending(&mut self, all: bool) {
        if self.ending.is_empty() {
            return;
        }
        let now = Instant::now();
        let ready = all || !crate::watch::probing::symbols_loading();
        // Oldest first, so that a stall's end never overtakes an earlier one's.
        let waited = if ready { self.ending.len() } else { self.ending.iter().take_while(|(_, t)| now >= *t).count() };
        let rest = self.ending.split_off(waited);
        for (open, _) in std::mem::replace(&mut self.ending, rest) {
            self.end(open);
        }
    }

    fn started(&mut self, mut f: Flag) {
        let mut looks: Vec<_> = f.look.take().into_iter().collect();
        let mut busy = None;
        if let Some(verdict) = f.confirm.take() {
            // Stable mode: a worker busy past the threshold; a stall only if the looks show one poll holding it.
            looks.append(&mut f.more_looks);
            let key = Arc::as_ptr(&f.slot) as usize;
            let carry = self.carry.get(&key).filter(|c| c.0 == f.span_seq).map(|c| &c.1);
            let (decided, carried) = crate::watch::probing::confirm_busy(&looks, f.span_ended, carry, f.motion);
            match carried {
                Some(c) => {
                    // One entry per thread that has a rejected span now; bounded all the same.
                    if self.carry.len() >= 256 {
                        self.carry.clear();
                    }
                    self.carry.insert(key, (f.span_seq, c));
                }
                None => {
                    self.carry.remove(&key);
                }
            }
            // Counted once decided, so that `rejected <= candidates` and a reader never sees one undecided.
            self.shared.busy_candidates.fetch_add(1, Relaxed);
            match decided {
                BusyVerdict::Stall { reason, block_in_place, frames } => {
                    tracing::debug!(target: "loopscope", stall_id = f.stall_id, "busy worker confirmed: {reason}");
                    self.shared.stall_count.fetch_add(1, Relaxed);
                    if block_in_place {
                        f.kind = loopscope_wire::StallKind::BlockInPlace;
                        f.worker = None;
                        self.shared.block_in_place_count.fetch_add(1, Relaxed);
                    }
                    verdict.set(Verdict::CONFIRMED);
                    busy = Some((verdict, frames));
                }
                BusyVerdict::NotOnePoll(why) => {
                    tracing::trace!(target: "loopscope", "busy worker not stalled: {why}");
                    self.shared.busy_rejected.fetch_add(1, Relaxed);
                    verdict.set(Verdict::REJECTED);
                    return;
                }
                BusyVerdict::NotWorker => {
                    self.shared.busy_rejected.fetch_add(1, Relaxed);
                    verdict.set(Verdict::NOT_WORKER);
                    return;
                }
            }
        }
        let mut event = self.event_from(&f, StallPhase::Started, true);
        let threshold = self.shared.config.stall_threshold;
        // A confirmed busy span's stacks were just symbolized to confirm it: names cost nothing more now.
        let wait = busy.is_some();
        event.culprit = crate::watch::probing::culprit(&looks, wait, event.time.as_ref(), threshold, false);
        self.remember(&event, false);
        self.open.insert(f.stall_id, Open { event: event.clone(), delivered: false, looks, busy });
        self.deliver_limited(f.stall_id, event);
    }

    /// Stable mode: a later look at a confirmed stall found the worker out of that poll, though it has not parked
    /// (it went on to other tasks, or a current-thread runtime's `block_on` returned): the stall ended between
    /// the last look that still saw it and this one. Its end is reported now, with the duration the last event
    /// gave (a lower bound), and the watchdog looks at the rest of the busy span afresh.
    fn busy_poll_ended(&mut self, stall_id: u64) {
        let Some(mut open) = self.open.remove(&stall_id) else { return };
        if let Some((verdict, _)) = &open.busy {
            verdict.set(Verdict::ENDED);
        }
        open.event.phase = StallPhase::Ended;
        open.event.at_unix_nanos = crate::os::unix_nanos();
        self.ended(open);
    }

    /// A stall found only after it ended: one `Ended` event.
    fn late(&mut self, f: Flag) {
        let mut event = self.event_from(&f, StallPhase::Ended, false);
        event.culprit = event
            .time
            .as_ref()
            .and_then(|t| crate::watch::probing::culprit_from_time(t, self.shared.config.stall_threshold));
        self.remember(&event, true);
        self.deliver_limited(f.stall_id, event);
    }

    fn event_from(&self, f: &Flag, phase: StallPhase, caught_in_flight: bool) -> StallEvent {
        let location = snapshot::location_of(&self.shared, f.location);
        StallEvent {
            stall_id: f.stall_id,
            phase,
            kind: f.kind,
            runtime_id: self.shared.id,
            worker: f.worker,
            thread: ThreadInfo { tid: f.slot.tid, name: f.slot.thread_name.clone() },
            task_id: f.task_id,
            location,
            elapsed: Duration::from_nanos(f.elapsed_ns),
            threshold: self.shared.config.stall_threshold,
            at_unix_nanos: f.at_unix_nanos,
            suppressed: 0,
            caught_in_flight,
            culprit: None,
            time: f.time.clone(),
            agent_task: f.agent_task.map(str::to_string),
        }
    }

    fn deliver_limited(&mut self, stall_id: u64, mut ev: StallEvent) {
        if self.limit.allow() {
            ev.suppressed = std::mem::take(&mut self.suppressed_since);
            if let Some(o) = self.open.get_mut(&stall_id) {
                o.delivered = true;
            }
            self.deliver(&ev);
        } else {
            self.suppressed_since += 1;
            self.last_suppressed = Some(Instant::now());
            self.summary_logged = false;
            self.shared.suppressed_reports.fetch_add(1, Relaxed);
        }
    }

    /// The next delivered event carries the suppressed count, but if none comes the log must still say so:
    /// once suppression has been quiet for a second, log one summary line.
    fn log_suppression_summary(&mut self) {
        let quiet = self.last_suppressed.is_some_and(|t| t.elapsed() >= Duration::from_secs(1));
        if quiet && !self.summary_logged && self.suppressed_since > 0 && self.shared.config.tracing {
            let line = format!(
                "{} stall reports were suppressed by the rate limit ({} per second); stall counts in snapshots \
                 are exact",
                self.suppressed_since, self.shared.config.max_reports_per_second
            );
            if self.reports_to_stderr() {
                eprintln!("loopscope: {line}");
            } else {
                tracing::warn!(target: "loopscope::stall", suppressed = self.suppressed_since, "{line}");
            }
            self.summary_logged = true;
        }
    }

    fn deliver(&mut self, ev: &StallEvent) {
        self.shared.stall_reports.fetch_add(1, Relaxed);
        if self.shared.config.tracing {
            if self.reports_to_stderr() {
                let suppressed = if ev.suppressed > 0 {
                    format!(" ({} similar reports suppressed)", ev.suppressed)
                } else {
                    String::new()
                };
                eprintln!("loopscope: {}{suppressed}", ev.summary());
            } else {
                log(ev);
            }
        }
        self.shared.publish(ev);
        self.outputs.stall(&self.shared, ev);
    }

    /// Whether reports go to stderr: asked for, or (`auto`) no `tracing` subscriber would show them. Asked per
    /// report, so a subscriber installed later (or a filter changed at run time) takes over.
    fn reports_to_stderr(&self) -> bool {
        let stderr = match self.shared.config.report {
            crate::config::ReportTo::Stderr => true,
            crate::config::ReportTo::Tracing => false,
            crate::config::ReportTo::Auto => !tracing::enabled!(target: "loopscope::stall", tracing::Level::WARN),
        };
        if stderr && self.shared.config.report == crate::config::ReportTo::Auto && !STDERR_NOTE.swap(true, Relaxed) {
            eprintln!(
                "loopscope: stall reports go to stderr because no tracing subscriber shows target \
                 `loopscope::stall` at WARN; enable it (e.g. RUST_LOG=warn,loopscope=warn) to get them as tracing \
                 events, or set LOOPSCOPE_REPORT=tracing|stderr|off"
            );
        }
        stderr
    }

    /// Keeps the latest state of every stall (rate-limited or not) for [`Agent::stalls`](crate::Agent::stalls).
    fn remember(&mut self, ev: &StallEvent, ended: bool) {
        self.outputs.stall_seen(ev);
        lock(&self.shared.recent_stalls).remember(ev, ended);
    }

    /// Harvests finished tasks into location totals and frees their entries; prunes exited threads.
    fn reclaim(&mut self) {
        let shared = self.shared.clone();
        let mut todo = std::mem::take(&mut self.pending);
        while let Some(idx) = shared.finished.pop() {
            todo.push(idx);
        }
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            // The queue can overflow in a spawn storm; a slow sweep finds what it missed.
            for i in shared.tasks.indexes() {
                if let Some(c) = shared.tasks.read(i)
                    && c.state == FINISHED
                    && c.seen
                {
                    todo.push(i as u32);
                }
            }
            todo.sort_unstable();
            todo.dedup();
        }
        let sentinel = shared.sentinel_task.load(Relaxed);
        let retain = shared.config.retain_finished;
        let mut agg = lock(&shared.agg);
        let keep = |agg: &mut crate::shared::retired::AggState, c: &TaskCounts| {
            if c.id != sentinel && retain > 0 {
                if agg.finished.len() >= retain {
                    agg.finished.pop_front();
                }
                agg.finished.push_back(recent_finished(c));
            }
        };
        // The tasks the hooks retired (their totals are folded already), newest last; at most the ring's
        // length, however many finished since the last pass.
        for c in shared.finished_ring.drain(&mut self.ring) {
            keep(&mut agg, &c);
        }
        for idx in todo {
            let Some(c) = shared.tasks.read(idx as usize) else { continue };
            // Only SEEN entries are queued, and only they are this thread's to free; the hooks retire the rest.
            if !c.seen {
                continue;
            }
            match c.state {
                FINISHED => {
                    // Folded and freed under the lock that scans hold: a scan counts the task live or in
                    // the totals, never both.
                    shared.locations.fold(c.location, &c);
                    keep(&mut agg, &c);
                    shared.tasks.free(idx as usize);
                    if c.id != sentinel {
                        self.freed.push(c.id);
                    }
                }
                // Its last poll is still running; look again next tick.
                TERMINATING => self.pending.push(idx),
                LIVE => {}
                _ => {}
            }
        }
        // Exited threads: fold their counts into totals and forget the slot.
        let retired = &mut agg.retired_workers;
        shared.slots.retain(|s| {
            if s.alive.load(Acquire) {
                return true;
            }
            retired.polls += s.polls.load(Relaxed);
            retired.busy_ns += s.busy_ns.load(Relaxed);
            retired.slow_polls += s.slow_polls.load(Relaxed);
            retired.untracked_hist.merge(&s.untracked_histogram());
            false
        });
    }
}

fn log(ev: &StallEvent) {
    let location = ev.location.as_ref().map(ToString::to_string).unwrap_or_else(|| "unknown".into());
    let phase = match ev.phase {
        StallPhase::Started => "started",
        StallPhase::Updated => "ongoing",
        StallPhase::Ended => "ended",
    };
    // The message reads well on its own; the fields are there for structured log search.
    tracing::warn!(
        target: "loopscope::stall",
        stall_id = ev.stall_id,
        phase,
        task_id = ev.task_id,
        location = %location,
        elapsed_ms = (ev.elapsed.as_secs_f64() * 1e4).round() / 10.0,
        "{}{}",
        ev.summary(),
        if ev.suppressed > 0 { format!(" ({} similar reports suppressed)", ev.suppressed) } else { String::new() }
    );
}
