//! The stream's outputs, built at install and driven by the agent thread: the server (live clients), the
//! agent-side recording (`LOOPSCOPE_RECORD`), the CI records (`LOOPSCOPE_CHECK_DIR`) and the metrics
//! exporter (`LOOPSCOPE_METRICS_ADDR`), and with the `console` feature the tokio-console API
//! (`LOOPSCOPE_CONSOLE_ADDR`, `crate::console`). Each tick and stall event goes to all of them; the runtime's end
//! says goodbye to clients, closes the files and stops serving metrics.

use super::feed::{Feed, proto_nanos};
use super::full_state::FullStateSource;
use super::metrics::MetricsModel;
use crate::exporter::http::MetricsServer;
use crate::scan::runtime_info;
use crate::server::Server;
use crate::shared::Shared;
use crate::shared::sample::RuntimeSample;
use crate::shared::stream::FileRecorder;
use crate::sync::lock;
use loopscope_wire::ci_record::{AgentInfo, CheckSummary, CheckWriter};
use loopscope_wire::proto::{
    AgentCapabilities, Goodbye, PROTOCOL_VERSION, ServeAddr, ServerHello, ServerMessage, Tick,
};
use loopscope_wire::record::Recorder;
use loopscope_wire::{StallEvent, StallPart, StallPhase};
use std::collections::HashMap;
use std::sync::Arc;

/// The greeting: what a client learns first about this agent.
pub(crate) fn hello(shared: &Shared, caps: &crate::capabilities::Capabilities) -> ServerHello {
    let facts = lock(&shared.facts).clone();
    ServerHello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime: runtime_info(shared, facts),
        pid: std::process::id(),
        program: std::env::args_os().next().map(|a| a.to_string_lossy().into_owned()),
        started_at_unix_nanos: crate::os::unix_nanos().saturating_sub(proto_nanos(shared.uptime())),
        sample_interval: shared.config.sample_interval,
        stall_threshold: shared.config.stall_threshold,
        slow_poll_threshold: shared.config.slow_poll_threshold,
        capabilities: AgentCapabilities {
            poll_timing: caps.poll_timing,
            stall_detection: caps.stall_detection,
            schedule_latency: caps.schedule_latency,
            runtime_metrics: cfg!(tokio_unstable),
            missing: caps.missing.clone(),
        },
    }
}

/// Starts the server and the recording at install, so that a bad address or path is an error the app sees
/// at once, and the real port is known before the runtime runs. The default address being taken is not an
/// error: one process often has several runtimes, and only the first can have it.
pub(crate) fn start(shared: &Arc<Shared>, caps: &crate::capabilities::Capabilities) -> Result<(), String> {
    let hello = hello(shared, caps);
    if let Some(addr) = &shared.config.serve {
        let source = FullStateSource::new(shared, shared.feed.clone());
        match Server::start(addr, hello.clone(), move || source.messages()) {
            Ok(server) => {
                let _ = shared.server.set(server);
            }
            Err(e) if *addr == ServeAddr::default() => {
                let msg = format!(
                    "{}: {}; this runtime's stream is not served (set LOOPSCOPE_ADDR to another address, \
                     e.g. 127.0.0.1:0, or to off)",
                    e,
                    std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()
                );
                warn_once(&msg);
                let _ = shared.serve_error.set(msg);
            }
            Err(e) => {
                let source = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                return Err(format!("{e}{source}"));
            }
        }
    }
    if let Some(dir) = &shared.config.check_dir {
        let mut info = AgentInfo::for_this_process(shared.id, shared.config.stall_threshold);
        info.runtime_name = shared.config.name.clone();
        info.probes = crate::watch::probing::status();
        info.missing = caps.missing.clone();
        if !caps.stall_detection {
            info.no_stall_detection = Some(caps.missing.join("; "));
        }
        match CheckWriter::create(dir, &info) {
            Ok(w) => *lock(&shared.check) = Some(w),
            // CI mode must not break the app, but the user must know why `loopscope check` saw nothing.
            Err(e) => {
                let msg = format!("loopscope: cannot write CI records to {}: {e}", dir.display());
                tracing::error!(target: "loopscope", "{msg}");
                eprintln!("{msg}");
            }
        }
    }
    if let Some(addr) = shared.config.metrics {
        // Off by default, so any address was asked for: one that can't be bound is an error, unlike the
        // stream's default address.
        let first = MetricsModel::new(&shared.config, shared.id).exposition();
        let server = MetricsServer::start(addr, first).map_err(|e| {
            format!("loopscope cannot serve metrics on {addr} (LOOPSCOPE_METRICS_ADDR / metrics_addr): {e}")
        })?;
        let _ = shared.metrics.set(server);
    }
    #[cfg(feature = "console")]
    if let Some(addr) = shared.config.console {
        // Off by default, so any address was asked for: one that can't be bound is an error.
        let tasks = crate::console::model::full_state_tasks(&shared.config);
        let queue = crate::console::hub::queue_for(tasks);
        let server = crate::console::server::ConsoleServer::start(addr, queue).map_err(|e| {
            format!("loopscope cannot serve the console API on {addr} (LOOPSCOPE_CONSOLE_ADDR / console_addr): {e}")
        })?;
        let _ = shared.console.set(server);
    }
    #[cfg(not(feature = "console"))]
    if let Some(addr) = shared.config.console {
        return Err(format!(
            "loopscope cannot serve the console API on {addr} (LOOPSCOPE_CONSOLE_ADDR / console_addr): this build \
             of loopscope has no `console` feature (add `features = [\"console\"]` to its dependency)"
        ));
    }
    if let Some(path) = &shared.config.record {
        let rec = Recorder::create(path, &hello)
            .map_err(|e| format!("loopscope cannot record the stream to {}: {e}", path.display()))?;
        *lock(&shared.recorder) = Some(rec);
    }
    Ok(())
}

