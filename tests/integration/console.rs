//! The tokio-console API (the `console` feature) end to end: an app with the agent serving it on an
//! ephemeral port, watched over real sockets with `console-api`'s own client — the `InstrumentClient`
//! tokio-console uses — on a runtime of the test's own. Also clients that misbehave: garbage bytes, and a
//! console that never reads.

use crate::support::*;
use console_api::instrument::instrument_client::InstrumentClient;
use console_api::instrument::{
    InstrumentRequest, PauseRequest, ResumeRequest, StateRequest, TaskDetailsRequest, Temporality, Update,
};
use console_api::{field, tasks};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tonic::transport::Channel;

fn console_agent() -> loopscope::AgentBuilder {
    agent().console_addr("127.0.0.1:0").sample_interval(ms(50)).stall_threshold(ms(20))
}

/// A plain runtime for the client (no agent on it).
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn connect(addr: SocketAddr) -> InstrumentClient<Channel> {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        match InstrumentClient::connect(format!("http://{addr}")).await {
            Ok(c) => return c,
            Err(e) if tokio::time::Instant::now() > end => panic!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(ms(20)).await,
        }
    }
}

/// What a console knows of one task.
#[derive(Debug, Default, Clone)]
struct Seen {
    task: Option<tasks::Task>,
    stats: Vec<tasks::Stats>,
    /// A stats update that showed the task running (a poll in flight), while its stall field was set.
    running_in_stall: bool,
}

fn str_field(task: &tasks::Task, name: &str) -> Option<String> {
    task.fields.iter().find(|f| f.name == Some(field::Name::StrName(name.into()))).and_then(|f| match &f.value {
        Some(field::Value::StrVal(s)) => Some(s.clone()),
        _ => None,
    })
}

/// Applies an update the way tokio-console does: metadata first, then new tasks (which need their metadata
/// and their stats in the same update), then stats.
fn apply(update: Update, metas: &mut HashMap<u64, console_api::Metadata>, tasks: &mut HashMap<u64, Seen>) {
    assert!(update.now.is_some(), "every update carries its time");
    for m in update.new_metadata.into_iter().flat_map(|m| m.metadata) {
        metas.insert(m.id.unwrap().id, m.metadata.unwrap());
    }
    let Some(tu) = update.task_update else { return };
    for t in tu.new_tasks {
        let id = t.id.unwrap().id;
        let meta = t.metadata.as_ref().expect("tokio-console skips a task without metadata").id;
        assert!(metas.contains_key(&meta), "task {id}'s metadata {meta} was registered before it");
        assert!(tu.stats_update.contains_key(&id), "a new task's stats come in the same update");
        tasks.entry(id).or_default().task = Some(t);
    }
    for (id, s) in tu.stats_update {
        let seen = tasks.entry(id).or_default();
        assert!(s.created_at.is_some(), "tokio-console expects created_at");
        let poll = s.poll_stats.expect("tokio-console expects poll stats");
        let time = |t: Option<_>| t.map(|t| std::time::SystemTime::try_from(t).unwrap());
        if time(poll.last_poll_started) > time(poll.last_poll_ended)
            && seen.task.as_ref().and_then(|t| str_field(t, "loopscope.stall")).is_some()
        {
            seen.running_in_stall = true;
        }
        seen.stats.push(s);
    }
}

