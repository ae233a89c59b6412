//! What a check found ([`Report`]): every stall the agent kept, exempted or counted, and the readable failure
//! message, the user's frames first.

use loopscope_wire::ci_record::{AllowList, Exemption};
use loopscope_wire::{FrameOrigin, StallEvent, StallKind, StallPhase, StallTime};
use std::fmt;
use std::time::Duration;

/// One stall in a report: its final event, and whether it counts against the check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedStall {
    /// The stall's latest event (its `Ended` event once the poll returned).
    pub event: StallEvent,
    /// Which allow-list entry exempts it, if any.
    pub allowed_by: Option<String>,
    /// The OS, not the code, made it a stall: its own time stayed under `max_poll` while its thread waited
    /// for a CPU (see [`Check::count_preemption`](super::Check::count_preemption)). Not counted unless `count_preemption` is set.
    pub delayed_by_os: bool,
}

impl CheckedStall {
    /// Whether the stall counts against the check: not allowed, not loopscope's own task, and not an OS delay
    /// (unless `count_preemption` asked for wall-time verdicts).
    fn counts(&self, count_preemption: bool) -> bool {
        self.allowed_by.is_none() && self.event.agent_task.is_none() && (count_preemption || !self.delayed_by_os)
    }
}

/// What a check found. Display it for a readable failure message.
#[derive(Debug, Clone)]
pub struct Report {
    pub(super) max_poll: Duration,
    pub(super) max_stalls: usize,
    pub(super) count_preemption: bool,
    pub(super) stalls: Vec<CheckedStall>,
    /// Stalls counted but not listed (more than the agent remembers, or found without details).
    pub(super) unlisted: u64,
}

impl Report {
    /// Every stall seen, allowed or not.
    pub fn all(&self) -> impl Iterator<Item = &CheckedStall> {
        self.stalls.iter()
    }

    /// The stalls that count against the check: not exempted by the allow-list, not delayed by the OS (unless
    /// [`Check::count_preemption`](super::Check::count_preemption)), and not loopscope's own tasks.
    pub fn stalls(&self) -> impl Iterator<Item = &StallEvent> {
        self.stalls.iter().filter(|s| s.counts(self.count_preemption)).map(|s| &s.event)
    }

    /// Stalls whose wall time passed `max_poll` only because the OS kept their thread waiting for a CPU; they
    /// don't count unless [`Check::count_preemption`](super::Check::count_preemption) is set.
    pub fn delayed_by_os(&self) -> impl Iterator<Item = &StallEvent> {
        self.stalls.iter().filter(|s| s.delayed_by_os && s.allowed_by.is_none()).map(|s| &s.event)
    }

    /// Stalls counted without details (beyond what the agent remembers); they count against the check.
    pub fn unlisted(&self) -> u64 {
        self.unlisted
    }

    /// The number of stalls that count against the check.
    pub fn violations(&self) -> u64 {
        self.stalls().count() as u64 + self.unlisted
    }

    /// Whether the check passes: no more than `max_stalls` violations.
    pub fn passed(&self) -> bool {
        self.violations() <= self.max_stalls as u64
    }

    /// Panics with the readable report unless the check passed.
    #[track_caller]
    pub fn assert_no_stalls(&self) {
        if !self.passed() {
            panic!("{self}");
        }
    }
}

