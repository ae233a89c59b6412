//! `loopscope check` end to end: the real binary runs real programs with the real agent (the repository's
//! examples and integration tests, which block on purpose), and a scripted "agent" (this test binary
//! re-run as a child) for crashes, exit codes, several processes and damaged records.
//!
//! The examples and the integration-test binary are built by `cargo test --workspace`; run this file that
//! way (a nested `cargo run` would wait on the outer cargo's build lock).

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use loopscope_wire::check::{AgentInfo, CheckSummary, CheckWriter, check_dir_from_env};
use loopscope_wire::{
    Classification, Culprit, CulpritSample, Frame, FrameOrigin, Location, StallEvent, StallKind, StallPhase,
    ThreadInfo, Totals,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod fake;

/// How long one `loopscope check` run may take before the test fails (the examples run for about a second).
const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// The environment variable that turns this test binary into a scripted agent (see [`fake::fake_agent`]).
const FAKE_PLAN: &str = "LOOPSCOPE_TEST_FAKE_AGENT";

/// What a `loopscope check` run left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "unexpected exit code; stderr:\n{}\nstdout:\n{}", self.stderr, self.stdout);
        self
    }

    #[track_caller]
    fn assert_stderr(&self, needle: &str) -> &Run {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        self
    }
}

/// Runs `loopscope <args>` with a deadline, capturing its output in files (no pipe can fill up).
fn loopscope(args: &[&str], env: &[(&str, &str)]) -> Run {
    let scratch = scratch_dir("run");
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopscope"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        // Stall warnings from the examples would drown the summary in the failure messages.
        .env("LOOPSCOPE_TRACING", "0")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "loopscope {args:?} still running after {RUN_DEADLINE:?}; stderr so far:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

/// A fresh directory for a test's files, removed when dropped (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir(tag: &str) -> Scratch {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loopscope-cli-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// `<target>/debug`, from this test binary's path (`<target>/debug/deps/check_cli-<hash>`).
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// An example binary built by `cargo test --workspace`.
fn example(name: &str) -> String {
    let path = target_profile_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: the examples are built by `cargo test --workspace` (this test runs them; run it that way, \
         or `cargo build --examples` first)",
        path.display()
    );
    path.display().to_string()
}

/// The newest integration-test binary of the root package (`<target>/debug/deps/integration-<hash>`).
fn integration_tests() -> String {
    let deps = target_profile_dir().join("deps");
    let newest = std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("integration-").is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    let path = newest.map(|e| e.path());
    assert!(
        path.is_some(),
        "no integration-test binary in {}: it is built by `cargo test --workspace`; run this test that way",
        deps.display()
    );
    path.unwrap().display().to_string()
}

// ---------------------------------------------------------------------------------------------------------
// The real examples, with the real agent.
// ---------------------------------------------------------------------------------------------------------

#[test]
fn blocking_sleep_fails_and_names_the_sleeping_function() {
    let run = loopscope(&["check", "--", &example("blocking_sleep"), "--seconds", "1"], &[]);
    run.assert_code(1)
        .assert_stderr("held a worker thread longer than --max-poll 10ms")
        .assert_stderr("blocking_sleep::blocking_sleep")
        .assert_stderr("task spawned at examples/blocking_sleep.rs:")
        .assert_stderr("clock_nanosleep")
        .assert_stderr("FAILED");
}

#[test]
fn cpu_spin_fails_and_names_the_spinning_function() {
    let run = loopscope(&["check", "--", &example("cpu_spin"), "--seconds", "1"], &[]);
    run.assert_code(1).assert_stderr("cpu_spin::cpu_spin").assert_stderr("CPU-bound");
}

#[test]
fn sync_mutex_fails_and_names_the_locking_function() {
    let run = loopscope(&["check", "--", &example("sync_mutex"), "--seconds", "1"], &[]);
    run.assert_code(1).assert_stderr("sync_mutex::lock_contended_mutex").assert_stderr("waiting on a lock");
}

#[test]
fn clean_server_passes() {
    // 50ms rather than the default: this machine also runs the blocking examples and other tests in
    // parallel, and an OS that deschedules a worker mid-poll for 10ms is not the server's fault.
    let run = loopscope(&["check", "--max-poll", "50ms", "--", &example("clean_server"), "--seconds", "1"], &[]);
    run.assert_code(0)
        .assert_stderr("no poll held its thread longer than 50ms (1 runtime in 1 process checked)")
        .assert_stderr("loopscope check: passed");
    assert!(run.stdout.contains("requests answered"), "the child's own output passes through: {}", run.stdout);
}

