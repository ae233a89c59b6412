//! The live stream end to end: an app with the agent serving on an ephemeral port, and real clients on
//! 127.0.0.1 — the blocking client library, raw sockets that misbehave, and an agent-side recording.

use crate::support::*;
use loopscope::wire::client::{Client, ClientError};
use loopscope::wire::proto::{self, ServeAddr, ServerMessage};
use loopscope::wire::record::RecordingReader;
use loopscope::wire::state::State;
use loopscope::wire::{Classification, StallPhase};
use loopscope::{Agent, AgentBuilder};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn serving(b: AgentBuilder) -> AgentBuilder {
    b.serve("127.0.0.1:0").sample_interval(ms(50))
}

/// The agent's threads start with the runtime's first task poll (`block_on` alone polls no task).
fn start(rt: &tokio::runtime::Runtime) {
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
}

fn addr(agent: &Agent) -> ServeAddr {
    agent.serve_addr().expect("the agent serves on an ephemeral port")
}

fn tcp_addr(agent: &Agent) -> std::net::SocketAddr {
    match addr(agent) {
        ServeAddr::Tcp(a) => a,
        other => panic!("expected a TCP address, got {other}"),
    }
}

/// Receives messages into `state` until `pred` holds for one of them, failing after the deadline.
fn recv_until(
    client: &mut Client,
    state: &mut State,
    what: &str,
    mut pred: impl FnMut(&ServerMessage, &State) -> bool,
) -> ServerMessage {
    let end = Instant::now() + DEADLINE;
    let mut kinds = std::collections::BTreeMap::<&str, u32>::new();
    while Instant::now() < end {
        match client.recv(ms(200)) {
            Ok(Some(msg)) => {
                state.apply(&msg);
                *kinds.entry(msg.kind()).or_default() += 1;
                if pred(&msg, state) {
                    return msg;
                }
            }
            Ok(None) => {}
            Err(e) => panic!("stream failed while waiting for {what}: {e}"),
        }
    }
    panic!("timed out after {DEADLINE:?} waiting for {what}; received {kinds:?}");
}

#[inline(never)]
fn planted_sleep() {
    // Long enough that a tick (every sample interval) shows it in flight on a loaded CI machine too.
    std::thread::sleep(ms(1000));
}

#[test]
fn a_client_sees_a_planted_stall_live_with_its_stack_and_classification() {
    let (rt, agent) = multi_thread(2, serving(agent()).stall_threshold(ms(20)));
    wait_until("the probes to be ready", || agent.probes_ready());
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    let mut client = Client::connect(&addr(&agent), ms(2000)).expect("connects");
    assert_eq!(client.hello().runtime.pid, std::process::id());
    let mut state = State::new();
    state.apply_hello(&client.hello().clone());
    recv_until(&mut client, &mut state, "the full state", |m, _| matches!(m, ServerMessage::Full(_)));
    let t0 = Instant::now();
    let h = rt.spawn(async { planted_sleep() });
    // The stall is visible as it grows: a tick shows the poll in flight on a worker, before it ends.
    let tick = recv_until(&mut client, &mut state, "a tick showing the poll in flight", |m, _| match m {
        ServerMessage::Tick(t) => {
            t.workers.iter().any(|w| w.current_poll.as_ref().is_some_and(|p| p.elapsed_nanos >= 20_000_000))
        }
        _ => false,
    });
    assert!(t0.elapsed() < ms(1000), "the in-flight poll was only seen after {:?}", t0.elapsed());
    let ServerMessage::Tick(tick) = tick else { unreachable!() };
    // The planted poll's worker: another may be in a short poll of its own at the same tick (seen in CI: one of
    // loopscope's probe tasks, whose location is not the test's).
    let planted = |w: &&proto::WorkerSample| w.current_poll.as_ref().is_some_and(|p| p.elapsed_nanos >= 20_000_000);
    let worker = tick.workers.iter().find(planted).expect("a worker in the planted poll");
    let loc = worker.current_poll.as_ref().and_then(|p| p.location).expect("the poll's location id");
    let location = state.location(loc).expect("the location was announced before it was referenced");
    assert!(location.location.file.ends_with("tests/integration/stream.rs"), "{location:?}");
    // The stall itself arrives with the culprit from the probes.
    let ended = recv_until(
        &mut client,
        &mut state,
        "the stall's Ended event",
        |m, _| matches!(m, ServerMessage::StallPart(p) if p.event.phase == StallPhase::Ended),
    );
    let ServerMessage::StallPart(part) = ended else { unreachable!() };
    // The client state rebuilt the whole event from the parts.
    let ev = state.stalls().find(|s| s.latest.stall_id == part.event.stall_id).expect("the stall").latest.clone();
    assert_eq!(ev.phase, StallPhase::Ended);
    let c = ev.culprit.as_ref().expect("a culprit");
    assert_eq!(c.classification, Classification::Syscall { name: "clock_nanosleep".into(), fd_target: None });
    let first_user = c.first_user_frame().and_then(|f| f.function.clone()).unwrap_or_default();
    assert!(first_user.contains("planted_sleep"), "first user frame {first_user:?}");
    assert!(state.stalls().any(|s| s.latest.stall_id == ev.stall_id), "the client state keeps the stall");
    rt.block_on(h).unwrap();
    // Counters are cumulative: the next tick counts the stall.
    recv_until(
        &mut client,
        &mut state,
        "a tick counting the stall",
        |m, _| matches!(m, ServerMessage::Tick(t) if t.totals.stall_count >= 1),
    );
}

