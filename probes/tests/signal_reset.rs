//! The application changes the sampler's signal disposition after install: the next capture must neither kill
//! the process (SIG_DFL) nor silently time out (its own handler), and the status must say why stacks are off.
//! Each case runs in a child process (this binary re-executed), because stack capture is switched off for good.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use loopscope_probes::stack::CaptureError;
use loopscope_probes::thread::RunState;
use loopscope_probes::{ProbeConfig, Probes};

const CHILD_ENV: &str = "LOOPSCOPE_PROBES_SIGNAL_RESET_CHILD";
const CHILD_OK: &str = "signal-reset child finished";

static APP_HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn app_handler(_: libc::c_int) {
    APP_HANDLER_CALLS.fetch_add(1, Ordering::SeqCst);
}

fn set_disposition(signal: i32, disposition: libc::sighandler_t) {
    // SAFETY: installing SIG_DFL or a trivial async-signal-safe handler from a zeroed sigaction.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = disposition;
        assert_eq!(libc::sigaction(signal, &act, std::ptr::null_mut()), 0);
    }
}

fn child(case: &str) {
    let probes = Probes::new(ProbeConfig { perf: false, warm_symbolizer: false, ..ProbeConfig::default() });
    let stack = probes.status().into_iter().find(|s| s.name == "stack").unwrap();
    assert!(stack.active, "{stack:?}");
    let signal = probes.sampler().unwrap().signal();

    // A thread in an untimed futex wait (restartable), so the capture really uses the signal.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = Target::spawn("reset-target", move |_| rx.recv());
    probes.prepare_thread(t.tid).unwrap();
    wait_for_sample(t.tid, "target in futex", |s| s.state == RunState::Sleeping && in_syscall(s, "futex"));
    let before = probes.snapshot(t.tid, Some(CAPTURE_TIMEOUT));
    assert!(before.stack.unwrap().is_ok(), "captures work before the change");

    let (disposition, expected) = match case {
        "default" => (libc::SIG_DFL, "SIG_DFL"),
        "handler" => {
            let entry: extern "C" fn(libc::c_int) = app_handler;
            (entry as libc::sighandler_t, "its own handler")
        }
        other => panic!("unknown case {other}"),
    };
    set_disposition(signal, disposition);

    // The next capture must not send the signal (which would kill us, or run the app's handler).
    let start = std::time::Instant::now();
    let after = probes.snapshot(t.tid, Some(Duration::from_secs(2)));
    let err = after.stack.unwrap().unwrap_err();
    assert!(matches!(&err, CaptureError::Disabled(why) if why.contains(expected)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "failed at once, no timeout: {:?}", start.elapsed());
    assert_eq!(APP_HANDLER_CALLS.load(Ordering::SeqCst), 0, "the application's handler never runs for us");
    // Off for good, and the status says why.
    let stack = probes.status().into_iter().find(|s| s.name == "stack").unwrap();
    assert!(!stack.active, "{stack:?}");
    assert!(stack.detail.contains(expected), "{stack:?}");
    assert!(probes.sampler().unwrap().disabled().is_some());
    // Even if the application hands the signal back, stacks stay off (we no longer own it).
    assert!(matches!(probes.sampler().unwrap().capture(t.tid, CAPTURE_TIMEOUT), Err(CaptureError::Disabled(_))));
    tx.send(()).unwrap();
    t.stop().unwrap();
    println!("stack status: {}", stack.detail);
    println!("{CHILD_OK}");
}

#[test]
fn signal_reset_child() {
    if let Some(case) = std::env::var_os(CHILD_ENV) {
        child(&case.to_string_lossy());
    }
}

fn run_child(case: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "signal_reset_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child ({case}) failed or was killed: {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(CHILD_OK), "child ({case}) did not run the check:\n{stdout}\n{stderr}");
}

#[test]
fn reset_to_default_after_install_turns_stacks_off_instead_of_killing_the_process() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    run_child("default");
}

#[test]
fn application_handler_after_install_turns_stacks_off_instead_of_timing_out() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    run_child("handler");
}