#[test]
fn a_higher_limit_lets_the_same_program_pass() {
    // blocking_sleep blocks for 30ms here: over the default limit, under --max-poll 200ms.
    let args = ["--seconds", "1", "--sleep-ms", "30"];
    let strict = loopscope(&[&["check", "--", &example("blocking_sleep")][..], &args[..]].concat(), &[]);
    strict.assert_code(1);
    let lenient =
        loopscope(&[&["check", "--max-poll", "200ms", "--", &example("blocking_sleep")][..], &args[..]].concat(), &[]);
    lenient.assert_code(0);
}

#[test]
fn the_allow_list_exempts_a_known_culprit() {
    // The same program and limit that fail above; exempting its blocking function (or its spawn location)
    // makes it pass, and the exemption is reported.
    let run = loopscope(
        &["check", "--allow-fn", "blocking_sleep::blocking_sleep", "--", &example("blocking_sleep"), "--seconds", "1"],
        &[],
    );
    run.assert_code(0).assert_stderr("exempted by --allow-fn \"blocking_sleep::blocking_sleep\"");
    let run = loopscope(
        &["check", "--allow-spawn", "examples/blocking_sleep.rs", "--", &example("blocking_sleep"), "--seconds", "1"],
        &[],
    );
    run.assert_code(0).assert_stderr("exempted by --allow-spawn \"examples/blocking_sleep.rs\"");
    // An entry that matches nothing exempts nothing.
    let run = loopscope(
        &["check", "--allow-fn", "no_such_function", "--", &example("blocking_sleep"), "--seconds", "1"],
        &[],
    );
    run.assert_code(1);
}

#[test]
fn json_report_has_the_culprit_groups() {
    let dir = scratch_dir("json");
    let path = dir.join("report.json");
    let run = loopscope(
        &["check", "--json", path.to_str().unwrap(), "--", &example("blocking_sleep"), "--seconds", "1"],
        &[],
    );
    run.assert_code(1);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["max_poll_nanos"], 10_000_000);
    assert_eq!(v["child"]["exit_code"], 0);
    assert_eq!(v["agents"].as_array().unwrap().len(), 1);
    assert_eq!(v["agents"][0]["finished"], true);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{v:#}");
    let g = &groups[0];
    assert_eq!(g["function"], "blocking_sleep::blocking_sleep");
    assert!(g["location"].as_str().unwrap().starts_with("examples/blocking_sleep.rs:"), "{g:#}");
    assert!(g["count"].as_u64().unwrap() >= 1);
    assert!(g["worst_nanos"].as_u64().unwrap() >= 100_000_000, "{g:#}");
    assert_eq!(g["stack"][0]["function"], "blocking_sleep::blocking_sleep");
    assert_eq!(g["stack"][0]["origin"], "User");
    let stall = &g["stalls"][0];
    assert_eq!(stall["ended"], true);
    assert_eq!(stall["event"]["phase"], "Ended");
    assert_eq!(v["violations"].as_u64(), g["count"].as_u64());
}

#[test]
fn junit_report_is_xml_with_a_failing_case_per_culprit() {
    let dir = scratch_dir("junit");
    let path = dir.join("report.xml");
    let run =
        loopscope(&["check", "--junit", path.to_str().unwrap(), "--", &example("sync_mutex"), "--seconds", "1"], &[]);
    run.assert_code(1);
    let xml = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("not XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite = root.children().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!(suite.attribute("failures"), Some("1"), "{xml}");
    let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 1, "{xml}");
    assert_eq!(cases[0].attribute("name"), Some("sync_mutex::lock_contended_mutex"));
    let failure = cases[0].children().find(|n| n.has_tag_name("failure")).unwrap();
    assert!(failure.attribute("message").unwrap().contains("waiting on a lock"), "{xml}");
    // Text with `<T>` and `&` survives escaping: the stack names generic std functions.
    assert!(failure.text().unwrap().contains("std::sync::poison::mutex::Mutex::lock"), "{xml}");
}

#[test]
fn junit_report_of_a_clean_run_has_one_passing_case() {
    let dir = scratch_dir("junit-clean");
    let path = dir.join("report.xml");
    let run = loopscope(
        &[
            "check",
            "--max-poll",
            "50ms",
            "--junit",
            path.to_str().unwrap(),
            "--",
            &example("clean_server"),
            "--seconds",
            "1",
        ],
        &[],
    );
    run.assert_code(0);
    let xml = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!((suite.attribute("tests"), suite.attribute("failures")), (Some("1"), Some("0")), "{xml}");
    let case = suite.children().find(|n| n.has_tag_name("testcase")).unwrap();
    assert_eq!(case.attribute("name"), Some("no poll held its thread longer than 50ms"));
    assert!(case.children().all(|n| !n.is_element()), "a passing case has no failure: {xml}");
}

