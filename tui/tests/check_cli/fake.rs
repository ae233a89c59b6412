//! A scripted agent: this test binary, re-run by `loopscope check` with a plan in FAKE_PLAN, writes records
//! with the real writer, then exits, crashes or runs copies of itself as it is told; and the tests that run
//! it (exit codes, crashes mid-stall, several processes, Ctrl-C). Split out of `main.rs`, which checks real
//! programs.

use super::*;

/// `loopscope check -- <this binary> fake::fake_agent` with `plan`.
fn check_fake(plan: &str, extra: &[&str]) -> Run {
    let me = std::env::current_exe().unwrap().display().to_string();
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &me, "fake::fake_agent", "--exact", "--nocapture", "--test-threads", "1"]);
    loopscope(&args, &[(FAKE_PLAN, plan)])
}

fn fake_event(stall_id: u64, phase: StallPhase, ms: u64) -> StallEvent {
    let frame = |f: &str, origin| Frame {
        ip: 0x1000,
        function: Some(f.into()),
        file: Some("src/handlers.rs".into()),
        line: Some(12),
        origin,
        inlined: false,
        object: None,
    };
    StallEvent {
        stall_id,
        phase,
        kind: StallKind::WorkerBlocked,
        runtime_id: 1,
        worker: Some(0),
        thread: ThreadInfo { tid: 4, name: Some("tokio-runtime-worker".into()) },
        task_id: 7,
        location: Some(Location::new("src/handlers.rs", 66, 26)),
        elapsed: Duration::from_millis(ms),
        threshold: Duration::from_millis(10),
        at_unix_nanos: 0,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: Some(Culprit {
            classification: Classification::CpuBound,
            reason: "on a CPU".into(),
            on_cpu_ratio: Some(1.0),
            run_queue_ratio: None,
            counters: None,
            voluntary_switches: None,
            involuntary_switches: None,
            samples: vec![CulpritSample {
                at_elapsed: Duration::from_millis(10),
                frames: vec![frame("app::handlers::fake_culprit", FrameOrigin::User)],
                symbolized: true,
                stack_error: None,
                state: Some('R'),
                syscall: None,
                fd_target: None,
            }],
            stack_moved: None,
        }),
    }
}

fn fake_writer(runtime_id: u64) -> CheckWriter {
    let dir = check_dir_from_env().expect("loopscope check sets LOOPSCOPE_CHECK_DIR");
    CheckWriter::create(&dir, &AgentInfo::for_this_process(runtime_id, Duration::from_millis(10))).unwrap()
}

fn fake_finish(w: &mut CheckWriter, stalls: u64) {
    let totals = Totals { stall_count: stalls, ..Totals::default() };
    w.finish(&CheckSummary { totals, ..CheckSummary::default() }).unwrap();
}

/// The scripted agent. A no-op in a normal test run.
#[test]
fn fake_agent() {
    let Ok(plan) = std::env::var(FAKE_PLAN) else { return };
    match plan.as_str() {
        // A clean runtime, then the program fails on its own.
        "clean-exit-3" => {
            fake_finish(&mut fake_writer(1), 0);
            std::process::exit(3);
        }
        // Killed in the middle of a stall, in the middle of writing a record.
        "stall-then-abort" => {
            let mut w = fake_writer(1);
            w.write_stall(&fake_event(1, StallPhase::Started, 10)).unwrap();
            std::fs::OpenOptions::new()
                .append(true)
                .open(w.path())
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"type\":\"stall\",\"stall_"))
                .unwrap();
            std::process::abort();
        }
        // Checks what `loopscope check` put in the environment (for --max-poll 25ms), and where the
        // directory is, so the test can see that it is gone afterwards.
        "env" => {
            let dir = check_dir_from_env().unwrap();
            println!("check dir: {}", dir.display());
            let threshold = std::env::var("LOOPSCOPE_STALL_THRESHOLD").unwrap_or_default();
            let addr = std::env::var("LOOPSCOPE_ADDR").unwrap_or_default();
            let parsed = loopscope_wire::parse_duration(&threshold);
            fake_finish(&mut fake_writer(1), 0);
            if !dir.is_dir() || parsed != Ok(Duration::from_millis(25)) || addr != "off" {
                eprintln!("unexpected environment: threshold {threshold:?}, addr {addr:?}");
                std::process::exit(42);
            }
        }
        // Like `cargo test`: three processes, two runtimes each, all stalling in the same function.
        "fan-out" => {
            let me = std::env::current_exe().unwrap();
            let children: Vec<_> = (0..3)
                .map(|_| {
                    Command::new(&me)
                        .args(["fake::fake_agent", "--exact", "--nocapture", "--test-threads", "1"])
                        .env(FAKE_PLAN, "two-runtimes")
                        .spawn()
                        .unwrap()
                })
                .collect();
            for mut c in children {
                assert!(c.wait().unwrap().success());
            }
        }
        // Mid-stall until a signal ends it.
        "wait-for-signal" => {
            // Caught, then re-raised with the default action: a process started from a shell's background job
            // (CI scripts often are) inherits SIGINT *ignored*, and would never die of it; an app killed by the
            // signal is what the test is about. Registered before the line the test waits for.
            let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]).unwrap();
            let mut w = fake_writer(1);
            w.write_stall(&fake_event(1, StallPhase::Started, 10)).unwrap();
            println!("check dir: {}", check_dir_from_env().unwrap().display());
            for sig in signals.forever() {
                signal_hook::low_level::emulate_default_handler(sig).unwrap();
            }
        }
        "two-runtimes" => {
            for rt in 1..=2 {
                let mut w = fake_writer(rt);
                w.write_stall(&fake_event(1, StallPhase::Started, 10)).unwrap();
                w.write_stall(&fake_event(1, StallPhase::Ended, 20 + rt * 10)).unwrap();
                fake_finish(&mut w, 1);
            }
        }
        other => panic!("unknown plan {other:?}"),
    }
}