#[inline(never)]
fn sleeping_handler() {
    std::thread::sleep(ms(200));
}

/// Issue 12: a stall costs at most 4 KiB on the wire. Each event of a stall used to carry all of its samples
/// so far (about 10 KiB per stall on the demo); now each sample and each distinct stack is sent once, and the
/// client rebuilds the whole event: its state ends with exactly the agent's own record of the stall.
#[test]
fn a_real_stall_costs_at_most_4_kib_on_the_wire_and_the_client_rebuilds_every_sample() {
    const STALLS: usize = 3;
    let (rt, agent) = multi_thread(2, serving(agent()).stall_threshold(ms(20)));
    wait_until("the probes to be ready", || agent.probes_ready());
    start(&rt);
    let mut client = Client::connect(&addr(&agent), ms(2000)).expect("connects");
    let mut state = State::new();
    state.apply_hello(&client.hello().clone());
    let end = Instant::now() + DEADLINE;
    while !state.is_ready() && Instant::now() < end {
        if let Some(msg) = client.recv(ms(100)).expect("stream") {
            state.apply(&msg);
        }
    }
    assert!(state.is_ready(), "no full state within {DEADLINE:?}");
    let mut bytes = std::collections::HashMap::<u64, usize>::new();
    let mut whole_bytes = std::collections::HashMap::<u64, usize>::new();
    let mut events = 0;
    for _ in 0..STALLS {
        // One at a time, so that each is a stall of its own with Started, Updated (40, 80, 160 ms) and Ended.
        rt.block_on(async { tokio::spawn(async { sleeping_handler() }).await.unwrap() });
    }
    let end = Instant::now() + DEADLINE;
    while state.stalls().filter(|s| s.ended).count() < STALLS && Instant::now() < end {
        let Some((msg, payload)) = client.recv_raw(ms(100)).expect("stream") else { continue };
        state.apply(&msg);
        if let ServerMessage::StallPart(p) = &msg {
            // The frame as it crossed the socket: length prefix and payload (compressed where large).
            *bytes.entry(p.event.stall_id).or_default() += payload.len() + proto::FRAME_HEADER_LEN;
            // What the same event costs whole, as protocol 3.1 sent it: the figure the parts replace.
            let whole = state.stalls().find(|s| s.latest.stall_id == p.event.stall_id).expect("the stall");
            let whole = ServerMessage::Stall(Box::new(whole.latest.clone()));
            *whole_bytes.entry(p.event.stall_id).or_default() +=
                proto::encode_server_payload(&whole).expect("encodes").len() + proto::FRAME_HEADER_LEN;
            events += 1;
        }
    }
    assert_eq!(state.stalls().filter(|s| s.ended).count(), STALLS, "every stall ended on the stream");
    assert!(events > STALLS, "stalls of several events each (Started, Updated..., Ended): {events}");
    let agents: Vec<_> = agent.stalls();
    for entry in state.stalls() {
        let id = entry.latest.stall_id;
        let sent = bytes[&id];
        println!("stall {id}: {sent} B on the wire as parts, {} B as whole events", whole_bytes[&id]);
        assert!(sent <= 4096, "stall {id}: {sent} bytes on the wire");
        let theirs = agents.iter().find(|s| s.last.stall_id == id).expect("the agent keeps the stall");
        assert_eq!(entry.latest, theirs.last, "the client rebuilt the agent's record of stall {id}");
        let c = entry.latest.culprit.as_ref().expect("a culprit");
        assert!(c.samples.len() >= 3, "samples at 1x, 2x, 4x, 8x the threshold: {}", c.samples.len());
        assert!(c.samples.iter().filter(|s| !s.frames.is_empty()).count() >= 2, "stacks in several samples");
        let user = c.first_user_frame().and_then(|f| f.function.clone()).unwrap_or_default();
        assert!(user.contains("sleeping_handler"), "first user frame {user:?}");
        // `allow_fn` reads the frames of the stalls the agent keeps (rebuilt from its compact store).
        let allow = loopscope::wire::ci_record::AllowList {
            functions: vec!["stream::sleeping_handler".into()],
            ..Default::default()
        };
        assert!(allow.exempts(&theirs.last).is_some(), "allow_fn matches stall {id}");
    }
}