pub(super) fn allowed_by(ev: &StallEvent, allow: &AllowList) -> Option<String> {
    allow.exempts(ev).map(|e| match e {
        Exemption::Spawn(a) => format!("allow_spawn {a:?}"),
        Exemption::Function(f) => format!("allow_fn {f:?}"),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.violations();
        if self.passed() && v == 0 {
            writeln!(f, "loopscope: no poll held its thread longer than {:?}", self.max_poll)?;
        } else {
            writeln!(
                f,
                "loopscope: {v} poll{} held a worker thread longer than max_poll = {:?}{}:",
                if v == 1 { "" } else { "s" },
                self.max_poll,
                if self.max_stalls > 0 { format!(" (up to {} tolerated)", self.max_stalls) } else { String::new() }
            )?;
        }
        for (i, s) in self.stalls.iter().filter(|s| s.counts(self.count_preemption)).enumerate() {
            writeln!(f)?;
            write_stall(f, i + 1, &s.event)?;
        }
        let delayed: Vec<_> = if self.count_preemption {
            Vec::new()
        } else {
            self.stalls.iter().filter(|s| s.delayed_by_os && s.counts(true)).collect()
        };
        if !delayed.is_empty() {
            let n = delayed.len();
            writeln!(
                f,
                "\n  {n} poll{} delayed by the OS, not by {} code (the machine was oversubscribed); not counted \
                 (count_preemption = true counts them):",
                if n == 1 { " was" } else { "s were" },
                if n == 1 { "its" } else { "their" }
            )?;
            for s in delayed.iter().take(5) {
                let loc = s.event.location.as_ref().map_or("unknown location".into(), ToString::to_string);
                let how = s.event.time.as_ref().map(StallTime::describe).unwrap_or_default();
                writeln!(f, "    {:.1?} at {loc}: {how}", s.event.elapsed)?;
            }
            if n > 5 {
                writeln!(f, "    ... and {} more", n - 5)?;
            }
        }
        let own = self.stalls.iter().filter(|s| s.event.agent_task.is_some()).count();
        if own > 0 {
            writeln!(f, "\n  {own} stall(s) of loopscope's own tasks (lag probes), not counted")?;
        }
        if self.unlisted > 0 {
            writeln!(f, "\n  ... and {} more stall(s) counted without details", self.unlisted)?;
        }
        let allowed: Vec<_> = self.stalls.iter().filter(|s| s.allowed_by.is_some()).collect();
        if !allowed.is_empty() {
            writeln!(f, "\n  {} stall(s) exempted by the allow-list:", allowed.len())?;
            for s in allowed {
                let loc = s.event.location.as_ref().map_or("unknown location".into(), ToString::to_string);
                writeln!(f, "    {:.1?} at {loc} ({})", s.event.elapsed, s.allowed_by.as_deref().unwrap_or_default())?;
            }
        }
        Ok(())
    }
}

/// How many frames of each stack a report shows: the user's frames first, then a few more for context.
const REPORT_FRAMES: usize = 12;

pub(super) fn write_stall(f: &mut fmt::Formatter<'_>, n: usize, ev: &StallEvent) -> fmt::Result {
    let loc = ev.location.as_ref().map_or("an unknown location".into(), ToString::to_string);
    let whose = match (ev.kind, ev.worker) {
        (StallKind::BlockInPlace, _) => "in block_in_place".to_string(),
        (_, Some(w)) => format!("on worker {w}"),
        (_, None) => format!("on thread {}", ev.thread.tid),
    };
    let still = if ev.phase == StallPhase::Ended { "" } else { " (still running at the end)" };
    writeln!(f, "  {n}. {:.1?}{still}: task {} spawned at {loc}, {whose}", ev.elapsed, ev.task_id)?;
    let Some(c) = &ev.culprit else {
        if !ev.caught_in_flight {
            writeln!(f, "     (found after it ended: no stack)")?;
        }
        return Ok(());
    };
    let mut how = c.classification.to_string();
    match &ev.time {
        Some(t) => how.push_str(&format!(" ({})", t.describe())),
        None => {
            if let Some(r) = c.on_cpu_ratio {
                how.push_str(&format!(", {:.0}% on CPU", r * 100.0));
            }
        }
    }
    writeln!(f, "     {how}")?;
    let frames = c.frames();
    if frames.is_empty() {
        if let Some(err) = c.samples.iter().find_map(|s| s.stack_error.as_deref()) {
            writeln!(f, "     (no stack: {err})")?;
        }
        return Ok(());
    }
    // The user's own frames first (innermost first), then the rest.
    let user: Vec<_> = frames.iter().filter(|fr| fr.origin == FrameOrigin::User).collect();
    let other = frames.len() - user.len();
    for (i, fr) in user.iter().take(REPORT_FRAMES).enumerate() {
        writeln!(f, "     {} {}", if i == 0 { "at" } else { "  " }, fr.display_short())?;
    }
    if other > 0 {
        writeln!(f, "     ({other} runtime/std frames not shown)")?;
    }
    Ok(())
}
