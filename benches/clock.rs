//! What the hot path's clock costs on this machine: the floor under the per-poll overhead.
//!
//! ```text
//! cargo bench --bench clock
//! ```
//!
//! The poll hooks read the TSC (through `quanta`) once before and once after each poll. This prints the cost
//! of those reads next to `std::time::Instant::now()`, best of 7 runs of 20 M iterations each.

use std::hint::black_box;
use std::time::Instant;

fn best_ns(n: u64, mut f: impl FnMut() -> u64) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        let mut acc = 0u64;
        for _ in 0..n {
            acc = acc.wrapping_add(f());
        }
        black_box(acc);
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let clock = quanta::Clock::new();
    let n = 20_000_000;
    println!("\n## clock reads (best of 7 x {n})\n");
    println!("| operation | ns |");
    println!("|---|---:|");
    let rows: [(&str, f64); 4] = [
        ("loop overhead", best_ns(n, || black_box(1))),
        ("quanta `Clock::raw()` (one TSC read)", best_ns(n, || clock.raw())),
        (
            "two TSC reads + `delta_as_nanos` (what a poll pays)",
            best_ns(n, || {
                let a = clock.raw();
                let b = clock.raw();
                clock.delta_as_nanos(a, b)
            }),
        ),
        ("`Instant::now()`", best_ns(n, || Instant::now().elapsed().as_nanos() as u64)),
    ];
    for (name, ns) in rows {
        println!("| {name} | {ns:.1} |");
    }
}
