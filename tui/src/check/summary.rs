//! What a check found: the stalls of every agent grouped by culprit, notes about the run, the exit code, and
//! the text summary printed at the end.

use loopscope_wire::check::{AgentReport, AllowList, Exemption};
use loopscope_wire::{Frame, FrameOrigin, Location, StallEvent, StallKind, StallSummary};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitStatus;
use std::time::Duration;

/// How many of the user's frames a group's stack shows.
const USER_FRAMES: usize = 12;
/// How many frames inside the blocking call (above the innermost user frame) a group's stack shows.
const INNER_FRAMES: usize = 4;
/// How many process/runtime names a group lists before "and N more".
const WHERE_NAMES: usize = 4;

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl From<ExitStatus> for ChildEnd {
    fn from(status: ExitStatus) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = status.signal() {
                return ChildEnd::Signaled { signal, core_dumped: status.core_dumped() };
            }
        }
        // Without a code and without a signal (not possible on Unix), call it a failure.
        ChildEnd::Exited(status.code().unwrap_or(1))
    }
}

impl ChildEnd {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub(crate) fn code(self) -> u8 {
        match self {
            ChildEnd::Exited(c) => u8::try_from(c & 0xff).unwrap_or(1),
            ChildEnd::Signaled { signal, .. } => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        }
    }

    /// Whether the command succeeded.
    pub(crate) fn success(self) -> bool {
        self == ChildEnd::Exited(0)
    }

    /// Whether a signal killed the command.
    pub(crate) fn crashed(self) -> bool {
        matches!(self, ChildEnd::Signaled { .. })
    }

    /// In words, e.g. `exited with code 3`, `was killed by signal 11 (SIGSEGV, core dumped)`.
    pub(crate) fn describe(self) -> String {
        match self {
            ChildEnd::Exited(c) => format!("exited with code {c}"),
            ChildEnd::Signaled { signal, core_dumped } => {
                let name = signal_name(signal).map_or(String::new(), |n| format!(" ({n}{})", dumped(core_dumped)));
                let name = if name.is_empty() && core_dumped { " (core dumped)".to_string() } else { name };
                format!("was killed by signal {signal}{name}")
            }
        }
    }
}

fn dumped(core_dumped: bool) -> &'static str {
    if core_dumped { ", core dumped" } else { "" }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// One stall in a group: the agent that saw it (an index into [`Outcome::agents`]) and its latest event.
#[derive(Clone, Debug)]
pub(crate) struct GroupedStall {
    pub(crate) agent: usize,
    pub(crate) stall: StallSummary,
}

/// The stalls that share a culprit: the same kind, spawn location and innermost user function.
#[derive(Clone, Debug)]
pub(crate) struct CulpritGroup {
    pub(crate) kind: StallKind,
    pub(crate) location: Option<Location>,
    /// The innermost user function on the stack, when a stack was captured.
    pub(crate) function: Option<String>,
    /// That function's source file, shortened as the stack lines show it (`Frame::short_file`), when the
    /// debug info has it.
    pub(crate) file: Option<String>,
    /// Its stalls, worst first.
    pub(crate) stalls: Vec<GroupedStall>,
}

impl CulpritGroup {
    /// The longest stall.
    pub(crate) fn worst(&self) -> &StallEvent {
        // Groups are never empty, and sorted worst first.
        &self.stalls[0].stall.last
    }

    /// The number of stalls.
    pub(crate) fn count(&self) -> usize {
        self.stalls.len()
    }

    /// A one-line name: the function (or the spawn location when no stack was captured). An anonymous body
    /// (`{async fn}`, `{closure}`: a release build's debug info may name an inlined body no better) gets its
    /// source file, so the heading still says where to look.
    pub(crate) fn title(&self) -> String {
        let loc = self.location.as_ref().map_or_else(|| "an unknown location".to_string(), ToString::to_string);
        let what = match (&self.function, &self.file) {
            (Some(f), Some(file)) if f.starts_with('{') => format!("{f} in {file}"),
            (Some(f), _) => f.clone(),
            (None, _) => format!("task spawned at {loc}"),
        };
        match self.kind {
            StallKind::WorkerBlocked => what,
            StallKind::BlockInPlace => format!("{what} (in block_in_place)"),
            StallKind::BlockOn => format!("{what} (a block_on body)"),
        }
    }

