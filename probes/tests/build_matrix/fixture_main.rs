//! The build-matrix fixture (see `probes/tests/build_matrix.rs`): three threads block the way handlers do (a
//! sleep, a CPU spin, a mutex wait); the main thread captures each one's stack with loopscope's probes,
//! symbolizes it in-process, and prints what a user would be shown:
//!
//! ```text
//! CULPRIT <handler> <first user frame's function> <file or -> <line or 0>
//! FRAMES <handler> <every frame's name @file:line origin, innermost first, separated by " | ">
//! HINT <a symbolizer hint>
//! ```

use loopscope_probes::stack::{SamplerConfig, StackSampler, Symbolizer, first_user_frame};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

mod handlers {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Sleeps, then does a little work, so the call to `sleep` is not a tail call.
    #[inline(never)]
    pub fn sleeping_handler() -> u64 {
        std::thread::sleep(Duration::from_secs(20));
        std::hint::black_box(7)
    }

    #[inline(never)]
    pub fn spinning_handler(stop: &AtomicBool) -> u64 {
        let mut x = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for i in 0..1_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        x
    }

    #[inline(never)]
    pub fn mutex_waiting_handler(m: &Mutex<()>) -> u64 {
        let guard = m.lock().unwrap_or_else(|p| p.into_inner());
        drop(guard);
        std::hint::black_box(9)
    }
}

fn state(tid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    stat.rsplit(')').next().and_then(|rest| rest.trim_start().chars().next()).unwrap_or('?')
}

fn main() {
    let sampler = StackSampler::install(SamplerConfig::default()).expect("install the stack sampler");
    let stop = Arc::new(AtomicBool::new(false));
    let lock = Arc::new(Mutex::new(()));
    let held = lock.lock().expect("hold the lock");
    let (tx, rx) = mpsc::channel();
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            tx.send((name, loopscope_probes::current_tid())).unwrap();
            f();
        })
    };
    let s = stop.clone();
    let l = lock.clone();
    let threads = [
        spawn("sleeping_handler", Box::new(|| drop(handlers::sleeping_handler()))),
        spawn("spinning_handler", Box::new(move || drop(handlers::spinning_handler(&s)))),
        spawn("mutex_waiting_handler", Box::new(move || drop(handlers::mutex_waiting_handler(&l)))),
    ];
    let mut symbolizer = Symbolizer::new();
    for _ in 0..threads.len() {
        let (name, tid) = rx.recv().expect("a thread's id");
        sampler.prepare_thread(tid).expect("prepare the thread");
        let blocked = name != "spinning_handler";
        // Wait until the thread is where it blocks (sleeping), or has spun for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        while blocked && state(tid) != 'S' && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        // A few tries: a capture can miss a thread that is between two states.
        let mut best = None;
        for _ in 0..20 {
            if let Ok(raw) = sampler.capture(tid, Duration::from_secs(2)) {
                let frames = symbolizer.symbolize(&raw);
                let found = frames.iter().any(|f| f.function.as_deref().is_some_and(|n| n.contains(name)));
                best = Some(frames);
                if found {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let frames = best.unwrap_or_default();
        match first_user_frame(&frames) {
            Some(f) => println!(
                "CULPRIT {name} {} {} {}",
                f.display_name(),
                f.file.as_deref().unwrap_or("-"),
                f.line.unwrap_or(0)
            ),
            None => println!("CULPRIT {name} - - 0"),
        }
        let names: Vec<String> = frames
            .iter()
            .map(|f| format!("{} @{}:{} {:?}", f.display_name(), f.file.as_deref().unwrap_or("-"), f.line.unwrap_or(0), f.origin))
            .collect();
        println!("FRAMES {name} {}", names.join(" | "));
    }
    for hint in symbolizer.hints() {
        println!("HINT {hint}");
    }
    stop.store(true, Ordering::Relaxed);
    drop(held);
    // The sleeper is left asleep: the process exits here.
    std::process::exit(0);
}
