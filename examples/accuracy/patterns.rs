//! The eight blocking patterns the experiment times, each a function of its own (`#[inline(never)]`, so the
//! stall report can name it), and the futures that run them. Split out of `main.rs`, which runs and scores
//! them.

use super::*;

/// When the pattern began to block, in Unix nanoseconds: stored by the pattern itself, just before it blocks.
pub(super) static BLOCK_START: AtomicU64 = AtomicU64::new(0);

pub(super) fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(super) fn mark_start() {
    BLOCK_START.store(unix_nanos(), Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pattern {
    Sleep,
    Spin,
    Mutex,
    Pipe,
    Child,
    Nested,
    Select,
    Unconstrained,
}

pub(super) const PATTERNS: [Pattern; 8] = [
    Pattern::Sleep,
    Pattern::Spin,
    Pattern::Mutex,
    Pattern::Pipe,
    Pattern::Child,
    Pattern::Nested,
    Pattern::Select,
    Pattern::Unconstrained,
];

impl Pattern {
    pub(super) fn name(self) -> &'static str {
        match self {
            Pattern::Sleep => "sleep",
            Pattern::Spin => "CPU spin",
            Pattern::Mutex => "std Mutex",
            Pattern::Pipe => "pipe read",
            Pattern::Child => "child wait",
            Pattern::Nested => "nested async",
            Pattern::Select => "select!",
            Pattern::Unconstrained => "unconstrained",
        }
    }

    /// The function the report should name (part of the innermost app frame's name).
    pub(super) fn culprit(self) -> &'static str {
        match self {
            Pattern::Sleep => "pattern_sleep",
            Pattern::Spin => "pattern_spin",
            Pattern::Mutex => "pattern_mutex",
            Pattern::Pipe => "pattern_pipe",
            Pattern::Child => "pattern_child",
            Pattern::Nested => "pattern_nested",
            Pattern::Select => "pattern_select",
            Pattern::Unconstrained => "pattern_unconstrained",
        }
    }

    pub(super) fn classified_right(self, c: &Classification) -> bool {
        match self {
            Pattern::Sleep | Pattern::Nested | Pattern::Select => {
                matches!(c, Classification::Syscall { name, .. } if name.contains("nanosleep"))
            }
            Pattern::Spin | Pattern::Unconstrained => matches!(c, Classification::CpuBound),
            Pattern::Mutex => matches!(c, Classification::LockWait { .. }),
            Pattern::Pipe => {
                matches!(c, Classification::Syscall { name, fd_target: Some(t) } if name == "read" && t.contains("pipe"))
            }
            Pattern::Child => matches!(c, Classification::Syscall { name, .. } if name == "wait4" || name == "waitid"),
        }
    }
}

#[inline(never)]
pub(super) fn pattern_sleep(d: Duration) {
    mark_start();
    std::thread::sleep(d);
}

/// Spins for `d` of the thread's own CPU time, not wall time: on a busy machine a wall-time spin may get too
/// little CPU to be a stall of its own at all (loopscope then rightly calls it delayed by the OS).
#[inline(never)]
pub(super) fn pattern_spin(d: Duration) -> u64 {
    mark_start();
    let tid = loopscope_probes::current_tid();
    let cpu = || loopscope_probes::thread::cpu_time(tid).unwrap_or_default();
    let start = cpu();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    // The clock is read every ~100 µs of work, so a stack sample almost always lands in this loop rather than
    // in loopscope's clock function (which counts as runtime code, not the app's: the stable mode's rule wants
    // the app's own code innermost).
    while cpu() - start < d {
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x
}

#[inline(never)]
pub(super) fn pattern_mutex(m: &Mutex<()>) {
    mark_start();
    drop(m.lock());
}

#[inline(never)]
pub(super) fn pattern_pipe(r: &mut std::io::PipeReader) {
    mark_start();
    let mut b = [0u8; 1];
    let _ = r.read(&mut b);
}

#[inline(never)]
pub(super) fn pattern_child(d: Duration) {
    let child = std::process::Command::new("sleep").arg(format!("{:.3}", d.as_secs_f64())).spawn();
    mark_start();
    if let Ok(mut child) = child {
        let _ = child.wait();
    }
}

// The three sleeping patterns differ by a nanosecond or two: identical functions are merged in release builds
// (rustc enables LLVM's function merging), and all three would then be named `pattern_sleep`.
#[inline(never)]
pub(super) fn pattern_nested(d: Duration) {
    mark_start();
    std::thread::sleep(d + Duration::from_nanos(1));
}

async fn nested_inner(d: Duration) {
    tokio::task::yield_now().await;
    pattern_nested(d);
}

async fn nested_outer(d: Duration) {
    nested_inner(d).await;
}

#[inline(never)]
pub(super) fn pattern_select(d: Duration) {
    mark_start();
    std::thread::sleep(d + Duration::from_nanos(2));
}

/// Receives until `d` has passed from a channel that always has a message ready: under `unconstrained`, tokio's
/// cooperative budget never makes `recv` return `Pending`, so the task never yields.
async fn pattern_unconstrained(mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>, d: Duration) -> u64 {
    mark_start();
    let start = Instant::now();
    let mut sum = 0u64;
    while start.elapsed() < d {
        match rx.recv().await {
            Some(v) => sum = pattern_unconstrained_step(sum, v),
            None => break,
        }
    }
    sum
}

#[inline(never)]
pub(super) fn pattern_unconstrained_step(sum: u64, v: u64) -> u64 {
    std::hint::black_box(sum.wrapping_mul(31).wrapping_add(v))
}

pub(super) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A workload of the false-stall table: its future, for a run of the given length.
pub(super) type Workload = fn(Duration) -> BoxFuture;

/// The pattern's future, with whatever it needs set up outside the poll (a lock holder, a pipe writer), so
/// that only the blocking itself happens inside it.
pub(super) fn prepare(p: Pattern, d: Duration) -> BoxFuture {
    match p {
        Pattern::Sleep => Box::pin(async move { pattern_sleep(d) }),
        Pattern::Spin => Box::pin(async move {
            std::hint::black_box(pattern_spin(d));
        }),
        Pattern::Mutex => {
            let m = Arc::new(Mutex::new(()));
            let (held_tx, held_rx) = std::sync::mpsc::channel();
            let holder = m.clone();
            std::thread::spawn(move || {
                let guard = holder.lock();
                let _ = held_tx.send(());
                std::thread::sleep(d);
                drop(guard);
            });
            let _ = held_rx.recv();
            Box::pin(async move { pattern_mutex(&m) })
        }
        Pattern::Pipe => {
            let (mut r, mut w) = std::io::pipe().expect("a pipe");
            std::thread::spawn(move || {
                std::thread::sleep(d);
                let _ = w.write_all(b"x");
            });
            Box::pin(async move { pattern_pipe(&mut r) })
        }
        Pattern::Child => Box::pin(async move { pattern_child(d) }),
        Pattern::Nested => Box::pin(nested_outer(d)),
        Pattern::Select => Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = async { pattern_select(d) } => {}
            }
        }),
        Pattern::Unconstrained => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // More messages than 2.5 thresholds can drain, so one is always ready.
            for i in 0..4_000_000u64 {
                let _ = tx.send(i);
            }
            Box::pin(async move {
                std::hint::black_box(tokio::task::unconstrained(pattern_unconstrained(rx, d)).await);
                drop(tx);
            })
        }
    }
}
