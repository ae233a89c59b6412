//! `loopscope`: the command-line tool for the loopscope agent.
//!
//! `top` (the live dashboard), `replay`, `record` and `demo` live in the `loopscope_tui` library (so that
//! tests and benchmarks reach them); `check` runs a program in CI mode.

#![forbid(unsafe_code)]

mod check;

use clap::{Parser, Subcommand};
use loopscope_tui::commands;
use loopscope_tui::demo::DemoOptions;
use std::path::PathBuf;
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
    /// Live dashboard of a running app (default address 127.0.0.1:6670). Waits for the app to start.
    #[command(after_help = "Exit status: 0 when you quit (q, Ctrl-C) or the terminal closes; 1 when the address is \
                              invalid, something other than a loopscope agent (or with --console, a console server) \
                              answers, or (with --no-wait) nothing is listening yet; 128+N after signal N.")]
    Top {
        /// The agent's address: HOST:PORT, :PORT, PORT or unix:/path.sock.
        addr: Option<String>,
        /// Watch an app that runs console-subscriber (tokio-console's gRPC API) instead of a loopscope agent, at
        /// ADDR (default 127.0.0.1:6669): its tasks, polls, busy and scheduled time, and polls in flight past
        /// --max-poll as stalls. No stacks, classification or probes in this mode.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, conflicts_with = "addr",
              default_missing_value = loopscope_tui::console::DEFAULT_CONSOLE_ADDR)]
        console: Option<String>,
        /// With --console: a poll running longer than this is a stall (a loopscope agent uses its own threshold).
        #[arg(long, value_name = "DURATION", requires = "console", value_parser = parse_max_poll)]
        max_poll: Option<Duration>,
        /// Fail at once (exit 1) if nothing listens at the address yet, instead of waiting for the app.
        #[arg(long)]
        no_wait: bool,
        /// The window rates and counts on screen are averaged over (raw samples flicker), e.g. 1s, 500ms, 5s.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_refresh)]
        refresh: Duration,
    },
    /// The dashboard over a recording, with pause, step, seek and speed.
    #[command(after_help = "Exit status: 0 when you quit or the terminal closes; 1 when the file cannot be read, \
                              is not a recording, or is damaged (without --allow-damaged); 128+N after signal N.")]
    Replay {
        /// A recording made with `loopscope record` (or the agent's `record` setting).
        file: PathBuf,
        /// Replay the intact part of a truncated or corrupt recording instead of refusing it.
        #[arg(long)]
        allow_damaged: bool,
        /// The window rates and counts on screen are averaged over, e.g. 1s, 500ms, 5s.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_refresh)]
        refresh: Duration,
    },
    /// Save an app's stream to a file, until the app exits, --duration passes, or Ctrl-C.
    #[command(after_help = "\
Exit status: 0 when the recording ends; 1 when the address is bad, the app cannot be reached, or FILE exists
(without --force) or cannot be created; 2 when the arguments are wrong (FILE missing).

Examples:
  loopscope record -o app.lsrec                    # the agent on 127.0.0.1:6670
  loopscope record 127.0.0.1:7000 -o app.lsrec --duration 30s
  loopscope replay app.lsrec")]
    Record {
        /// The agent's address: HOST:PORT, :PORT, PORT or unix:/path.sock (default 127.0.0.1:6670).
        addr: Option<String>,
        /// The file to write (required; an existing file is kept unless --force).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
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
        /// The window rates and counts on screen are averaged over, e.g. 1s, 500ms, 5s.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_refresh)]
        refresh: Duration,
    },
    /// Run a program with CI reporting on; fail if any poll blocked its worker.
    Check(check::CheckArgs),
}

/// `top --max-poll`: at least 100µs, as the agent's threshold.
fn parse_max_poll(s: &str) -> Result<Duration, String> {
    let d = loopscope_wire::parse_duration(s)?;
    if d < Duration::from_micros(100) {
        return Err(format!("{s} is below the minimum of 100us"));
    }
    Ok(d)
}

/// `--refresh`: a duration between 100 ms and a minute.
fn parse_refresh(s: &str) -> Result<Duration, String> {
    let d = loopscope_wire::parse_duration(s)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&d) {
        return Err(format!("{s} is outside 100ms..60s"));
    }
    Ok(d)
}

/// The error as one line: its message, then each cause that adds something. Errors often repeat their
/// source's text in their own message (and `thiserror` makes a field named `source` the source), so a cause
/// already contained in the line so far is left out rather than printed twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

/// Prints an error on one line and gives exit code 1; after a signal, gives 128+N.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => match loopscope_tui::app::termination_signal() {
            Some(sig) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
            None => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("loopscope: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Top { console: Some(console), max_poll, no_wait, refresh, .. }) => {
            finish(commands::top_console(&console, max_poll, no_wait, refresh))
        }
        Some(Command::Top { addr, no_wait, refresh, .. }) => finish(commands::top(addr.as_deref(), no_wait, refresh)),
        Some(Command::Replay { file, allow_damaged, refresh }) => {
            finish(commands::replay(&file, allow_damaged, refresh))
        }
        Some(Command::Record { addr, output, force, duration }) => {
            finish(commands::record(addr.as_deref(), &output, force, duration))
        }
        Some(Command::Demo { serve, workers, no_ui, seconds, refresh }) => {
            finish(commands::demo(&DemoOptions { serve, workers }, no_ui, seconds, refresh))
        }
        Some(Command::Check(args)) => check::run(args),
        None => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let _ = cmd.print_long_help();
            std::process::ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_repeated_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(io).context("I/O error at the file header: No such file or directory (os error 2)");
        let e =
            e.context("cannot replay x.lsrec: I/O error at the file header: No such file or directory (os error 2)");
        assert_eq!(
            one_line(&e),
            "cannot replay x.lsrec: I/O error at the file header: No such file or directory (os error 2)"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&e), "outer: inner");
    }
}
