//! The tokio-console API's public settings and figures (the `console` feature): kept out of
//! `crate::console`, which the agent imports through the stream's outputs, so that the console never
//! imports the agent back.

use crate::console::hub::ConsoleStats;
use crate::console::server::ConsoleServer;
use crate::{Agent, AgentBuilder};
use std::net::SocketAddr;

impl AgentBuilder {
    /// Serve the tokio-console gRPC API (`console-api` 0.9, what `tokio-console` 0.1 speaks), so that
    /// `tokio-console http://ADDR` watches this app's tasks: their spawn locations, polls, busy and
    /// scheduled time, and loopscope's stalls (default: off; needs the `console` feature).
    /// `LOOPSCOPE_CONSOLE_ADDR` overrides it.
    ///
    /// `addr` is `HOST:PORT` with an IP address, a port alone (`"6669"`, tokio-console's default, served on
    /// 127.0.0.1), or `off`. Port 0 picks a free port (see [`Agent::console_addr`]). An address that does
    /// not parse, or cannot be bound, makes [`install`](Self::install) fail with an error that names it.
    ///
    /// The server runs on a thread with a tokio runtime of its own, fed by the agent thread every sample
    /// interval; nothing is added to the poll hooks, and a console that reads slowly loses only its own
    /// updates. What tokio-console shows is in the README.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder()
    ///     .console_addr("127.0.0.1:0")
    ///     .serve("off")
    ///     .ignore_env()
    ///     .install(&mut builder)?;
    /// let addr = agent.console_addr().expect("serving the console API");
    /// assert!(addr.ip().is_loopback());
    /// // `tokio-console http://{addr}` attaches to it.
    /// # Ok(())
    /// # }
    /// ```
    pub fn console_addr(mut self, addr: &str) -> Self {
        match crate::config::parse_console_addr(addr) {
            Ok(a) => {
                self.config.console = a;
                self.bad_console = None;
            }
            Err(reason) => self.bad_console = Some((addr.to_string(), reason)),
        }
        self
    }
}

impl Agent {
    /// The address the tokio-console API is served on, with the real port when configured with port 0;
    /// `None` when it is off (the default; see [`AgentBuilder::console_addr`]).
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder().serve("off").ignore_env().install(&mut builder).unwrap();
    /// assert_eq!(agent.console_addr(), None);
    /// ```
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.shared.console.get().map(ConsoleServer::local_addr)
    }

    /// What the tokio-console API server has done so far; `None` when it is off.
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder()
    ///     .console_addr("127.0.0.1:0")
    ///     .serve("off")
    ///     .ignore_env()
    ///     .install(&mut builder)
    ///     .unwrap();
    /// assert_eq!(agent.console_stats().map(|s| s.clients), Some(0));
    /// ```
    pub fn console_stats(&self) -> Option<ConsoleStats> {
        self.shared.console.get().map(|s| s.hub().stats())
    }
}
