//! `loopscope`: the command-line tool for the loopscope agent.
//!
//! The live dashboard (`top`), `replay`, `record`, `demo` and the CI mode (`check`) arrive in later
//! milestones; today the binary explains how to attach the agent.

#![forbid(unsafe_code)]

use clap::Parser;

/// See what is blocking your tokio event loop.
///
/// Attach the agent to your runtime with one line:
///
///     let agent = loopscope::Agent::builder().install(&mut runtime_builder)?;
///
/// then build with RUSTFLAGS="--cfg tokio_unstable". Stalls are reported as `tracing` warnings and through
/// `agent.subscribe()`. Try it: cargo run --example blocking_sleep
#[derive(Parser, Debug)]
#[command(name = "loopscope", version, verbatim_doc_comment)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    // No subcommands yet: print the help, which says how to use the agent.
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let _ = cmd.print_long_help();
}
