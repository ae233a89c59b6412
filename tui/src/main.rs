//! `loopscope`: the command-line tool for the loopscope agent.
//!
//! `top` (the live dashboard), `replay`, `record` and `demo` live in the `loopscope_tui` library (so that
//! tests and benchmarks reach them); `check` runs a program in CI mode.

#![forbid(unsafe_code)]

mod check;

use clap::{Parser, Subcommand};
use loopscope_tui::commands;
use loopscope_tui::demo::DemoOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// See what is blocking your tokio event loop.
///
/// Attach the agent to your runtime with one line:
///
///     let agent = loopscope::Agent::builder().install(&mut runtime_builder)?;
///
/// then build with RUSTFLAGS="--cfg tokio_unstable". The agent serves its stream on 127.0.0.1:6670;
/// `loopscope top` shows it live.
///
/// Try it: loopscope demo
#[derive(Parser, Debug)]
#[command(name = "loopscope", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Live dashboard of a running app (default address 127.0.0.1:6670).
    Top {
        /// The agent's address: HOST:PORT, :PORT, PORT or unix:/path.sock.
        addr: Option<String>,
    },
    /// The dashboard over a recording, with pause, step, seek and speed.
    Replay {
        /// A recording made with `loopscope record` (or the agent's `record` setting).
        file: PathBuf,
        /// Replay the intact part of a truncated or corrupt recording instead of refusing it.
        #[arg(long)]
        allow_damaged: bool,
    },
    /// Save an app's stream to a file, until the app exits, --duration passes, or Ctrl-C.
    Record {
        /// [ADDR] FILE: the agent's address (default 127.0.0.1:6670) and the file to write.
        #[arg(num_args = 1..=2, value_names = ["ADDR", "FILE"], required = true)]
        args: Vec<String>,
        /// Stop after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = loopscope_wire::parse_duration)]
        duration: Option<Duration>,
    },
    /// Start a small demo server whose handlers sometimes block, with the agent, and watch it.
    Demo {
        /// Where the demo's agent serves its stream.
        #[arg(long, default_value = "127.0.0.1:0")]
        serve: String,
        /// Worker threads of the demo app.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Run the app without the dashboard (watch it with `loopscope top ADDR` from another terminal).
        #[arg(long)]
        no_ui: bool,
        /// With --no-ui: stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Run a program with CI reporting on; fail if any poll blocked its worker.
    Check(check::CheckArgs),
}

/// Prints an error on one line (its causes joined with ": ") and gives exit code 1.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loopscope: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Top { addr }) => finish(commands::top(addr.as_deref())),
        Some(Command::Replay { file, allow_damaged }) => finish(commands::replay(&file, allow_damaged)),
        Some(Command::Record { args, duration }) => {
            let (addr, file) = match args.as_slice() {
                [file] => (None, file),
                [addr, file, ..] => (Some(addr.as_str()), file),
                [] => return finish(Err(anyhow::anyhow!("record needs a FILE"))),
            };
            finish(commands::record(addr, Path::new(file), duration))
        }
        Some(Command::Demo { serve, workers, no_ui, seconds }) => {
            finish(commands::demo(&DemoOptions { serve, workers }, no_ui, seconds))
        }
        Some(Command::Check(args)) => check::run(args),
        None => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let _ = cmd.print_long_help();
            std::process::ExitCode::SUCCESS
        }
    }
}
