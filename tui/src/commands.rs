//! The subcommands `top`, `replay`, `record` and `demo`. Each returns an error with a message for the user;
//! `main` prints it on one line and exits non-zero. Every check that can fail on bad input (address,
//! connection, handshake, recording) happens *before* the terminal switches to the dashboard, so an error
//! never lands on a garbled screen.

use crate::app::{self, Driver};
use crate::console::{FirstContact, parse_console_addr};
use crate::demo::{DemoApp, DemoOptions};
use crate::source::{CONNECT_TIMEOUT, LiveFeed, Replay};
use anyhow::Context as _;
use loopscope_wire::client::{Client, ClientError};
use loopscope_wire::proto::{DEFAULT_ADDR, ServeAddr};
use loopscope_wire::record::{Recorder, StreamEnd, record_stream};
use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The name this client gives the agent.
const CLIENT_NAME: &str = concat!("loopscope ", env!("CARGO_PKG_VERSION"));

/// Parses an address argument, defaulting to the agent's default address.
pub fn parse_addr(addr: Option<&str>) -> anyhow::Result<ServeAddr> {
    let text = addr.unwrap_or(DEFAULT_ADDR);
    match ServeAddr::parse(text)? {
        Some(a) => Ok(a),
        None => anyhow::bail!("{text:?} means \"do not serve\"; give the address the app's agent serves on"),
    }
}

fn require_terminal() -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "the dashboard needs a terminal (standard output is not one); to save the stream instead, use \
             `loopscope record [ADDR] -o FILE`"
        );
    }
    Ok(())
}

fn connect(addr: &ServeAddr) -> anyhow::Result<Client> {
    Ok(Client::connect_named(addr, CLIENT_NAME, CONNECT_TIMEOUT)?)
}

/// `loopscope top [ADDR]`: the dashboard on a running app. When nothing listens there yet, it waits for the app
/// (as tokio-console does), unless `no_wait`; anything else that goes wrong on the first connection (not a
/// loopscope agent, another protocol version, refused) is an error before the screen changes.
pub fn top(addr: Option<&str>, no_wait: bool, refresh: Duration) -> anyhow::Result<()> {
    let addr = parse_addr(addr)?;
    let feed = match Client::connect_named(&addr, CLIENT_NAME, CONNECT_TIMEOUT) {
        Ok(client) => {
            require_terminal()?;
            LiveFeed::start(client)
        }
        Err(ClientError::Unreachable { .. }) if !no_wait => {
            require_terminal()?;
            LiveFeed::wait_for(addr.clone(), CLIENT_NAME)
        }
        Err(e) => return Err(e.into()),
    }
    .context("starting the network thread")?;
    app::run(Driver::Live(feed), addr.to_string(), refresh)
}

/// The stall threshold of `top --console` when `--max-poll` is not given: the agent's default.
pub const CONSOLE_DEFAULT_MAX_POLL: Duration = Duration::from_millis(10);

/// `loopscope top --console [ADDR]`: the dashboard on an app that runs console-subscriber (see
/// [`crate::console`]). Waits for the app as `top` does, unless `no_wait`; a server that is not a console server
/// is an error before the screen changes.
pub fn top_console(addr: &str, max_poll: Option<Duration>, no_wait: bool, refresh: Duration) -> anyhow::Result<()> {
    let addr = parse_console_addr(addr)?;
    let threshold = max_poll.unwrap_or(CONSOLE_DEFAULT_MAX_POLL);
    let (feed, first) = LiveFeed::console(addr, threshold).context("starting the network thread")?;
    match first {
        FirstContact::Connected => {}
        FirstContact::Unreachable(e) if no_wait => return Err(e.into()),
        FirstContact::Unreachable(_) => {}
        FirstContact::Failed(e) => return Err(e.into()),
    }
    require_terminal()?;
    app::run(Driver::Live(feed), format!("console {addr}"), refresh)
}

/// `loopscope replay FILE`: the dashboard over a recording.
pub fn replay(file: &Path, allow_damaged: bool, refresh: Duration) -> anyhow::Result<()> {
    let replay = Replay::load(file, allow_damaged)?;
    require_terminal()?;
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    app::run(Driver::Replay(Box::new(replay)), name, refresh)
}

