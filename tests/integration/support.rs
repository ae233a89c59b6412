//! Test harness: real runtimes with the agent installed, deadline-based waits, and expectation builders.

use loopscope::wire::{StallEvent, StallKind, StallPhase};
use loopscope::{Agent, AgentBuilder, StallSubscription};
use std::time::{Duration, Instant};

/// How long any test waits for a condition before failing. Generous: CI runs on a noisy 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An agent builder that ignores the environment, so a developer's `LOOPSCOPE_*` settings can't change a
/// test's outcome.
pub fn agent() -> AgentBuilder {
    Agent::builder().ignore_env().serve("off").tracing(false).max_reports_per_second(0)
}

pub fn multi_thread(workers: usize, agent: AgentBuilder) -> (tokio::runtime::Runtime, Agent) {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(workers).enable_all();
    let a = agent.install(&mut b).expect("valid test configuration");
    (b.build().expect("runtime builds"), a)
}

pub fn current_thread(agent: AgentBuilder) -> (tokio::runtime::Runtime, Agent) {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let a = agent.install(&mut b).expect("valid test configuration");
    (b.build().expect("runtime builds"), a)
}

/// Waits for the first event matching `pred`, failing after [`DEADLINE`] with what was seen instead.
pub fn wait_event(sub: &StallSubscription, what: &str, pred: impl Fn(&StallEvent) -> bool) -> StallEvent {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while Instant::now() < end {
        if let Some(ev) = sub.recv_timeout(end.saturating_duration_since(Instant::now()).min(ms(100))) {
            if pred(&ev) {
                return ev;
            }
            seen.push(ev.summary());
        }
    }
    panic!("timed out after {DEADLINE:?} waiting for {what}; saw {} other events: {seen:#?}", seen.len());
}

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(DEADLINE, what, cond)
}

/// Polls `cond` until it holds or `deadline` passes.
pub fn wait_until_within(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(ms(5));
    }
    panic!("timed out after {deadline:?} waiting for {what}");
}

/// What a stall event should look like. Unset fields are not checked.
#[derive(Default, Debug, Clone)]
pub struct ExpectedStall {
    file: Option<&'static str>,
    line: Option<u32>,
    phase: Option<StallPhase>,
    kind: Option<StallKind>,
    min_elapsed: Option<Duration>,
    max_elapsed: Option<Duration>,
    task_id: Option<u64>,
    has_worker: Option<bool>,
}

impl ExpectedStall {
    /// The spawn location: `file` is matched as a suffix of the recorded path.
    pub fn location(mut self, file: &'static str, line: u32) -> Self {
        self.file = Some(file);
        self.line = Some(line);
        self
    }
    pub fn phase(mut self, p: StallPhase) -> Self {
        self.phase = Some(p);
        self
    }
    pub fn kind(mut self, k: StallKind) -> Self {
        self.kind = Some(k);
        self
    }
    pub fn min_elapsed(mut self, d: Duration) -> Self {
        self.min_elapsed = Some(d);
        self
    }
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = Some(d);
        self
    }
    pub fn task_id(mut self, id: u64) -> Self {
        self.task_id = Some(id);
        self
    }
    pub fn on_a_worker(mut self, yes: bool) -> Self {
        self.has_worker = Some(yes);
        self
    }

    /// Lists every mismatch (empty when `ev` matches).
    pub fn mismatches(&self, ev: &StallEvent) -> Vec<String> {
        let mut m = Vec::new();
        if let Some(f) = self.file {
            match &ev.location {
                Some(l) if l.file.ends_with(f) && Some(l.line) == self.line => {}
                other => m.push(format!("location: expected {f}:{:?}, got {other:?}", self.line)),
            }
        }
        if let Some(p) = self.phase
            && ev.phase != p
        {
            m.push(format!("phase: expected {p:?}, got {:?}", ev.phase));
        }
        if let Some(k) = self.kind
            && ev.kind != k
        {
            m.push(format!("kind: expected {k:?}, got {:?}", ev.kind));
        }
        if let Some(d) = self.min_elapsed
            && ev.elapsed < d
        {
            m.push(format!("elapsed: expected >= {d:?}, got {:?}", ev.elapsed));
        }
        if let Some(d) = self.max_elapsed
            && ev.elapsed > d
        {
            m.push(format!("elapsed: expected <= {d:?}, got {:?}", ev.elapsed));
        }
        if let Some(id) = self.task_id
            && ev.task_id != id
        {
            m.push(format!("task: expected {id}, got {}", ev.task_id));
        }
        if let Some(w) = self.has_worker
            && ev.worker.is_some() != w
        {
            m.push(format!("worker: expected {}, got {:?}", if w { "some" } else { "none" }, ev.worker));
        }
        m
    }

    pub fn matches(&self, ev: &StallEvent) -> bool {
        self.mismatches(ev).is_empty()
    }

    #[track_caller]
    pub fn assert(&self, ev: &StallEvent) {
        let m = self.mismatches(ev);
        assert!(m.is_empty(), "stall event does not match:\n  {}\nevent: {ev:#?}", m.join("\n  "));
    }
}

/// A CPU spin that the optimizer can't remove.
#[inline(never)]
pub fn cpu_spin(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..1000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

mod harness_tests {
    use super::*;
    use loopscope::wire::{Location, ThreadInfo};

    fn event() -> StallEvent {
        StallEvent {
            stall_id: 1,
            phase: StallPhase::Started,
            kind: StallKind::WorkerBlocked,
            runtime_id: 1,
            worker: Some(0),
            thread: ThreadInfo { tid: 1, name: None },
            task_id: 7,
            location: Some(Location::new("/src/tests/integration/x.rs", 10, 5)),
            elapsed: ms(12),
            threshold: ms(10),
            at_unix_nanos: 0,
            suppressed: 0,
            caught_in_flight: true,
            time: None,
            agent_task: None,
            culprit: None,
        }
    }

    #[test]
    fn expectation_accepts_a_match() {
        ExpectedStall::default()
            .location("integration/x.rs", 10)
            .phase(StallPhase::Started)
            .min_elapsed(ms(10))
            .task_id(7)
            .assert(&event());
    }

    #[test]
    #[should_panic(expected = "location: expected integration/x.rs:Some(11)")]
    fn expectation_rejects_wrong_line() {
        ExpectedStall::default().location("integration/x.rs", 11).assert(&event());
    }

    #[test]
    #[should_panic(expected = "elapsed: expected >= 20ms")]
    fn expectation_rejects_short_stall() {
        ExpectedStall::default().min_elapsed(ms(20)).assert(&event());
    }
}

/// Runs this test binary again, running only `test`, with extra environment variables.
pub fn rerun(test: &str, env: &[(&str, &str)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--include-ignored", "--test-threads=1"]);
    cmd.env("LOOPSCOPE_TEST_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("re-run the test binary")
}