    /// The distinct classifications, most frequent first, e.g. `blocked in syscall clock_nanosleep`.
    pub(crate) fn classifications(&self) -> Vec<String> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in &self.stalls {
            let c = s.stall.last.culprit.as_ref().map_or_else(
                || {
                    if s.stall.last.caught_in_flight {
                        "unclassified (no probe data)".to_string()
                    } else {
                        "unclassified (found after it ended)".to_string()
                    }
                },
                |c| c.classification.to_string(),
            );
            *counts.entry(c).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.into_iter().map(|(c, _)| c).collect()
    }

    /// The worst stall's stack with the user's frames first: the user frames (innermost first), then the
    /// frames inside the blocking call above them. Empty without a stack.
    pub(crate) fn stack(&self) -> StackView<'_> {
        StackView::of(self.stalls.iter().map(|s| &s.stall.last).find(|e| e.culprit.is_some()))
    }
}

/// A stack arranged for reading: the user's frames first.
#[derive(Debug, Default)]
pub(crate) struct StackView<'a> {
    /// The user's frames, innermost first.
    pub(crate) user: Vec<&'a Frame>,
    /// The frames above the innermost user frame (the blocking call itself: `std::thread::sleep`, a lock).
    pub(crate) inner: Vec<&'a Frame>,
    /// Frames not shown.
    pub(crate) hidden: usize,
    /// Why there is no stack, when there is none.
    pub(crate) missing: Option<String>,
}

impl<'a> StackView<'a> {
    fn of(event: Option<&'a StallEvent>) -> StackView<'a> {
        let Some(culprit) = event.and_then(|e| e.culprit.as_ref()) else {
            return StackView { missing: Some("no stack was captured".into()), ..StackView::default() };
        };
        let frames = culprit.frames();
        if frames.is_empty() {
            let why = culprit.samples.iter().find_map(|s| s.stack_error.clone());
            return StackView {
                missing: Some(why.unwrap_or_else(|| "no stack was captured".into())),
                ..StackView::default()
            };
        }
        let shown: Vec<&Frame> = frames.iter().filter(|f| f.origin != FrameOrigin::Probe).collect();
        let first_user = shown.iter().position(|f| f.origin == FrameOrigin::User);
        let user: Vec<&Frame> =
            shown.iter().copied().filter(|f| f.origin == FrameOrigin::User).take(USER_FRAMES).collect();
        let inner_all = first_user.map_or(&shown[..], |i| &shown[..i]);
        // The frames nearest the user's code say what it called; the innermost ones (libc) say less.
        let inner: Vec<&Frame> = inner_all.iter().rev().take(INNER_FRAMES).rev().copied().collect();
        let hidden = shown.len() - user.len() - inner.len();
        StackView { user, inner, hidden, missing: None }
    }
}

/// Everything a check found.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) max_poll: Duration,
    pub(crate) command: Vec<String>,
    pub(crate) child: ChildEnd,
    pub(crate) agents: Vec<AgentReport>,
    /// Stalls past `max_poll`, by culprit, worst first.
    pub(crate) groups: Vec<CulpritGroup>,
    /// Stalls counted past the agents' thresholds but without details (suppressed by the agent's rate limit,
    /// or dropped); they count against the check when the agent's threshold is at least `max_poll`.
    pub(crate) unlisted: u64,
    /// Stalls shorter than `max_poll`, from agents whose own threshold is lower (set in code, ignoring the
    /// environment); they don't count.
    pub(crate) below_limit: u64,
    /// Stalls past `max_poll` that the allow-list exempts, by the option that matched (`--allow-fn "x"`),
    /// in the order they first matched; they don't count.
    pub(crate) allowed: Vec<(String, u64)>,
    /// Polls whose wall time passed `max_poll` only because the OS kept their thread waiting for a CPU (their
    /// own time stayed under it), longest first; they don't count unless `--count-preemption`.
    pub(crate) delayed_by_os: Vec<GroupedStall>,
    /// Stalls of loopscope's own tasks (its lag probes): never the app's, never counted.
    pub(crate) agent_tasks: u64,
    /// `--count-preemption`: judge by wall time, counting the OS's delays as stalls.
    pub(crate) count_preemption: bool,
    /// How long the command ran.
    pub(crate) elapsed: Duration,
}