#[test]
fn an_incompatible_client_is_refused_with_a_reason() {
    let (rt, agent) = multi_thread(1, serving(agent()));
    start(&rt);
    let mut s = TcpStream::connect(tcp_addr(&agent)).unwrap();
    s.set_read_timeout(Some(ms(5000))).unwrap();
    let mut pre = [0u8; proto::PREAMBLE_LEN];
    s.read_exact(&mut pre).unwrap();
    let theirs = proto::parse_preamble(&pre).expect("the agent's preamble");
    assert_eq!(theirs, proto::PROTOCOL_VERSION);
    // A client from the future: a newer major version.
    let future = proto::ProtocolVersion { major: proto::PROTOCOL_VERSION.major + 1, minor: 0 };
    let hello =
        proto::ClientMessage::Hello(proto::ClientHello { protocol_version: future, client_name: "future".into() });
    proto::write_preamble(&mut s, future).unwrap();
    proto::write_frame(&mut s, &hello).unwrap();
    // The greeting first, then the refusal, then the connection closes.
    let mut refused = None;
    while let Ok(Some(payload)) = proto::read_frame(&mut s, proto::MAX_FRAME_LEN) {
        if let Ok(proto::Decoded::Message(ServerMessage::Refused(r))) = proto::decode_server(&payload) {
            refused = Some(r.reason);
        }
    }
    let reason = refused.expect("a Refused message before the close");
    assert!(reason.contains("version"), "{reason}");
    wait_until("the refusal to be counted", || agent.stream_stats().is_some_and(|s| s.refused == 1));
    // The app never noticed.
    assert_eq!(rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() }), 7);
}

