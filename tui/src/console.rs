//! `loopscope top --console`: the dashboard on an app that runs console-subscriber instead of the loopscope
//! agent.
//!
//! [`client`] reads the tokio-console gRPC API (`Instrument.WatchUpdates`, with the client tokio-console itself
//! uses) on the feed's thread; [`convert`] turns each update into the loopscope stream messages the dashboard
//! already reads from an agent (a greeting whose capabilities say what is missing, ticks with task samples,
//! stall events without stacks or classification), so one data flow feeds the model and the widgets.

pub mod client;
pub mod convert;

pub use client::{
    CONSOLE_TIMEOUT, ConsoleError, ConsoleEvent, DEFAULT_CONSOLE_ADDR, FirstContact, Watch, parse_console_addr,
};
pub use convert::{CONSOLE_MODE_NOTE, Converter, timestamp_nanos};