#[test]
fn the_childs_exit_code_passes_through_when_nothing_blocked() {
    check_fake("clean-exit-3", &[])
        .assert_code(3)
        .assert_stderr("exited with code 3")
        .assert_stderr("no stalls, but the command failed (exit code 3)");
}

#[test]
fn a_crash_mid_stall_still_reports_the_stall() {
    check_fake("stall-then-abort", &[])
        .assert_code(1)
        .assert_stderr("crashed: it was killed by signal 6 (SIGABRT")
        .assert_stderr("app::handlers::fake_culprit: 1 stall, worst 10.0ms, still running when the process stopped")
        .assert_stderr("ends with a torn record");
}

#[test]
fn the_child_gets_the_environment_and_the_directory_is_removed() {
    let run = check_fake("env", &["--max-poll", "25ms"]);
    run.assert_code(0);
    // (After the harness's "test fake::fake_agent ... " on the same line.)
    let dir = run.stdout.lines().find_map(|l| l.split_once("check dir: ")).expect("the fake agent prints it").1;
    assert!(!Path::new(dir).exists(), "{dir} was not removed");
}

#[test]
fn stalls_from_many_processes_and_runtimes_are_grouped_by_culprit() {
    let dir = scratch_dir("fan-out");
    let json = dir.join("r.json");
    let run = check_fake("fan-out", &["--json", json.to_str().unwrap()]);
    run.assert_code(1)
        .assert_stderr("6 polls held a worker thread longer than --max-poll 10ms (1 culprit, 6 runtimes in 3 processes")
        .assert_stderr("app::handlers::fake_culprit: 6 stalls, worst 40.0ms");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["groups"][0]["count"], 6);
    // Named by process, each with its two runtimes.
    let places = v["groups"][0]["places"].as_array().unwrap();
    assert_eq!(places.len(), 3, "{v:#}");
    assert!(places.iter().all(|p| p.as_str().unwrap().ends_with("×2")), "{v:#}");
}

#[test]
fn ctrl_c_stops_the_child_reports_and_cleans_up() {
    use std::os::unix::process::CommandExt;
    let scratch = scratch_dir("ctrl-c");
    let (out_path, err_path) = (scratch.join("stdout"), scratch.join("stderr"));
    let me = std::env::current_exe().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopscope"))
        .args(["check", "--"])
        .arg(&me)
        .args(["fake::fake_agent", "--exact", "--nocapture", "--test-threads", "1"])
        .env(FAKE_PLAN, "wait-for-signal")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        // Its own process group, like a shell job: a terminal's Ctrl-C goes to the whole group.
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_DEADLINE;
    let dir = loop {
        let out = std::fs::read_to_string(&out_path).unwrap();
        if let Some((_, dir)) = out.lines().find_map(|l| l.split_once("check dir: ")) {
            break PathBuf::from(dir);
        }
        assert!(Instant::now() < deadline, "the fake agent never started: {out}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let group = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // The whole group: the fake agent under check too, or it would outlive the test.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            panic!("loopscope check did not stop after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(1), "the stall in progress still fails the check: {stderr}");
    assert!(stderr.contains("was stopped: it was killed by signal 2 (SIGINT)"), "{stderr}");
    assert!(stderr.contains("still running when the process stopped"), "{stderr}");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}