#[test]
fn a_garbage_client_is_disconnected_and_the_app_keeps_running() {
    let (rt, agent) = multi_thread(1, serving(agent()));
    start(&rt);
    // Not even a preamble.
    let mut g = TcpStream::connect(tcp_addr(&agent)).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe garbage \x00\x01\x02").unwrap();
    // A valid handshake, then a frame claiming 4 GiB.
    let mut h = TcpStream::connect(tcp_addr(&agent)).unwrap();
    proto::write_client_handshake(&mut h, "test").unwrap();
    h.write_all(&u32::MAX.to_le_bytes()).unwrap();
    h.write_all(&[0xAB; 64]).unwrap();
    for (name, mut s) in [("garbage", g), ("oversized frame", h)] {
        s.set_read_timeout(Some(ms(5000))).unwrap();
        let mut sink = Vec::new();
        // The server closes the connection: read returns EOF (or a reset), not a timeout.
        match s.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {}
            Err(e) => panic!("{name}: the server did not close the connection: {e}"),
        }
    }
    wait_until("both bad clients to be gone", || {
        agent.stream_stats().is_some_and(|s| s.bad_handshakes + s.disconnected >= 2 && s.clients.is_empty())
    });
    // A well-behaved client still connects, and the app runs on.
    let mut c = Client::connect(&addr(&agent), ms(2000)).expect("a good client connects after the bad ones");
    let mut state = State::new();
    recv_until(&mut c, &mut state, "a tick", |m, _| matches!(m, ServerMessage::Tick(_)));
    assert_eq!(rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() }), 7);
}

