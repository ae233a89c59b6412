//! `loopscope-peers`: the peers suite's runner, and the processes it starts (children, the stream client, the
//! load generator). See the crate's documentation and BENCHMARKS.md ("Against peers").

#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use loopscope_peers::{child, loadgen, runner, stream_client};

/// Runs every workload under every mode, in interleaved pairs against bare tokio, and prints the tables.
#[derive(Debug, Parser)]
#[command(name = "loopscope-peers", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    #[command(flatten)]
    run: runner::RunArgs,
}

/// The processes the runner starts; not meant to be run by hand.
#[derive(Debug, Subcommand)]
enum Internal {
    /// One measured run (started by the runner).
    #[command(hide = true)]
    Child(child::ChildArgs),
    /// Reads an agent's stream until stdin closes (started by a `loopscope-client` child).
    #[command(hide = true)]
    Client {
        /// The agent's stream address.
        addr: String,
    },
    /// Loads an HTTP server on 127.0.0.1 and prints req/s and latency (started by the runner).
    #[command(hide = true)]
    Loadgen(loadgen::LoadgenArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => runner::run(&cli.run),
        Some(Internal::Child(args)) => child::run(&args, child::prepare(args.mode)?),
        Some(Internal::Client { addr }) => stream_client::run(&addr),
        Some(Internal::Loadgen(args)) => {
            print!("{}", loadgen::run(&args)?.to_lines());
            Ok(())
        }
    }
}
