//! The tokio-console API, served by the agent (the `console` feature; `LOOPSCOPE_CONSOLE_ADDR` or
//! `AgentBuilder::console_addr`), so that the existing `tokio-console` can watch an app that runs loopscope
//! instead of console-subscriber.
//!
//! It is one more output of the stream's feed, like the Prometheus exporter: the agent thread turns each tick
//! (the tasks that changed, the poll in flight on each worker) and every stall event into console-api
//! [`Update`]s (`model.rs`) and hands them to a [`Hub`], which puts them on each client's bounded queue. A
//! tonic server on a thread and a current-thread tokio runtime of its own (built here, without loopscope's
//! hooks: its polls are neither timed nor charged to the app) serves those queues (`service.rs`). So nothing
//! new runs in the poll hooks: the hot path is loopscope's, whether or not a console listens; the agent
//! thread never waits for a client, and a client that reads slowly or not at all loses only its own updates
//! (counted), and is sent a full state again once its queue has room.
//!
//! What the console gets, and what it doesn't, is in the README ("tokio-console").

//!
//! * `hub.rs`: where the agent thread's updates meet the clients' bounded queues;
//! * `model.rs`: the console's view of ticks and stall events, on the agent thread;
//! * `server.rs`: the tonic server's thread and runtime; `service.rs`: the gRPC calls.
//!
//! The public settings (`AgentBuilder::console_addr`, `Agent::console_addr`, `Agent::console_stats`) are in
//! `crate::console_settings`, outside this folder, so that it never imports the agent back.

pub(crate) mod hub;
pub(crate) mod model;
pub(crate) mod server;
mod service;