#[test]
fn a_stuck_then_killed_client_never_slows_the_app_or_grows_its_memory() {
    let (rt, agent) = multi_thread(2, serving(agent()).sample_interval(ms(10)));
    // Many tasks that change every tick, so ticks are large and a client that doesn't read falls behind.
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let r = running.clone();
    let work = rt.spawn(async move {
        let tasks: Vec<_> = (0..2_000)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move {
                    while r.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(ms(1)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    // A client that handshakes and then never reads.
    let mut stuck = TcpStream::connect(tcp_addr(&agent)).unwrap();
    stuck.set_read_timeout(Some(ms(5000))).unwrap();
    let mut pre = [0u8; proto::PREAMBLE_LEN];
    stuck.read_exact(&mut pre).unwrap();
    proto::write_client_handshake(&mut stuck, "stuck").unwrap();
    // The kernel's socket buffers absorb a few MB before the server's queue (64 frames) even starts to fill;
    // at this rate that takes several seconds, more on a loaded machine.
    wait_until_within(ms(40_000), "the stuck client to fall behind and lose frames", || {
        agent.stream_stats().is_some_and(|s| s.clients.iter().any(|c| c.name == "stuck" && c.dropped_frames > 0))
    });
    // Its queue stays bounded whatever it does.
    let st = agent.stream_stats().unwrap();
    let c = st.clients.iter().find(|c| c.name == "stuck").unwrap();
    assert!(c.queued_bytes <= 16 * 1024 * 1024 && c.queued_frames <= 64, "{c:?}");
    // The app keeps polling meanwhile.
    let before = agent.snapshot().totals.poll_count;
    wait_until("the app to keep polling", || agent.snapshot().totals.poll_count > before + 1_000);
    // Killed: closing a socket with unread data makes the kernel reset the connection, as when the client
    // process dies.
    drop(stuck);
    wait_until("the killed client to be dropped", || agent.stream_stats().is_some_and(|s| s.clients.is_empty()));
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(work).unwrap();
}

#[test]
fn a_hundred_thousand_live_tasks_stream_as_a_full_state_then_small_ticks() {
    const N: usize = 100_000;
    let (rt, agent) = multi_thread(2, serving(agent()).max_tasks(131_072).sample_interval(ms(100)));
    let (tx, rx) = tokio::sync::watch::channel(false);
    rt.block_on(async {
        for _ in 0..N {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let _ = rx.wait_for(|go| *go).await;
            });
        }
    });
    wait_until("every task to be polled once", || agent.snapshot().totals.poll_count >= N as u64);
    let mut client = Client::connect(&addr(&agent), ms(2000)).expect("connects");
    let mut state = State::new();
    state.apply_hello(&client.hello().clone());
    let t0 = Instant::now();
    recv_until(&mut client, &mut state, "the full state with every task", |_, s| s.tasks().len() >= N);
    eprintln!("full state of {N} tasks received in {:?} ({} bytes so far)", t0.elapsed(), client.bytes_received());
    // Nothing changes: ticks carry no tasks.
    let quiet =
        recv_until(&mut client, &mut state, "a tick after the full state", |m, _| matches!(m, ServerMessage::Tick(_)));
    let ServerMessage::Tick(quiet) = quiet else { unreachable!() };
    assert!(quiet.tasks.len() < 100, "an idle tick carried {} tasks", quiet.tasks.len());
    // Everyone finishes: the stream says so, and the client's live set empties.
    tx.send(true).unwrap();
    recv_until(&mut client, &mut state, "every task to be reported finished", |_, s| {
        s.tasks().values().filter(|t| t.state == loopscope::wire::TaskState::Live).count() < 100
    });
    drop(rx);
}

/// Issue 13: one model of a scan. `Agent::snapshot()` and the stream read a task's counters in one pass over
/// the tables into one sample type, and the snapshot's `TaskStats` and `LocationStats` are derived from those
/// samples: a task and its location read the same both ways, field by field, however many polls, slow polls,
/// stalls and wake-ups they count.
#[test]
fn a_task_and_its_location_read_the_same_in_a_snapshot_and_on_the_stream() {
    use loopscope::wire::TaskState;
    let (rt, agent) = multi_thread(2, serving(agent()).stall_threshold(ms(20)).track_schedule_latency(true));
    let (go, rx) = tokio::sync::watch::channel(false);
    let ids: Vec<u64> = rt.block_on(async {
        let mut ids = Vec::new();
        // The same spawn site twice: one task only yields, the other also blocks past the stall threshold. Then
        // both wait, so their counters hold still between the two reads.
        for block in [false, true] {
            let mut rx = rx.clone();
            let task = tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                if block {
                    std::thread::sleep(ms(60));
                }
                let _ = rx.wait_for(|go| *go).await;
            });
            ids.push(task.id().to_string().parse().expect("tokio task ids print as numbers"));
        }
        ids
    });
    let counted = |t: &loopscope::wire::TaskStats| t.poll_count >= 6 && (t.id == ids[0] || t.stall_count >= 1);
    wait_until("both tasks to wait, and the stall to be counted", || {
        let snap = agent.snapshot();
        ids.iter().all(|id| snap.tasks.iter().any(|t| t.id == *id && counted(t)))
    });

    let mut client = Client::connect(&addr(&agent), ms(2000)).expect("connects");
    let mut state = State::new();
    state.apply_hello(&client.hello().clone());
    // The full state's task chunks follow it.
    recv_until(&mut client, &mut state, "a full state with both tasks", |_, s| {
        ids.iter().all(|id| s.task(*id).is_some())
    });
    let snap = agent.snapshot();

    for id in &ids {
        let sample = state.task(*id).expect("streamed");
        let stats = snap.tasks.iter().find(|t| t.id == *id).expect("in the snapshot");
        assert_eq!(stats.state, TaskState::Live);
        assert_eq!(Some(&stats.location), state.task_location(sample));
        assert!(stats.location.file.ends_with("tests/integration/stream.rs"), "{:?}", stats.location);
        assert_eq!(stats.poll_count, sample.poll_count);
        assert_eq!(stats.total_poll_duration, sample.busy());
        assert_eq!(stats.max_poll_duration, Duration::from_nanos(sample.max_poll_nanos));
        assert_eq!(stats.slow_poll_count, sample.slow_poll_count);
        assert_eq!(stats.stall_count, sample.stall_count);
        assert_eq!(stats.poll_histogram, sample.poll_histogram);
        let latency = |l: &loopscope::wire::ScheduleLatency| (l.count, l.total, l.max, l.histogram.clone());
        let streamed = |l: &loopscope::wire::proto::LatencySample| {
            (l.count, Duration::from_nanos(l.total_nanos), Duration::from_nanos(l.max_nanos), l.histogram.clone())
        };
        assert_eq!(stats.schedule_latency.as_ref().map(latency), sample.schedule_latency.as_ref().map(streamed));
    }
    let blocker = snap.tasks.iter().find(|t| t.id == ids[1]).expect("in the snapshot");
    assert!(blocker.stall_count >= 1 && blocker.slow_poll_count >= 1, "{blocker:?}");
    assert!(blocker.max_poll_duration >= ms(60), "{blocker:?}");

    // Their spawn site's sums, both ways.
    let site = &blocker.location;
    let stats = snap.locations.iter().find(|l| l.location == *site).expect("the spawn site in the snapshot");
    let entry = state.locations().find(|l| l.location == *site).expect("the spawn site on the stream");
    let sample = entry.stats.as_ref().expect("its sums were streamed");
    assert_eq!((stats.live_tasks, stats.spawned_tasks), (sample.live_tasks, sample.spawned_tasks));
    assert_eq!((stats.live_tasks, stats.spawned_tasks), (2, 2));
    assert_eq!(stats.poll_count, sample.poll_count);
    assert_eq!(stats.total_poll_duration, Duration::from_nanos(sample.busy_nanos));
    assert_eq!(stats.max_poll_duration, Duration::from_nanos(sample.max_poll_nanos));
    assert_eq!((stats.slow_poll_count, stats.stall_count), (sample.slow_poll_count, sample.stall_count));
    assert_eq!(stats.poll_histogram, sample.poll_histogram);
    go.send(true).unwrap();
}