/// The default address is usually taken by the process's first runtime; saying so once is enough.
fn warn_once(msg: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::warn!(target: "loopscope::server", "{msg}"));
}

/// The feed's outputs, driven by the agent thread.
#[derive(Debug)]
pub(crate) struct Outputs {
    feed: Feed,
    recorder: Option<FileRecorder>,
    /// CI records (`LOOPSCOPE_CHECK_DIR`).
    check: Option<CheckWriter>,
    /// The Prometheus view, when serving metrics.
    metrics: Option<MetricsModel>,
    /// The tokio-console view, when serving the console API.
    #[cfg(feature = "console")]
    console: Option<crate::console::model::ConsoleModel>,
    /// The recording starts with a full state, written at the first tick.
    recorder_primed: bool,
    hello_complete: bool,
    /// The latest event sent of each stall still running: the base of its next part.
    sent: HashMap<u64, StallEvent>,
}

/// Running stalls whose latest event [`Outputs`] keeps as the base of the next part.
const MAX_OPEN_SENT: usize = 1024;

impl Outputs {
    pub(crate) fn new(shared: &Arc<Shared>) -> Outputs {
        Outputs {
            feed: Feed::new(shared.feed.clone()),
            recorder: lock(&shared.recorder).take(),
            check: lock(&shared.check).take(),
            metrics: shared.metrics.get().map(|_| MetricsModel::new(&shared.config, shared.id)),
            #[cfg(feature = "console")]
            console: shared.console.get().map(|_| crate::console::model::ConsoleModel::new(&shared.config)),
            recorder_primed: false,
            hello_complete: false,
            sent: HashMap::new(),
        }
    }

    /// Whether anyone would read a tick now. The console view keeps every task the feed sends, so that a
    /// console that connects later gets them all: while it is on, the feed always sends.
    fn listening(&self, shared: &Shared) -> bool {
        #[cfg(feature = "console")]
        if self.console.is_some() {
            return true;
        }
        self.recorder.is_some() || shared.server.get().is_some_and(|s| s.client_count() > 0)
    }

    /// Once the runtime's flavor and workers are known, new clients are greeted with them.
    pub(crate) fn refresh_hello(&mut self, shared: &Shared) {
        if self.hello_complete || lock(&shared.facts).workers.is_none() {
            return;
        }
        self.hello_complete = true;
        if let Some(server) = shared.server.get() {
            let caps = crate::capabilities::Capabilities::of(&shared.config);
            if let Err(e) = server.set_hello(&hello(shared, &caps)) {
                tracing::debug!(target: "loopscope::server", "could not update the greeting: {e}");
            }
        }
    }

    /// One sample interval: a tick for every listener. `freed` are the ids of tasks reclaimed since the last
    /// call; it is emptied either way.
    pub(crate) fn tick(&mut self, shared: &Arc<Shared>, sample: Option<&RuntimeSample>, freed: &mut Vec<u64>) {
        if !self.listening(shared) {
            // Nobody to tell; a client that connects later gets a full state. Keep the marks current, though,
            // so that the first tick after it connects carries only what changed, not every task.
            self.feed.mark_all(shared);
            freed.clear();
            if self.metrics.is_some() {
                let tick = self.feed.totals_tick(shared, sample);
                self.publish_metrics(shared, &tick, sample);
            }
            return;
        }
        if let Some(rec) = &mut self.recorder
            && !self.recorder_primed
        {
            self.recorder_primed = true;
            let source = FullStateSource::new(shared, shared.feed.clone());
            for msg in source.messages() {
                if let Err(e) = rec.write(&msg) {
                    self.recording_failed(&e);
                    break;
                }
            }
        }
        let tick = self.feed.tick(shared, sample, std::mem::take(freed));
        // The metrics derive from the same tick clients get (one scan of the tables for both).
        self.publish_metrics(shared, &tick, sample);
        #[cfg(feature = "console")]
        if let (Some(model), Some(server)) = (&mut self.console, shared.console.get()) {
            model.tick(&tick, server.hub());
        }
        self.emit(shared, &ServerMessage::Tick(Box::new(tick)));
    }

