//! Stall reports reach a person by default: when the app's `tracing` subscriber would drop them, they go to
//! stderr, with a one-time note on how to route them.

use crate::support::*;

#[inline(never)]
fn reporting_test_sleeps() {
    // Long enough for the looks to land while it sleeps, even on a loaded machine.
    std::thread::sleep(ms(200));
}

/// One stall in a runtime whose agent reports as `report` says (`default` as an app would leave it).
fn one_reported_stall(report: &str) {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(1).enable_all();
    let mut builder = loopscope::Agent::builder().ignore_env().serve("off").stall_threshold(ms(20));
    builder = match report {
        "default" => builder,
        "off" => builder.tracing(false),
        "stderr" => builder.report(loopscope::ReportTo::Stderr),
        other => panic!("unknown mode {other}"),
    };
    let agent = builder.install(&mut b).expect("installs");
    let rt = b.build().expect("runtime");
    rt.block_on(async { tokio::spawn(async { reporting_test_sleeps() }).await.expect("task runs") });
    drop(rt);
    wait_until("the agent to drain", || agent.is_drained());
    println!("STALLS {}", agent.stalls().len());
}

/// Child side: an app whose subscriber shows ERROR only (what `tracing_subscriber::fmt::init()` does
/// without `RUST_LOG`).
#[test]
#[ignore = "run by reports_reach_stderr_when_the_apps_subscriber_drops_them in a child process"]
fn child_with_an_error_only_subscriber() {
    if std::env::var_os("LOOPSCOPE_TEST_CHILD").is_none() {
        return;
    }
    tracing_subscriber::fmt().with_max_level(tracing::Level::ERROR).with_writer(std::io::stdout).init();
    one_reported_stall(&std::env::var("REPORT_MODE").unwrap_or_else(|_| "default".into()));
}

/// Child side: an app whose subscriber shows WARN, to stdout.
#[test]
#[ignore = "run by reports_go_to_tracing_when_the_apps_subscriber_shows_them in a child process"]
fn child_with_a_warn_subscriber() {
    if std::env::var_os("LOOPSCOPE_TEST_CHILD").is_none() {
        return;
    }
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_writer(std::io::stdout).init();
    one_reported_stall("default");
}

fn run_child(test: &str, mode: &str) -> (String, String) {
    let out = rerun(test, &[("REPORT_MODE", mode)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("STALLS 1"), "the child saw no stall:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn reports_reach_stderr_when_the_apps_subscriber_drops_them() {
    let (stdout, stderr) = run_child("reporting::child_with_an_error_only_subscriber", "default");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("loopscope: task ")).collect();
    assert!(!lines.is_empty(), "no stall report on stderr:\n{stderr}");
    assert!(lines.iter().any(|l| l.contains("reporting_test_sleeps")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("blocked in syscall clock_nanosleep")), "{lines:#?}");
    let notes = stderr.matches("stall reports go to stderr because no tracing subscriber shows").count();
    assert_eq!(notes, 1, "the routing note is said once:\n{stderr}");
    assert!(!stdout.contains("loopscope::stall"), "the ERROR-only subscriber printed it anyway?\n{stdout}");

    // Off is off.
    let (_, stderr) = run_child("reporting::child_with_an_error_only_subscriber", "off");
    assert!(!stderr.contains("loopscope: task "), "{stderr}");
}

#[test]
fn reports_go_to_tracing_when_the_apps_subscriber_shows_them() {
    let (stdout, stderr) = run_child("reporting::child_with_a_warn_subscriber", "default");
    assert!(stdout.contains("loopscope::stall"), "no tracing warning:\n{stdout}");
    assert!(stdout.contains("reporting_test_sleeps"), "{stdout}");
    assert!(!stderr.contains("loopscope: task "), "reported twice:\n{stderr}");
}
