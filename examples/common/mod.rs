//! Scaffolding the examples share, so each example file shows only its blocking pattern and the one line that
//! attaches loopscope: option parsing, logging, the runtime builder, and the closing report.
//!
//! Not an example itself: cargo builds `examples/*.rs` and `examples/*/main.rs` only; each example includes
//! this with `mod common;`.

// Each example uses part of this.
#![allow(dead_code)]

use loopscope::{Agent, StallPhase, StallSubscription};

/// The value of option `--name N`, or `default` when it is absent.
pub(crate) fn arg(name: &str, default: u64) -> Result<u64, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} takes a whole number")),
    }
}

/// Logs to stderr, where loopscope's stall reports go when `tracing` shows them.
pub(crate) fn init_tracing() {
    // Colours only on a terminal: CI logs and `loopscope check` output stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_target(false).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// A two-worker multi-thread runtime builder, ready for the agent.
pub(crate) fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    builder
}

/// Says what this build of the agent can't observe (e.g. without `--cfg tokio_unstable`).
pub(crate) fn note_missing(agent: &Agent) {
    for missing in agent.capabilities().missing {
        eprintln!("note: {missing}");
    }
}

/// Prints every stall that ended, one line each, from the events `stalls` received.
pub(crate) fn print_ended_stalls(stalls: &StallSubscription) {
    let mut n = 0;
    while let Some(ev) = stalls.try_recv() {
        if ev.phase == StallPhase::Ended {
            n += 1;
            println!("stall #{n}: {}", ev.summary());
        }
    }
}
