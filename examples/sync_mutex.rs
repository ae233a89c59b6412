//! A small server whose handler takes a `std::sync::Mutex` that a background job holds for a long time
//! (a cache refresh). Waiting for a blocking lock inside an async handler parks the whole worker thread:
//! loopscope flags the poll while it waits, classifies it as a lock wait and names the function.
//!
//! ```text
//! cargo run --example sync_mutex                # prints stall reports for a few seconds
//! loopscope check -- cargo run --example sync_mutex
//! ```
//!
//! Options: `--seconds N` (default 3), `--hold-ms N` (how long the refresh holds the lock; default 120).
//!
//! The fix is `tokio::sync::Mutex` (its `lock().await` yields instead of blocking), or not holding a lock
//! across slow work.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Cache = Arc<Mutex<HashMap<u64, u64>>>;

/// The culprit: `std::sync::Mutex::lock` in an async handler. While another thread holds the lock, this
/// blocks the worker thread, and every task queued on it waits too.
#[inline(never)]
fn lock_contended_mutex(cache: &Cache, key: u64) -> u64 {
    let guard = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.get(&key).copied().unwrap_or_default()
}

async fn lookup_handler(cache: Cache, key: u64) -> u64 {
    lock_contended_mutex(&cache, key)
}

async fn healthy_handler(i: u64) -> u64 {
    tokio::task::yield_now().await;
    i * 2
}

/// The background job: rebuilds the cache while holding the lock (outside the runtime's workers, as a
/// blocking task should be). It tells `locked` once it holds the lock.
fn refresh_cache(cache: &Cache, hold: Duration, locked: tokio::sync::oneshot::Sender<()>) {
    let mut guard = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = locked.send(());
    std::thread::sleep(hold);
    for k in 0..100 {
        guard.insert(k, k * k);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let seconds = common::arg("--seconds", 3)?;
    let hold = Duration::from_millis(common::arg("--hold-ms", 120)?);

    let mut builder = common::runtime_builder();
    // The one line that attaches loopscope.
    let agent = loopscope::Agent::builder().install(&mut builder)?;
    common::note_missing(&agent);
    let runtime = builder.build()?;
    let stalls = agent.subscribe();
    let cache: Cache = Arc::new(Mutex::new(HashMap::new()));

    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut key = 0;
        while Instant::now() < deadline {
            // The refresh takes the lock on a blocking thread...
            let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
            let c = cache.clone();
            let refresh = tokio::task::spawn_blocking(move || refresh_cache(&c, hold, locked_tx));
            let _ = locked_rx.await;
            // ...while requests keep coming in, one of which needs the cache.
            let mut handles = Vec::new();
            for i in 0..50 {
                handles.push(tokio::spawn(healthy_handler(i)));
            }
            key += 1;
            handles.push(tokio::spawn(lookup_handler(cache.clone(), key)));
            for h in handles {
                let _ = h.await;
            }
            let _ = refresh.await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    drop(runtime);

    let snap = agent.snapshot();
    println!("\n{} polls, {} stalls", snap.totals.poll_count, snap.totals.stall_count);
    common::print_ended_stalls(&stalls);
    Ok(())
}