#[test]
fn tokio_console_sees_tasks_with_locations_polls_and_stalls() {
    let (rt, agent) = multi_thread(2, console_agent());
    let addr = agent.console_addr().expect("serving the console API");
    assert!(addr.ip().is_loopback());
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Polls often, and blocks its worker for 150 ms every 20th poll.
    #[rustfmt::skip]
    let (line, app) = (line!(), rt.spawn(async move { let mut n = 0u64; while !s.load(Relaxed) { n += 1; if n.is_multiple_of(20) { std::thread::sleep(ms(150)); } tokio::time::sleep(ms(2)).await; } }));

    let client = client_runtime();
    let (task, details, states) = client.block_on(async {
        let mut c = connect(addr).await;
        let mut updates = c.watch_updates(InstrumentRequest {}).await.unwrap().into_inner();
        let mut state = c.watch_state(StateRequest {}).await.unwrap().into_inner();
        let first = state.message().await.unwrap().unwrap();
        let mut states = vec![first.temporality];

        let (mut metas, mut tasks) = (HashMap::new(), HashMap::new());
        let mine = |tasks: &HashMap<u64, Seen>| {
            tasks
                .iter()
                .find(|(_, s)| {
                    s.task.as_ref().and_then(|t| t.location.as_ref()).is_some_and(|l| {
                        l.file.as_deref().is_some_and(|f| f.ends_with("console.rs")) && l.line == Some(line)
                    })
                })
                .map(|(id, s)| (*id, s.clone()))
        };
        let end = tokio::time::Instant::now() + DEADLINE;
        let seen = loop {
            let u = tokio::time::timeout_at(end, updates.message())
                .await
                .unwrap_or_else(|_| panic!("deadline passed; the console saw {:#?}", mine(&tasks)))
                .unwrap()
                .expect("the update stream stays open");
            apply(u, &mut metas, &mut tasks);
            if let Some((_, s)) = mine(&tasks) {
                let polls: Vec<u64> = s.stats.iter().map(|s| s.poll_stats.as_ref().unwrap().polls).collect();
                let grew = polls.windows(2).any(|w| w[1] > w[0]);
                if grew && s.running_in_stall {
                    break s;
                }
            }
        };
        let (id, _) = mine(&tasks).unwrap();

        // The detail view: a poll-time histogram for the task.
        let mut d = c.watch_task_details(TaskDetailsRequest { id: Some(id.into()) }).await.unwrap().into_inner();
        let details = tokio::time::timeout(DEADLINE, d.message()).await.expect("details in time").unwrap().unwrap();

        // Pause and resume, as tokio-console's space bar does: the state stream follows.
        c.pause(PauseRequest {}).await.unwrap();
        states.push(state.message().await.unwrap().unwrap().temporality);
        c.resume(ResumeRequest {}).await.unwrap();
        states.push(state.message().await.unwrap().unwrap().temporality);
        (seen, details, states)
    });
    stop.store(true, Relaxed);
    rt.block_on(app).unwrap();

    let t = task.task.as_ref().unwrap();
    assert_eq!(t.kind, tasks::task::Kind::Spawn as i32);
    let stall = str_field(t, "loopscope.stall").unwrap();
    assert!(stall.contains("blocked worker") && stall.contains("ms"), "{stall}");
    let spawn = str_field(t, "spawn.location").unwrap();
    assert!(spawn.contains("console.rs:"), "{spawn}");
    let last = task.stats.last().unwrap().poll_stats.unwrap();
    assert!(last.busy_time.unwrap().nanos > 0 || last.busy_time.unwrap().seconds > 0, "busy time counted");
    assert!(last.first_poll.is_some());
    match details.poll_times_histogram {
        Some(tasks::task_details::PollTimesHistogram::Histogram(h)) => assert!(!h.raw_histogram.is_empty()),
        other => panic!("no histogram: {other:?}"),
    }
    assert_eq!(states, [Temporality::Live as i32, Temporality::Paused as i32, Temporality::Live as i32]);
}

/// An app task that counts its wake-ups every 2 ms: the count stops growing if the app is held up.
fn ticking_app(rt: &tokio::runtime::Runtime) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let ticks = Arc::new(AtomicU64::new(0));
    let t = ticks.clone();
    let app = rt.spawn(async move {
        loop {
            t.fetch_add(1, Relaxed);
            tokio::time::sleep(ms(2)).await;
        }
    });
    (ticks, app)
}

/// A real console connects to `addr` and gets an update in time.
fn assert_a_console_is_served(addr: SocketAddr) {
    client_runtime().block_on(async {
        let mut c = connect(addr).await;
        let mut updates = c.watch_updates(InstrumentRequest {}).await.unwrap().into_inner();
        let u = tokio::time::timeout(DEADLINE, updates.message()).await.expect("an update in time").unwrap();
        assert!(u.is_some());
    });
}

#[test]
fn garbage_is_refused_and_the_app_runs_on() {
    let (rt, agent) = multi_thread(2, console_agent());
    let addr = agent.console_addr().unwrap();
    let (ticks, app) = ticking_app(&rt);
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff; 4096][..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x05\x04\0\0\0\0\0\x01\x02\x03\x04\x05",
    ] {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = conn.write_all(garbage);
        let start = Instant::now();
        let mut sink = Vec::new();
        // Closed by the server: end of stream, or a reset.
        match conn.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "the server kept a garbage connection open for {:?}",
                start.elapsed()
            ),
        }
    }
    // The app kept running, and a real console is still served.
    let before = ticks.load(Relaxed);
    wait_until("the app to keep running", || ticks.load(Relaxed) > before + 10);
    assert_a_console_is_served(addr);
    app.abort();
}

/// The console server's cap on open connections (`console::server::MAX_CONNECTIONS`).
const MAX_CONNECTIONS: usize = 32;

