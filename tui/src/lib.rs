//! The `loopscope` command-line tool: a live terminal dashboard for the loopscope agent's stream, a replayer
//! and recorder for that stream, and an embedded demo app.
//!
//! Three layers, as in `STYLE.md`: [`loopscope_wire::state::State`] holds the data decoded from the wire;
//! [`view::ViewState`] holds per-screen state (selection, sort, filter) and turns keys into updates; [`ui`]
//! draws them with pure functions. [`source`] feeds the state from a live agent (on its own thread) or from a
//! recording, and [`console`] from an app that runs console-subscriber; [`app`] runs the terminal loop; [`commands`] implements the subcommands.

#![forbid(unsafe_code)]

pub mod app;
pub mod commands;
pub mod console;
pub mod demo;
pub mod model;
pub mod source;
pub mod terminal;
pub mod ui;
pub mod view;
