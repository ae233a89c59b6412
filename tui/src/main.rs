//! `loopscope`: the command-line tool for the loopscope agent.
//!
//! The live dashboard (`top`), `replay`, `record` and `demo` arrive with the dashboard milestone; `check`
//! runs a program in CI mode.

#![forbid(unsafe_code)]

mod check;

use clap::{Parser, Subcommand};

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
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a program with CI reporting on; fail if any poll blocked its worker.
    Check(check::CheckArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => check::run(args),
        None => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let _ = cmd.print_long_help();
            std::process::ExitCode::SUCCESS
        }
    }
}