impl Outcome {
    /// Groups every agent's stalls by culprit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        max_poll: Duration,
        command: Vec<String>,
        child: ChildEnd,
        agents: Vec<AgentReport>,
        elapsed: Duration,
        allow: &AllowList,
        count_preemption: bool,
    ) -> Outcome {
        type Key = (bool, Option<Location>, Option<String>, Option<String>);
        let mut groups: BTreeMap<Key, CulpritGroup> = BTreeMap::new();
        let mut unlisted = 0;
        let mut below_limit = 0;
        let mut allowed: Vec<(String, u64)> = Vec::new();
        let mut delayed_by_os = Vec::new();
        let mut agent_tasks = 0;
        for (i, agent) in agents.iter().enumerate() {
            if agent.info.stall_threshold() >= max_poll || agent.info.stall_threshold_nanos == 0 {
                unlisted += agent.unlisted_stalls();
            }
            for s in &agent.stalls {
                if s.last.elapsed < max_poll {
                    below_limit += 1;
                    continue;
                }
                if s.last.agent_task.is_some() {
                    agent_tasks += 1;
                    continue;
                }
                if !count_preemption && s.last.delayed_by_os(max_poll) {
                    delayed_by_os.push(GroupedStall { agent: i, stall: s.clone() });
                    continue;
                }
                if let Some(e) = allow.exempts(&s.last) {
                    let by = match e {
                        Exemption::Spawn(a) => format!("--allow-spawn {a:?}"),
                        Exemption::Function(f) => format!("--allow-fn {f:?}"),
                    };
                    match allowed.iter_mut().find(|(b, _)| *b == by) {
                        Some((_, n)) => *n += 1,
                        None => allowed.push((by, 1)),
                    }
                    continue;
                }
                let first_user = s.last.culprit.as_ref().and_then(|c| c.first_user_frame());
                let function = first_user.map(|f| f.function.clone().unwrap_or_else(|| format!("{:#x}", f.ip)));
                // The file too: two places that block under one short name (`{async_block#0}`, a closure) are
                // two culprits, never one. Not the line: a spinning function is caught on different lines.
                let site = first_user.and_then(|f| f.file.clone());
                let key =
                    (s.last.kind == StallKind::BlockInPlace, s.last.location.clone(), function.clone(), site.clone());
                groups
                    .entry(key)
                    .or_insert_with(|| CulpritGroup {
                        kind: s.last.kind,
                        location: s.last.location.clone(),
                        function,
                        file: first_user.and_then(Frame::short_file),
                        stalls: Vec::new(),
                    })
                    .stalls
                    .push(GroupedStall { agent: i, stall: s.clone() });
            }
        }
        let mut groups: Vec<CulpritGroup> = groups.into_values().collect();
        for g in &mut groups {
            g.stalls.sort_by_key(|s| std::cmp::Reverse(s.stall.last.elapsed));
        }
        groups.sort_by(|a, b| b.worst().elapsed.cmp(&a.worst().elapsed).then_with(|| b.count().cmp(&a.count())));
        delayed_by_os.sort_by_key(|s| std::cmp::Reverse(s.stall.last.elapsed));
        Outcome {
            max_poll,
            command,
            child,
            agents,
            groups,
            unlisted,
            below_limit,
            allowed,
            delayed_by_os,
            agent_tasks,
            count_preemption,
            elapsed,
        }
    }

    /// Stalls that count against the check.
    pub(crate) fn violations(&self) -> u64 {
        self.groups.iter().map(|g| g.count() as u64).sum::<u64>() + self.unlisted
    }

    /// Whether no poll passed the limit.
    pub(crate) fn passed(&self) -> bool {
        self.violations() == 0
    }

    /// 1 if any poll passed the limit; otherwise the command's own code; 2 when nothing reported and the
    /// command itself succeeded (the check checked nothing).
    pub(crate) fn exit_code(&self) -> u8 {
        if !self.passed() {
            1
        } else if !self.checked_anything() {
            // Nothing was checked: 2, whatever the command returned (its own 1 would read as "a poll
            // blocked"); the summary gives the command's own status.
            super::EXIT_ERROR
        } else {
            self.child.code()
        }
    }

    /// Whether any agent reported that can detect stalls.
    pub(crate) fn checked_anything(&self) -> bool {
        self.agents.iter().any(|a| a.info.no_stall_detection.is_none())
    }

    /// The distinct processes that reported.
    pub(crate) fn process_count(&self) -> usize {
        let mut pids: Vec<u32> = self.agents.iter().map(|a| a.info.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    }

    /// Where a group's stalls happened, e.g. `blocking_sleep (pid 12) ×3`.
    pub(crate) fn group_places(&self, g: &CulpritGroup) -> Vec<String> {
        let mut places: Vec<(String, usize)> = Vec::new();
        for s in &g.stalls {
            let name = self.agents.get(s.agent).map_or_else(|| "?".to_string(), |a| a.info.display_name());
            match places.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => places.push((name, 1)),
            }
        }
        places.into_iter().map(|(n, c)| if c > 1 { format!("{n} ×{c}") } else { n }).collect()
    }

    /// Things the user should know besides the stalls: a crash, runtimes that never finished their report,
    /// damaged records, agents that cannot time polls.
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let cmd = super::shell_words(&self.command);
        if let ChildEnd::Signaled { signal, .. } = self.child {
            // Asked to stop (Ctrl-C, a CI timeout) or crashed: either way only what was written counts.
            let how = if matches!(signal, 1 | 2 | 9 | 15) { "was stopped" } else { "crashed" };
            notes.push(format!(
                "`{cmd}` {how}: it {}. Only the stalls its agents reported before that are listed.",
                self.child.describe()
            ));
        } else if !self.child.success() {
            notes.push(format!("`{cmd}` {}.", self.child.describe()));
        }
        if self.agents.is_empty() {
            notes.push(
                "no agent reported; is loopscope installed in this program's runtime? \
                 (install it with `loopscope::Agent::builder().install(&mut builder)?` or `#[loopscope::main]`; \
                 its runtime must run at least one task, and the app must be built with --cfg tokio_unstable)"
                    .to_string(),
            );
        }
        let unfinished: Vec<String> =
            self.agents.iter().filter(|a| a.finished.is_none()).map(|a| a.info.display_name()).collect();
        if !unfinished.is_empty() {
            notes.push(format!(
                "{} runtime(s) never shut down cleanly{}, so their counts may be incomplete: {}",
                unfinished.len(),
                if self.child.success() { "" } else { " (the process stopped first)" },
                list(&unfinished)
            ));
        }
        for a in &self.agents {
            if let Some(d) = a.damage.last() {
                let what = if a.is_torn() { "ends with a torn record (the process died while writing)" } else { "" };
                let what =
                    if what.is_empty() { format!("has {} unreadable line(s)", a.damage.len()) } else { what.into() };
                notes.push(format!(
                    "the records of {} {what}; kept everything else (line {}: {})",
                    a.info.display_name(),
                    d.line,
                    d.error
                ));
            }
        }
        // One note per reason, not one per runtime: `cargo test` has many.
        let mut blind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for a in &self.agents {
            if let Some(why) = &a.info.no_stall_detection {
                blind.entry(why).or_default().push(a.info.display_name());
            }
        }
        for (why, names) in blind {
            notes.push(format!("{} runtime(s) cannot detect stalls: {why}: {}", names.len(), list(&names)));
        }
        if self.unlisted > 0 {
            notes.push(format!(
                "{} stall(s) were counted without details (suppressed by the agent's rate limit or dropped)",
                self.unlisted
            ));
        }
        if !self.allowed.is_empty() {
            let total: u64 = self.allowed.iter().map(|(_, n)| n).sum();
            let by: Vec<String> = self.allowed.iter().map(|(b, n)| format!("{b} ({n})")).collect();
            notes.push(format!("{total} stall(s) past --max-poll were exempted by {}; they don't count", list(&by)));
        }
        if self.agent_tasks > 0 {
            notes.push(format!(
                "{} stall(s) of loopscope's own tasks (its lag probes) were seen; they are never the app's, and \
                 don't count",
                self.agent_tasks
            ));
        }
        if self.below_limit > 0 {
            notes.push(format!(
                "{} stall(s) shorter than --max-poll {:?} were reported by agents with a lower threshold; \
                 they don't count",
                self.below_limit, self.max_poll
            ));
        }
        notes
    }

    /// The summary printed when the command has finished.
    pub(crate) fn render_text(&self) -> String {
        let mut out = String::new();
        let runtimes = self.agents.len();
        let processes = self.process_count();
        let checked = format!(
            "{runtimes} runtime{} in {processes} process{} checked",
            plural(runtimes),
            if processes == 1 { "" } else { "es" }
        );
        let _ = writeln!(out);
        if self.passed() {
            if runtimes > 0 {
                let _ = writeln!(
                    out,
                    "loopscope check: no poll held its thread longer than {:?} ({checked})",
                    self.max_poll
                );
            }
        } else {
            let v = self.violations();
            let _ = writeln!(
                out,
                "loopscope check: {v} poll{} held a worker thread longer than --max-poll {:?} ({} culprit{}, {checked})",
                plural(v as usize),
                self.max_poll,
                self.groups.len(),
                plural(self.groups.len()),
            );
        }
        for (n, g) in self.groups.iter().enumerate() {
            let _ = writeln!(out);
            self.render_group(&mut out, n + 1, g);
        }
        if !self.delayed_by_os.is_empty() {
            let n = self.delayed_by_os.len();
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "  {n} poll{} delayed by the OS, not by {} code: {} own time stayed under --max-poll while the \
                 thread waited for a CPU (the machine was oversubscribed). Not counted; --count-preemption counts \
                 them.",
                if n == 1 { " was" } else { "s were" },
                if n == 1 { "its" } else { "their" },
                if n == 1 { "its" } else { "their" }
            );
            for s in self.delayed_by_os.iter().take(DELAYED_SHOWN) {
                let ev = &s.stall.last;
                let loc = ev.location.as_ref().map_or_else(|| "an unknown location".to_string(), ToString::to_string);
                let how = ev.time.as_ref().map(|t| t.describe()).unwrap_or_default();
                let _ = writeln!(out, "     {:.1?}, task spawned at {loc}: {how}", ev.elapsed);
            }
            if n > DELAYED_SHOWN {
                let _ = writeln!(out, "     ... and {} more", n - DELAYED_SHOWN);
            }
        }
        let notes = self.notes();
        if !notes.is_empty() {
            let _ = writeln!(out);
            for note in notes {
                let _ = writeln!(out, "loopscope check: note: {note}");
            }
        }
        let verdict = if !self.passed() {
            "FAILED (exit code 1)".to_string()
        } else if !self.checked_anything() {
            format!("nothing was checked (exit code {})", self.exit_code())
        } else if self.child.success() {
            "passed".to_string()
        } else {
            format!("no stalls, but the command failed (exit code {})", self.exit_code())
        };
        let _ = writeln!(out, "loopscope check: {verdict}");
        out
    }

    fn render_group(&self, out: &mut String, n: usize, g: &CulpritGroup) {
        let worst = g.worst();
        let still = if g.stalls[0].stall.ended { "" } else { ", still running when the process stopped" };
        let _ = writeln!(
            out,
            "  {n}. {}: {} stall{}, worst {:.1?}{still}",
            g.title(),
            g.count(),
            plural(g.count()),
            worst.elapsed
        );
        let loc = g.location.as_ref().map_or_else(|| "an unknown location".to_string(), ToString::to_string);
        let _ = writeln!(out, "     task spawned at {loc}");
        let mut how = g.classifications().join("; ");
        match &worst.time {
            Some(t) => {
                let _ = write!(how, " ({} in the worst)", t.describe());
            }
            None => {
                if let Some(r) = worst.culprit.as_ref().and_then(|c| c.on_cpu_ratio) {
                    let _ = write!(how, " ({:.0}% on CPU)", r * 100.0);
                }
            }
        }
        let _ = writeln!(out, "     {how}");
        let _ = writeln!(out, "     in {}", list(&self.group_places(g)));
        let stack = g.stack();
        if let Some(why) = &stack.missing {
            let _ = writeln!(out, "     (no stack: {why})");
            return;
        }
        let _ = writeln!(out, "     stack, your code first:");
        for (i, f) in stack.user.iter().enumerate() {
            let _ = writeln!(out, "       {} {}", if i == 0 { "at" } else { "  " }, f.display_short());
        }
        for (i, f) in stack.inner.iter().rev().enumerate() {
            let _ = writeln!(out, "       {} {}", if i == 0 { "calling" } else { "       " }, f.display_short());
        }
        if stack.hidden > 0 {
            let _ = writeln!(out, "       ({} runtime/std frames not shown)", stack.hidden);
        }
    }
}

/// How many OS-delayed polls the summary lists (the JSON report has them all).
const DELAYED_SHOWN: usize = 5;

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `a, b, c and 3 more`.
fn list(items: &[String]) -> String {
    if items.len() <= WHERE_NAMES {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..WHERE_NAMES].join(", "), items.len() - WHERE_NAMES)
    }
}

#[cfg(test)]
pub(crate) mod tests;
