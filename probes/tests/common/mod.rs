//! Helpers shared by the integration tests: real threads doing real blocking, and deadline-based waiting.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopscope_probes::stack::{Frame, SamplerConfig, StackSampler};
use loopscope_probes::thread::{self, ThreadSample};
use loopscope_probes::{Tid, current_tid};

/// Generous: the machine has 2 cores and tests run in parallel.
pub const DEADLINE: Duration = Duration::from_secs(10);
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn sampler() -> Arc<StackSampler> {
    StackSampler::install(SamplerConfig::default()).unwrap()
}

/// A thread running `body(stop)`; `stop` is set by [`Target::stop`].
pub struct Target<T> {
    pub tid: Tid,
    pub stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Target<T> {
    pub fn spawn(name: &str, body: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                tx.send(current_tid()).unwrap();
                body(&flag)
            })
            .unwrap();
        let tid = rx.recv_timeout(DEADLINE).unwrap();
        Target { tid, stop, handle: Some(handle) }
    }

    pub fn stop(mut self) -> T {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl<T> Drop for Target<T> {
    fn drop(&mut self) {
        // Never leave a spinning thread behind when an assertion fails.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Polls `f` until it returns `Some`, failing the test after `DEADLINE`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until a sample of `tid` satisfies `pred`, and returns that sample.
pub fn wait_for_sample(tid: Tid, what: &str, pred: impl Fn(&ThreadSample) -> bool) -> ThreadSample {
    wait_for(what, || thread::sample(tid).ok().filter(|s| pred(s)))
}

pub fn in_syscall(s: &ThreadSample, name: &str) -> bool {
    s.syscall.as_ref().is_some_and(|sc| sc.name == name)
}

pub fn names(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.display_name()).collect()
}

pub fn has_function(frames: &[Frame], needle: &str) -> bool {
    frames.iter().any(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)))
}

/// A unique path in the temp dir.
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("loopscope-probes-{tag}-{}-{nanos}", std::process::id()))
}
