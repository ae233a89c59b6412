//! The suite's smoke run: every workload under every mode, tiny sizes, one pair each, so that CI catches a
//! mode or workload that no longer builds or runs (and a mode that silently stopped watching: the runner
//! refuses a run whose agent, monitor or client saw nothing). It measures nothing: budgets live in
//! BENCHMARKS.md.

use std::path::Path;
use std::process::Command;

use loopscope_peers::{Mode, Workload};

#[test]
fn quick_run_covers_every_mode_and_workload() {
    let exe = Path::new(env!("CARGO_BIN_EXE_loopscope-peers"));
    // `cargo test` builds the examples of the package under test; the runner would otherwise call cargo itself.
    let console = exe.parent().expect("the binary is in a target directory").join("examples").join("console_peer");
    assert!(
        console.exists(),
        "{} is missing: run the whole package's tests (`cargo test -p loopscope-peers`), which build it",
        console.display()
    );
    let out = Command::new(exe).arg("--quick").arg("--console-bin").arg(&console).output().expect("runs the suite");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the quick run failed ({}):\n{stdout}\n{stderr}", out.status);
    for m in Mode::ALL {
        assert!(stdout.contains(m.label()), "no row for mode {}:\n{stdout}", m.arg());
    }
    for w in Workload::ALL {
        assert!(stderr.contains(&format!("[{} 1/1]", w.arg())), "workload {} did not run:\n{stderr}", w.arg());
    }
}

#[test]
fn bad_arguments_are_refused_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_loopscope-peers"))
        .args(["--modes", "loopscope,nonsense"])
        .output()
        .expect("runs the suite");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'nonsense'"), "{stderr}");
}