#[test]
fn an_agent_side_recording_replays_the_stall() {
    let dir = tempdir();
    let path = dir.join("app.lsrec");
    {
        let (rt, agent) = multi_thread(2, agent().sample_interval(ms(20)).stall_threshold(ms(20)).record(&path));
        rt.block_on(async {
            tokio::spawn(async { std::thread::sleep(ms(60)) }).await.unwrap();
        });
        wait_until("the stall to end", || agent.stalls().iter().any(|s| s.ended));
        // Let a tick or two record the stall's counters.
        let seen = agent.snapshot().totals.stall_count;
        assert_eq!(seen, 1);
        drop(rt);
        wait_until("the agent to drain", || agent.is_drained());
    }
    let reader = RecordingReader::open(&path).expect("the recording opens");
    assert_eq!(reader.header().hello.runtime.pid, std::process::id());
    let mut state = State::new();
    state.apply_hello(&reader.header().hello.clone());
    let mut kinds = Vec::new();
    for rec in reader {
        let rec = rec.expect("every record reads back");
        kinds.push(rec.message.kind());
        state.apply(&rec.message);
    }
    assert_eq!(kinds.first(), Some(&"Full"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"Goodbye"), "{kinds:?}");
    assert!(kinds.contains(&"Tick") && kinds.contains(&"StallPart"), "{kinds:?}");
    assert!(state.stalls().any(|s| s.ended && s.latest.phase == StallPhase::Ended), "the replayed state has the stall");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_bad_serve_address_is_a_clear_install_error() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    let err = agent().serve("example.com:80").install(&mut b).unwrap_err().to_string();
    assert!(err.contains("serve") && err.contains("example.com:80"), "{err}");
    // An address that can't be bound (not ours to listen on) fails install too, naming it.
    let mut b = tokio::runtime::Builder::new_current_thread();
    let err = agent().serve("unix:/nonexistent-dir/x.sock").install(&mut b).unwrap_err().to_string();
    assert!(err.contains("/nonexistent-dir/x.sock"), "{err}");
}

#[test]
fn a_unix_socket_is_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let sock = dir.join("agent.sock");
    let (rt, agent) = multi_thread(1, agent().serve(&format!("unix:{}", sock.display())));
    start(&rt);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let c = Client::connect(&addr(&agent), ms(2000)).expect("connects over the Unix socket");
    drop(c);
    drop(rt);
    wait_until("the socket file to be removed", || !sock.exists());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_client_reports_an_unreachable_agent_clearly() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Client::connect(&format!("127.0.0.1:{port}").parse().unwrap(), ms(500)).unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("loopscope-stream-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
