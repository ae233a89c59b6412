//! Watching polls while they run: the watchdog thread (`loopscope-watchdog`) and the prober thread
//! (`loopscope-prober`).
//!
//! The watchdog reads every thread's slot (the poll in flight, its long-poll ring) and the scheduler clocks of
//! a stalled thread, and writes stall flags ([`watchdog::WatchMsg`]) with the looks it wants taken; the
//! prober takes those looks (`/proc`, perf counters, the stack, through `loopscope-probes`) and forwards
//! everything, in order, to the agent thread. Both get the shared state and their channel ends from
//! `lifecycle.rs`; neither blocks on the other or on the agent thread.
//!
//! * `watchdog.rs`: the watchdog's loop and the messages it sends;
//! * `accounting.rs`: where a stalled poll's wall time went (on CPU, blocked, waiting for a CPU);
//! * `prober.rs`: the prober's loop;
//! * `probing.rs`: the process-wide probes, the looks they take, and the culprit built from them.

pub(crate) mod accounting;
pub(crate) mod prober;
pub(crate) mod probing;
pub(crate) mod watchdog;
