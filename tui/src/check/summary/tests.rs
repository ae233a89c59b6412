use super::*;
use loopscope_wire::check::{AgentInfo, CheckSummary, CheckWriter, read_dir};
use loopscope_wire::{Classification, Culprit, CulpritSample, StallPhase, ThreadInfo, Totals};

pub(crate) fn frame(function: &str, origin: FrameOrigin) -> Frame {
    Frame {
        ip: 1,
        function: Some(function.into()),
        file: Some(format!("/src/{}.rs", function.replace("::", "/"))),
        line: Some(7),
        origin,
        inlined: false,
        object: None,
    }
}

pub(crate) fn stall(id: u64, file: &str, function: Option<&str>, ms: u64) -> StallEvent {
    StallEvent {
        stall_id: id,
        phase: StallPhase::Ended,
        kind: StallKind::WorkerBlocked,
        runtime_id: 1,
        worker: Some(0),
        thread: ThreadInfo { tid: 10, name: None },
        task_id: id,
        location: Some(Location::new(file, 10, 5)),
        elapsed: Duration::from_millis(ms),
        threshold: Duration::from_millis(10),
        at_unix_nanos: 0,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: function.map(|f| Culprit {
            classification: Classification::CpuBound,
            reason: "on CPU".into(),
            on_cpu_ratio: Some(0.99),
            run_queue_ratio: None,
            counters: None,
            voluntary_switches: None,
            involuntary_switches: None,
            samples: vec![CulpritSample {
                at_elapsed: Duration::from_millis(10),
                frames: vec![
                    frame("signal_handler", FrameOrigin::Probe),
                    frame("libc::spin", FrameOrigin::Std),
                    frame(f, FrameOrigin::User),
                    frame("app::caller", FrameOrigin::User),
                    frame("tokio::runtime::poll", FrameOrigin::Runtime),
                ],
                symbolized: true,
                stack_error: None,
                state: Some('R'),
                syscall: None,
                fd_target: None,
            }],
            stack_moved: Some(false),
        }),
    }
}

