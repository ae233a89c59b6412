//! The stream client of the `loopscope-client` mode: what the dashboard does with the stream, without drawing.
//! It connects with `loopscope::wire`'s client, applies every message to the dashboard's client state
//! (`wire::state::State`), and runs in its own process, as `loopscope top` would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use loopscope::wire::client::Client;
use loopscope::wire::proto::ServeAddr;
use loopscope::wire::state::State;

use crate::child;

/// Connects to the agent at `addr`, then reads and applies its stream until the child closes our stdin.
pub fn run(addr: &str) -> Result<()> {
    let addr: ServeAddr = addr.parse().with_context(|| format!("{addr:?} is not a stream address"))?;
    let mut client = Client::connect_named(&addr, "loopscope-peers", child::client_ready_timeout())
        .with_context(|| format!("connecting to the agent at {addr}"))?;
    let mut state = State::new();
    state.apply_hello(client.hello());
    // Ready once the first message (the full state) is in, as a dashboard is once it shows something: the
    // run then starts with the client subscribed, however short it is.
    let first = client
        .recv(child::client_ready_timeout())
        .context("reading the stream")?
        .context("no message from the agent in time")?;
    state.apply(&first);
    let received = Arc::new(AtomicU64::new(1));
    let count = received.clone();
    std::thread::Builder::new()
        .name("stream-reader".into())
        .spawn(move || {
            loop {
                match client.recv(Duration::from_millis(200)) {
                    Ok(Some(msg)) => {
                        state.apply(&msg);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    // The child exits without a goodbye when its run is over.
                    Err(_) => return,
                }
            }
        })
        .context("starting the reader thread")?;
    child::client_main(received)
}
