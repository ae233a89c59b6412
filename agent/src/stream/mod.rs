//! The stream: what clients and recordings see of the agent (`wire/PROTOCOL.md`).
//!
//! Runs on the agent thread once per sample interval, never on the hot path. It reads the shared state (the
//! task and location tables through one scan, the retired totals, the latest runtime sample, the recent
//! stalls) and writes protocol messages to the outputs built at install: the server (`crate::server`, which
//! queues them per client), the agent-side recording and the CI records.
//!
//! * `feed.rs`: ticks, carrying only what changed since the last one;
//! * `full_state.rs`: a full state for a new client or the start of a recording;
//! * `outputs.rs`: the server, the recording, the CI records and the metrics exporter, and what goes to each;
//! * `metrics.rs`: the Prometheus view of ticks and stall events, published to `crate::exporter`.

pub(crate) mod feed;
pub(crate) mod full_state;
pub(crate) mod metrics;
pub(crate) mod outputs;