/// Writes agents' files with the real writer and reads them back with the real reader.
pub(crate) fn agents(files: &[(u32, Vec<StallEvent>, bool)]) -> Vec<AgentReport> {
    let dir = std::env::temp_dir().join(format!(
        "loopscope-summary-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (pid, events, finished) in files {
        let mut info = AgentInfo::for_this_process(1, Duration::from_millis(10));
        info.pid = *pid;
        info.program = "/target/debug/examples/app".into();
        info.thread = Some("main".into());
        let mut w = CheckWriter::create(&dir, &info).unwrap();
        for e in events {
            w.write_stall(e).unwrap();
        }
        if *finished {
            let totals = Totals { stall_count: events.len() as u64, ..Totals::default() };
            w.finish(&CheckSummary { totals, ..CheckSummary::default() }).unwrap();
        }
    }
    let reports = read_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    reports
}

pub(crate) fn outcome(files: &[(u32, Vec<StallEvent>, bool)], child: ChildEnd) -> Outcome {
    outcome_with(files, child, &AllowList::default())
}

pub(crate) fn outcome_with(files: &[(u32, Vec<StallEvent>, bool)], child: ChildEnd, allow: &AllowList) -> Outcome {
    Outcome::new(
        Duration::from_millis(10),
        vec!["app".into()],
        child,
        agents(files),
        Duration::from_secs(1),
        allow,
        false,
    )
}

#[test]
fn stalls_group_by_location_and_function_worst_first() {
    let o = outcome(
        &[
            (1, vec![stall(1, "src/a.rs", Some("app::spin"), 30), stall(2, "src/a.rs", Some("app::spin"), 50)], true),
            (2, vec![stall(1, "src/a.rs", Some("app::spin"), 20), stall(2, "src/b.rs", Some("app::sleep"), 90)], true),
            (3, vec![stall(1, "src/c.rs", None, 15)], true),
        ],
        ChildEnd::Exited(0),
    );
    assert_eq!(o.groups.len(), 3);
    assert_eq!(o.groups[0].function.as_deref(), Some("app::sleep"));
    let spin = &o.groups[1];
    assert_eq!(spin.function.as_deref(), Some("app::spin"));
    assert_eq!(spin.count(), 3);
    assert_eq!(spin.worst().elapsed, Duration::from_millis(50));
    assert_eq!(o.group_places(spin), ["app (pid 1) ×2", "app (pid 2)"]);
    assert_eq!(o.groups[2].title(), "task spawned at src/c.rs:10:5");
    assert_eq!(o.groups[0].title(), "app::sleep", "a named function needs no file");
    assert_eq!(o.violations(), 5);
    assert_eq!(o.exit_code(), 1);
    let text = o.render_text();
    assert!(text.contains("5 polls held a worker thread longer than --max-poll 10ms (3 culprits"), "{text}");
    assert!(text.contains("1. app::sleep: 1 stall, worst 90.0ms"), "{text}");
    assert!(text.contains("2. app::spin: 3 stalls, worst 50.0ms"), "{text}");
    assert!(text.contains("CPU-bound (99% on CPU)"), "{text}");
    assert!(text.contains("FAILED"), "{text}");
}

#[test]
fn two_call_sites_with_one_short_name_are_two_culprits() {
    // Release builds name async blocks `{async_block#0}` wherever they are: the call site tells them apart.
    let at = |id, file: &str, line| {
        let mut ev = stall(id, "src/server.rs", Some("{async_block#0}"), 30);
        let c = ev.culprit.as_mut().expect("culprit");
        let user = c.samples[0].frames.iter_mut().find(|f| f.origin == FrameOrigin::User).expect("user frame");
        user.file = Some(file.into());
        user.line = Some(line);
        ev
    };
    let files =
        [(1, vec![at(1, "src/cmd/set.rs", 131), at(2, "src/cmd/get.rs", 67), at(3, "src/cmd/get.rs", 67)], true)];
    let o = outcome(&files, ChildEnd::Exited(0));
    assert_eq!(o.groups.len(), 2, "{}", o.render_text());
    assert_eq!(o.groups.iter().map(CulpritGroup::count).sum::<usize>(), 3);
    let text = o.render_text();
    assert!(text.contains("set.rs:131") && text.contains("get.rs:67"), "{text}");
}

#[test]
fn the_allow_list_exempts_by_function_and_spawn_location() {
    let files = [(
        1,
        vec![
            stall(1, "src/a.rs", Some("app::spin"), 30),
            stall(2, "src/a.rs", Some("app::spin"), 40),
            stall(3, "src/legacy.rs", Some("app::load"), 50),
            stall(4, "src/b.rs", Some("app::sleep"), 60),
        ],
        true,
    )];
    let allow = AllowList { spawn: vec!["src/legacy.rs".into()], functions: vec!["app::spin".into()] };
    let o = outcome_with(&files, ChildEnd::Exited(0), &allow);
    assert_eq!(o.violations(), 1, "only app::sleep counts");
    assert_eq!(o.groups.len(), 1);
    assert_eq!(o.groups[0].function.as_deref(), Some("app::sleep"));
    assert_eq!(
        o.allowed,
        [("--allow-fn \"app::spin\"".to_string(), 2), ("--allow-spawn \"src/legacy.rs\"".to_string(), 1)]
    );
    let text = o.render_text();
    assert!(
        text.contains(
            "3 stall(s) past --max-poll were exempted by --allow-fn \"app::spin\" (2), \
             --allow-spawn \"src/legacy.rs\" (1)"
        ),
        "{text}"
    );
    // Everything exempt: the check passes.
    let all = AllowList { spawn: vec![], functions: vec!["app::".into()] };
    let o = outcome_with(&files, ChildEnd::Exited(0), &all);
    assert!(o.passed());
    assert_eq!(o.exit_code(), 0);
}

#[test]
fn the_stack_puts_user_frames_first_and_hides_probe_frames() {
    let o = outcome(&[(1, vec![stall(1, "src/a.rs", Some("app::spin"), 30)], true)], ChildEnd::Exited(0));
    let text = o.render_text();
    let at = text.find("at app::spin").unwrap();
    let caller = text.find("app::caller").unwrap();
    let calling = text.find("calling libc::spin").unwrap();
    assert!(at < caller && caller < calling, "{text}");
    assert!(!text.contains("signal_handler"), "{text}");
    assert!(text.contains("(1 runtime/std frames not shown)"), "{text}");
}

#[test]
fn exit_codes() {
    let clean = |child| outcome(&[(1, vec![], true)], child);
    assert_eq!(clean(ChildEnd::Exited(0)).exit_code(), 0);
    assert_eq!(clean(ChildEnd::Exited(3)).exit_code(), 3);
    assert_eq!(clean(ChildEnd::Signaled { signal: 9, core_dumped: false }).exit_code(), 137);
    let stalled = outcome(&[(1, vec![stall(1, "a.rs", None, 30)], true)], ChildEnd::Exited(3));
    assert_eq!(stalled.exit_code(), 1, "a stall wins over the child's code");
    let nobody = outcome(&[], ChildEnd::Exited(0));
    assert_eq!(nobody.exit_code(), 2);
    assert!(nobody.render_text().contains("no agent reported; is loopscope installed"));
    assert_eq!(outcome(&[], ChildEnd::Exited(4)).exit_code(), 2, "nothing checked: 2, not the command's code");
    assert_eq!(outcome(&[], ChildEnd::Exited(1)).exit_code(), 2, "never 1, which means a stall");
}

#[test]
fn agents_that_cannot_detect_stalls_check_nothing() {
    let mut o = outcome(&[(1, vec![], true), (2, vec![], true)], ChildEnd::Exited(0));
    for a in &mut o.agents {
        a.info.no_stall_detection = Some("build with --cfg tokio_unstable".into());
    }
    assert_eq!(o.exit_code(), 2);
    let text = o.render_text();
    assert!(text.contains("2 runtime(s) cannot detect stalls: build with --cfg tokio_unstable"), "{text}");
    assert!(text.contains("nothing was checked"), "{text}");
    o.agents[0].info.no_stall_detection = None;
    assert_eq!(o.exit_code(), 0);
}

#[test]
fn polls_delayed_by_the_os_are_listed_apart_and_counted_only_when_asked() {
    let ms = Duration::from_millis;
    let mut delayed = stall(1, "src/busy.rs", Some("app::handler"), 22);
    delayed.time = Some(loopscope_wire::StallTime {
        wall: ms(22),
        on_cpu: ms(2),
        off_cpu: Duration::ZERO,
        run_queue: ms(19),
        unmeasured: ms(1),
        estimated: false,
    });
    let mut own = stall(2, "src/sampler.rs", None, 30);
    own.agent_task = Some("timer-lateness probe".into());
    let files = [(1, vec![delayed.clone(), own.clone()], true)];
    let o = outcome(&files, ChildEnd::Exited(0));
    assert!(o.passed(), "{}", o.render_text());
    assert_eq!(o.delayed_by_os.len(), 1);
    assert_eq!(o.agent_tasks, 1);
    let text = o.render_text();
    assert!(text.contains("1 poll was delayed by the OS, not by its code"), "{text}");
    assert!(text.contains("waiting for a CPU 19.0ms of 22.0ms, own time 3.0ms"), "{text}");
    assert!(text.contains("1 stall(s) of loopscope's own tasks"), "{text}");
    let strict = Outcome::new(
        ms(10),
        vec!["app".into()],
        ChildEnd::Exited(0),
        agents(&files),
        Duration::from_secs(1),
        &AllowList::default(),
        true,
    );
    assert_eq!(strict.violations(), 1, "the OS's delay counts, loopscope's own task never does");
    // An unmeasured stall is never explained away.
    let bare = stall(3, "src/busy.rs", Some("app::handler"), 22);
    assert!(!outcome(&[(1, vec![bare], true)], ChildEnd::Exited(0)).passed());
}

#[test]
fn short_stalls_from_lower_thresholds_do_not_count() {
    let o = outcome(&[(1, vec![stall(1, "a.rs", None, 5)], true)], ChildEnd::Exited(0));
    assert_eq!(o.below_limit, 1);
    assert!(o.passed());
    assert!(o.render_text().contains("shorter than --max-poll"));
}

#[test]
fn a_crash_is_named_and_unfinished_runtimes_are_noted() {
    let mut started = stall(1, "a.rs", Some("app::spin"), 10);
    started.phase = StallPhase::Started;
    let o = outcome(&[(1, vec![started], false)], ChildEnd::Signaled { signal: 6, core_dumped: true });
    let text = o.render_text();
    assert!(text.contains("crashed: it was killed by signal 6 (SIGABRT, core dumped)"), "{text}");
    assert!(text.contains("still running when the process stopped"), "{text}");
    assert!(text.contains("never shut down cleanly"), "{text}");
    assert_eq!(o.exit_code(), 1);
}

#[test]
fn child_ends_describe_themselves() {
    assert_eq!(ChildEnd::Exited(3).describe(), "exited with code 3");
    assert_eq!(ChildEnd::Signaled { signal: 11, core_dumped: false }.describe(), "was killed by signal 11 (SIGSEGV)");
    assert_eq!(ChildEnd::Signaled { signal: 64, core_dumped: false }.code(), 192);
}

/// A release build may name an inlined async body only `{async fn}`: the heading adds its file.
#[test]
fn an_anonymous_body_is_titled_with_its_file() {
    let o = outcome(&[(1, vec![stall(1, "src/a.rs", Some("{async fn}"), 30)], true)], ChildEnd::Exited(0));
    assert_eq!(o.groups[0].title(), "{async fn} in src/{async fn}.rs");
    assert!(o.render_text().contains("1. {async fn} in src/{async fn}.rs: 1 stall"), "{}", o.render_text());
}