#[test]
fn a_flood_of_idle_connections_is_capped_and_a_console_is_served_after_it() {
    let (rt, agent) = multi_thread(2, console_agent());
    let addr = agent.console_addr().unwrap();
    let (ticks, app) = ticking_app(&rt);
    // Connections that never send a byte, past the cap: the extra ones are closed as they arrive.
    let flood: Vec<TcpStream> = (0..MAX_CONNECTIONS + 16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let deadline = Instant::now() + DEADLINE;
    let mut closed = 0;
    // The last ones accepted are the ones past the cap.
    for mut conn in flood.iter().rev() {
        conn.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(ms(50)))).unwrap();
        let mut byte = [0u8; 1];
        match conn.read(&mut byte) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
        if closed >= 16 {
            break;
        }
    }
    assert!(closed >= 16, "only {closed} of the connections past the cap were closed");
    let before = ticks.load(Relaxed);
    wait_until("the app to keep running", || ticks.load(Relaxed) > before + 10);
    // Once the flood is gone, a real console is served again.
    drop(flood);
    assert_a_console_is_served(addr);
    app.abort();
}

#[test]
fn a_console_that_never_reads_loses_only_its_own_updates() {
    let (rt, agent) = multi_thread(2, console_agent());
    let addr = agent.console_addr().unwrap();
    // Many live tasks that poll all the time: every tick changes thousands of them, so the stalled client's
    // HTTP/2 window and then its queue fill within a few ticks.
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..4000)
        .map(|_| {
            let s = stop.clone();
            rt.spawn(async move {
                while !s.load(Relaxed) {
                    tokio::time::sleep(ms(100)).await;
                }
            })
        })
        .collect();
    let client = client_runtime();
    // The stuck console: asks for updates and never reads them. A small HTTP/2 window (64 KiB rather than
    // hyper's 2 MiB) only makes the transport stop pulling sooner.
    let started = Instant::now();
    let stuck = client.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        InstrumentClient::new(channel).watch_updates(InstrumentRequest {}).await.unwrap().into_inner()
    });
    let end = Instant::now() + 3 * DEADLINE;
    while agent.console_stats().unwrap().dropped_updates == 0 {
        assert!(Instant::now() < end, "the stuck console lost no updates: {:?}", agent.console_stats());
        std::thread::sleep(ms(10));
    }
    eprintln!("the stuck console lost its first update after {:?}: {:?}", started.elapsed(), agent.console_stats());
    // Its queue is full and stays so: nothing more is queued for it while it does not read.
    let sent = agent.console_stats().unwrap().sent_updates;
    let dropped = agent.console_stats().unwrap().dropped_updates;
    wait_until("more updates to be dropped", || agent.console_stats().unwrap().dropped_updates > dropped + 3);
    assert_eq!(agent.console_stats().unwrap().sent_updates, sent, "the stuck client's queue is bounded");

    // Meanwhile the app goes on, and another console is served.
    let before = Instant::now();
    let probe = rt.spawn(async { 7 });
    assert_eq!(rt.block_on(probe).unwrap(), 7);
    assert!(before.elapsed() < ms(2000), "the app's runtime answered in {:?}", before.elapsed());
    client.block_on(async {
        let mut c = connect(addr).await;
        let mut updates = c.watch_updates(InstrumentRequest {}).await.unwrap().into_inner();
        let (mut metas, mut tasks) = (HashMap::new(), HashMap::new());
        let end = tokio::time::Instant::now() + DEADLINE;
        while tasks.len() < 4000 {
            let u = tokio::time::timeout_at(end, updates.message())
                .await
                .unwrap_or_else(|_| panic!("the second console got {} tasks in time", tasks.len()))
                .unwrap()
                .unwrap();
            apply(u, &mut metas, &mut tasks);
        }
    });
    drop(stuck);
    stop.store(true, Relaxed);
    for h in handles {
        rt.block_on(h).unwrap();
    }
}

#[test]
fn bad_console_addresses_are_refused_with_their_name() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    let e = agent().console_addr("console.example:6669").install(&mut b).unwrap_err().to_string();
    assert!(e.contains("console_addr") && e.contains("console.example:6669"), "{e}");
    // A taken port fails install (the console API was asked for, so this is not the stream's soft default).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut b = tokio::runtime::Builder::new_current_thread();
    let e = agent().console_addr(&format!("127.0.0.1:{port}")).install(&mut b).unwrap_err().to_string();
    assert!(e.contains("LOOPSCOPE_CONSOLE_ADDR"), "{e}");
}
