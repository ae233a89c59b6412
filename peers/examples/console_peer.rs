//! The console child of the peers suite: a measured run under console-subscriber (`child --mode console` or
//! `console-client`), and the gRPC client of the `console-client` mode (`client --url ...`).
//!
//! An example rather than a mode of the suite's binary because console-subscriber is a dev-dependency: it turns
//! on tokio's `tracing` feature, and the runner builds this file in a cargo invocation of its own so that the
//! feature reaches this process only (see `loopscope_peers::runner`). Started by the runner, not by hand.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use console_api::instrument::InstrumentRequest;
use console_api::instrument::instrument_client::InstrumentClient;
use loopscope_peers::Mode;
use loopscope_peers::child::{self, ChildArgs, ClientProcess, Prepared};
use loopscope_peers::workloads::Spawner;
use tracing_subscriber::prelude::*;

#[derive(Debug, Parser)]
#[command(name = "console_peer")]
struct Cli {
    #[command(subcommand)]
    command: Internal,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// One measured run under console-subscriber.
    Child(ChildArgs),
    /// Subscribes to a console server's instrument updates until stdin closes.
    Client {
        /// The console server, e.g. `http://127.0.0.1:6669`.
        #[arg(long)]
        url: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Internal::Child(args) => run_child(&args),
        Internal::Client { url } => run_client(url),
    }
}

fn run_child(args: &ChildArgs) -> Result<()> {
    if !args.mode.needs_console() {
        bail!("console_peer runs the console modes only, not {}", args.mode.arg());
    }
    // console-subscriber binds its own server; find it a free loopback port (freed again just before it binds)
    // rather than the default 6669, which a real app on this machine may hold.
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
    // The defaults otherwise: what `console_subscriber::init()` gives an app, minus reading the environment.
    let layer =
        console_subscriber::ConsoleLayer::builder().server_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).spawn();
    tracing_subscriber::registry().with(layer).init();
    let runtime = child::runtime_builder().build().context("building the runtime")?;
    let client = if args.mode == Mode::ConsoleClient {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["client", "--url", &format!("http://127.0.0.1:{port}")]);
        Some(ClientProcess::start(cmd)?)
    } else {
        None
    };
    child::run(args, Prepared { runtime, spawner: Spawner::default(), agent: None, client })
}

/// What `tokio-console` does on the wire: one `WatchUpdates` stream, read to the end. It says `ready` after
/// the first update (console sends the current state to a new watcher at once), so the run starts subscribed.
fn run_client(url: String) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let deadline = Instant::now() + child::client_ready_timeout();
            // The server starts on console's own thread; retry until it listens.
            let mut client = loop {
                match InstrumentClient::connect(url.clone()).await {
                    Ok(c) => break c,
                    Err(e) if Instant::now() >= deadline => {
                        let _ = ready_tx.send(Err(e).with_context(|| format!("connecting to console at {url}")));
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            // A full update of 200k tasks is far above tonic's 4 MiB default.
            client = client.max_decoding_message_size(usize::MAX);
            let mut stream = match client.watch_updates(InstrumentRequest {}).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    let _ = ready_tx.send(Err(e).context("subscribing to instrument updates"));
                    return;
                }
            };
            let mut first = true;
            while let Ok(Some(_update)) = stream.message().await {
                count.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut first) {
                    let _ = ready_tx.send(Ok(()));
                }
            }
            if first {
                let _ = ready_tx.send(Err(anyhow::anyhow!("the update stream ended before its first update")));
            }
        })
    });
    match ready_rx.recv_timeout(child::client_ready_timeout() + Duration::from_secs(5)) {
        Ok(Ok(())) => child::client_main(received),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("no update from console within {:?}", child::client_ready_timeout()),
    }
}