/// A test binary is what `cargo test` runs: here, three runtimes of `loopscope::check::Check` in one process,
/// two of which block (the tests themselves pass: they expect the stalls).
#[test]
fn a_test_binary_with_many_runtimes_is_checked_as_a_whole() {
    let tests = integration_tests();
    let run = loopscope(
        &["check", "--", &tests, "check::function_form_reports_and_iterates", "check::custom_runtime_with_install"],
        &[],
    );
    run.assert_code(1)
        .assert_stderr("3 polls held a worker thread longer than --max-poll 10ms")
        .assert_stderr("3 runtimes in 1 process checked")
        .assert_stderr("blocking_sleep_handler")
        .assert_stderr("task spawned at tests/integration/check.rs:");
    assert!(run.stdout.contains("2 passed"), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------------------------------
// Errors and exit codes.
// ---------------------------------------------------------------------------------------------------------

#[test]
fn a_misspelt_option_is_named_not_run() {
    let run = loopscope(&["check", "--alow-fn", "x", "--", "true"], &[]);
    run.assert_code(2).assert_stderr("unknown option `--alow-fn`");
}

#[test]
fn a_missing_command_is_an_error() {
    loopscope(&["check"], &[]).assert_code(2).assert_stderr("missing command");
    loopscope(&["check", "--max-poll", "5ms", "--"], &[]).assert_code(2).assert_stderr("missing command");
}

#[test]
fn an_unparseable_duration_is_an_error() {
    loopscope(&["check", "--max-poll", "10", "--", "true"], &[]).assert_code(2).assert_stderr("missing unit");
    loopscope(&["check", "--max-poll", "soon", "--", "true"], &[])
        .assert_code(2)
        .assert_stderr("invalid value 'soon' for '--max-poll <DURATION>'");
    loopscope(&["check", "--max-poll", "10us", "--", "true"], &[]).assert_code(2).assert_stderr("minimum of 100us");
}

#[test]
fn a_command_that_cannot_start_is_an_error() {
    loopscope(&["check", "--", "/nonexistent/loopscope-no-such-program", "--flag"], &[])
        .assert_code(2)
        .assert_stderr("cannot start `/nonexistent/loopscope-no-such-program --flag`")
        .assert_stderr("not found");
}

#[test]
fn a_program_without_the_agent_is_an_error() {
    loopscope(&["check", "--", "true"], &[])
        .assert_code(2)
        .assert_stderr("no agent reported; is loopscope installed in this program's runtime?")
        .assert_stderr("nothing was checked");
    // Its own failure is named, with the same warning, and the exit code stays 2: `false` must not give 1,
    // which means "a poll blocked".
    loopscope(&["check", "--", "sh", "-c", "exit 3"], &[])
        .assert_code(2)
        .assert_stderr("`sh -c 'exit 3'` exited with code 3")
        .assert_stderr("no agent reported");
    loopscope(&["check", "--", "false"], &[]).assert_code(2).assert_stderr("no agent reported");
}

#[test]
fn report_paths_are_checked_before_the_command_runs() {
    let dir = std::env::temp_dir().join(format!("loopscope-check-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let marker = dir.join("ran");
    let touch = format!("touch {}", marker.display());
    for option in ["--json", "--junit"] {
        loopscope(&["check", option, "/nonexistent/dir/x.report", "--", "sh", "-c", &touch], &[])
            .assert_code(2)
            .assert_stderr(&format!("cannot write {option} /nonexistent/dir/x.report"));
        assert!(!marker.exists(), "{option}: the command ran although its report could not be written");
    }
    // A report file that this run created is removed again when the command cannot start.
    let json = dir.join("r.json");
    loopscope(&["check", "--json", json.to_str().expect("utf-8"), "--", "/nonexistent/loopscope-no-such"], &[])
        .assert_code(2);
    assert!(!json.exists(), "an empty report was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_crash_without_the_agent_is_named() {
    // Named, though the exit code is 2 (nothing was checked).
    loopscope(&["check", "--", "sh", "-c", "kill -SEGV $$"], &[])
        .assert_code(2)
        .assert_stderr("crashed: it was killed by signal 11 (SIGSEGV");
}