/// Creates the file `record` writes: a new file, or (with `force`) over an existing one. An existing file is
/// never replaced by mistake: it may be the only copy of an earlier incident.
fn create_output(file: &Path, force: bool) -> anyhow::Result<std::fs::File> {
    let mut open = std::fs::File::options();
    open.write(true);
    if force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    open.open(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!("{} already exists; pass --force to overwrite it, or choose another file", file.display())
        }
        _ => anyhow::anyhow!("cannot create {}: {e}", file.display()),
    })
}

/// `loopscope record [ADDR] -o FILE`: saves the stream until the app goes away, `duration` passes, or Ctrl-C.
pub fn record(addr: Option<&str>, file: &Path, force: bool, duration: Option<Duration>) -> anyhow::Result<()> {
    let addr = parse_addr(addr)?;
    if file.is_dir() {
        anyhow::bail!("{} is a directory; give the recording's file name, e.g. -o app.lsrec", file.display());
    }
    let mut client = connect(&addr)?;
    let mut recorder = Recorder::with_name(
        std::io::BufWriter::new(create_output(file, force)?),
        client.hello(),
        unix_now(),
        CLIENT_NAME,
    )
    .with_context(|| format!("cannot write {}", file.display()))?;
    let stop = app::termination_flag();
    eprintln!(
        "loopscope: recording {addr} ({}) to {}{}; Ctrl-C stops",
        client.hello().program.as_deref().unwrap_or("app"),
        file.display(),
        duration.map_or(String::new(), |d| format!(" for {d:?}")),
    );
    let started = Instant::now();
    let summary =
        record_stream(&mut client, &mut recorder, duration.map(|d| started + d), || stop.load(Ordering::Relaxed))
            .with_context(|| format!("recording to {}", file.display()))?;
    recorder.finish().with_context(|| format!("finishing {}", file.display()))?;
    let why = match summary.end {
        StreamEnd::Goodbye(reason) => format!("the app said goodbye: {reason}"),
        StreamEnd::Closed => "the app closed the connection".into(),
        StreamEnd::Deadline => "time is up".into(),
        StreamEnd::Stopped => "stopped".into(),
    };
    eprintln!(
        "loopscope: recorded {} messages ({} KiB) in {:.1}s to {} ({why}); replay with `loopscope replay {}`",
        summary.messages,
        summary.bytes / 1024,
        started.elapsed().as_secs_f64(),
        file.display(),
        file.display()
    );
    Ok(())
}

/// `loopscope demo`: starts the demo app and opens the dashboard on it (or, with `no_ui`, serves until
/// Ctrl-C or `seconds`).
pub fn demo(opts: &DemoOptions, no_ui: bool, seconds: Option<u64>, refresh: Duration) -> anyhow::Result<()> {
    if !no_ui {
        require_terminal()?;
    }
    let app = DemoApp::start(opts)?;
    let addr = app.agent_addr()?;
    for m in app.missing_capabilities() {
        eprintln!("loopscope demo: note: {m}");
    }
    if no_ui {
        let stalls = app.subscribe();
        eprintln!(
            "loopscope demo: app serving on {} (HTTP-like); loopscope agent on {addr}\n  watch it with: \
             loopscope top {addr}\n  stall reports follow, one line per stall when it ends; Ctrl-C stops",
            app.http_addr()
        );
        let stop = app::termination_flag();
        let started = Instant::now();
        let deadline = seconds.map(|s| started + Duration::from_secs(s));
        let mut reported = 0u64;
        while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            // Waiting on the subscription (not sleeping) prints each report as soon as the stall ends.
            if let Some(ev) = stalls.recv_timeout(Duration::from_millis(50))
                && ev.phase == loopscope::StallPhase::Ended
            {
                reported += 1;
                println!("{:>7.2}s  stall #{reported}: {}", started.elapsed().as_secs_f64(), ev.summary());
            }
        }
        let lost = stalls.dropped();
        let lost =
            if lost > 0 { format!(" ({lost} more dropped: this terminal could not keep up)") } else { String::new() };
        eprintln!("loopscope demo: {reported} stalls reported in {:.1}s{lost}", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let client = connect(&addr).context("connecting to the demo's own agent")?;
    let feed = LiveFeed::start(client).context("starting the network thread")?;
    let result = app::run(Driver::Live(feed), format!("demo agent {addr}"), refresh);
    drop(app);
    result
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