    /// The metrics' view of a tick, published to the exporter.
    fn publish_metrics(&mut self, shared: &Shared, tick: &Tick, sample: Option<&RuntimeSample>) {
        if let (Some(model), Some(server)) = (&mut self.metrics, shared.metrics.get()) {
            let flavor = lock(&shared.facts).flavor.clone();
            let dropped_frames = shared.server.get().map_or(0, |s| s.stats().dropped_frames);
            server.publish(model.tick(tick, sample, flavor.as_deref(), dropped_frames));
        }
    }

    /// Every event of every stall, rate-limited or not: CI mode's records and the metrics' stall counts.
    pub(crate) fn stall_seen(&mut self, ev: &StallEvent) {
        if let Some(m) = &mut self.metrics {
            m.stall(ev);
        }
        #[cfg(feature = "console")]
        if let Some(c) = &mut self.console {
            c.stall(ev);
        }
        if let Some(w) = &mut self.check
            && let Err(e) = w.write_stall(ev)
            && w.failed_writes() == 1
        {
            tracing::error!(target: "loopscope", "loopscope: cannot write a CI record to {}: {e}", w.path().display());
        }
    }

    /// A stall event, as delivered to subscribers: to clients and the recording as a part (only what changed
    /// since the stall's previous event on the stream; see `StallPart`), to older clients whole.
    pub(crate) fn stall(&mut self, shared: &Shared, ev: &StallEvent) {
        if !self.listening(shared) {
            // Nobody hears it, so nobody will hold it as the base of the next part.
            self.sent.remove(&ev.stall_id);
            return;
        }
        let part = StallPart::diff(self.sent.get(&ev.stall_id), ev);
        let part = ServerMessage::StallPart(Box::new(part));
        if let Some(server) = shared.server.get() {
            server.broadcast_stall(&ServerMessage::Stall(Box::new(ev.clone())), &part);
        }
        self.record(&part);
        if ev.phase == StallPhase::Ended {
            self.sent.remove(&ev.stall_id);
        } else {
            // Stalls that never end (the runtime stops first) would pile up; a stall dropped from here is
            // sent whole next time, which is never wrong.
            if self.sent.len() >= MAX_OPEN_SENT {
                self.sent.clear();
            }
            self.sent.insert(ev.stall_id, ev.clone());
        }
    }

    fn emit(&mut self, shared: &Shared, msg: &ServerMessage) {
        if let Some(server) = shared.server.get() {
            server.broadcast(msg);
        }
        self.record(msg);
    }

    fn record(&mut self, msg: &ServerMessage) {
        if self.recorder_primed
            && let Some(rec) = &mut self.recorder
            && let Err(e) = rec.write(msg)
        {
            self.recording_failed(&e);
        }
    }

    fn recording_failed(&mut self, e: &loopscope_wire::record::RecordError) {
        tracing::warn!(target: "loopscope", "loopscope stopped recording the stream: {e}");
        self.recorder = None;
    }

    /// The runtime is gone: say goodbye to clients and close the recording properly.
    pub(crate) fn finish(&mut self, shared: &Shared, reason: &str) {
        if let Some(mut w) = self.check.take() {
            finish_check(shared, &mut w);
        }
        let bye = ServerMessage::Goodbye(Goodbye { reason: reason.to_string() });
        if let Some(mut rec) = self.recorder.take() {
            let done = if self.recorder_primed {
                rec.write(&bye).and_then(|()| rec.finish().map(drop))
            } else {
                rec.finish().map(drop)
            };
            if let Err(e) = done {
                tracing::warn!(target: "loopscope", "loopscope could not finish the recording: {e}");
            }
        }
        if let Some(server) = shared.server.get() {
            server.shutdown_with(reason);
        }
        if let Some(metrics) = shared.metrics.get() {
            metrics.shutdown();
        }
        #[cfg(feature = "console")]
        if let Some(console) = shared.console.get() {
            console.shutdown();
        }
    }
}

/// The last CI record: the agent's totals.
pub(crate) fn finish_check(shared: &Shared, w: &mut CheckWriter) {
    let snap = crate::scan::snapshot::build(shared);
    let summary = CheckSummary {
        finished_at_unix_nanos: crate::os::unix_nanos(),
        totals: snap.totals,
        dropped: snap.dropped,
        failed_writes: 0,
    };
    if let Err(e) = w.finish(&summary) {
        tracing::error!(target: "loopscope", "loopscope: cannot finish the CI record {}: {e}", w.path().display());
    }
}
