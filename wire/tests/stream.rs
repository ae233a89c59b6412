//! The blocking client against fake servers on 127.0.0.1 (ephemeral ports), and the stream at scale.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use loopscope_wire::client::{Client, ClientError};
use loopscope_wire::proto::{
    self, FullState, FullTasks, LatencySample, LocationInfo, LocationSample, PROTOCOL_VERSION, Pong, ProtocolVersion,
    Refused, ServeAddr, ServerMessage, TaskSample, Tick, WorkerSample, full_state_messages,
};
use loopscope_wire::record::example_hello;
use loopscope_wire::state::{State, StateLimits};
use loopscope_wire::{Location, LogHistogram, StallEvent, StallKind, StallPhase, TaskState, ThreadInfo};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

/// A one-connection fake server running `f` on the accepted socket.
fn fake_server(f: impl FnOnce(TcpStream) + Send + 'static) -> (ServeAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = ServeAddr::Tcp(l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        f(s)
    });
    (addr, h)
}

fn greeting() -> Vec<u8> {
    let mut b = proto::preamble(PROTOCOL_VERSION).to_vec();
    b.extend(proto::encode_frame(&ServerMessage::Hello(Box::new(example_hello())), proto::MAX_FRAME_LEN).unwrap());
    b
}

/// Reads the client's opening (preamble and hello) so the close that follows is clean.
fn read_client_opening(s: &mut TcpStream) {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    proto::read_client_handshake(s).unwrap();
}

/// Waits until the peer closes the connection (bounded), so a test's fake server outlives the client's reads.
fn wait_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 1024];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

#[test]
fn client_reports_an_agent_with_another_major_naming_both_versions() {
    let agent = ProtocolVersion { major: PROTOCOL_VERSION.major + 98, minor: 2 };
    let (addr, h) = fake_server(move |mut s| {
        s.write_all(&proto::preamble(agent)).unwrap();
        wait_closed(&mut s);
    });
    let e = Client::connect(&addr, DEADLINE).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ClientError::VersionMismatch { .. }), "{msg}");
    assert!(msg.contains(&format!("protocol {PROTOCOL_VERSION}")) && msg.contains(&agent.to_string()), "{msg}");
    assert!(!e.is_retryable());
    drop(e);
    h.join().unwrap();
}

#[test]
fn client_reports_an_http_server_as_not_an_agent() {
    let (addr, h) = fake_server(|mut s| {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").unwrap();
    });
    let e = Client::connect(&addr, DEADLINE).unwrap_err();
    assert!(matches!(e, ClientError::NotLoopscope { .. }), "{e}");
    assert!(e.to_string().contains("HTTP server"), "{e}");
    h.join().unwrap();
}

#[test]
fn client_gives_up_on_a_silent_server() {
    let (addr, h) = fake_server(|mut s| wait_closed(&mut s));
    let t = Instant::now();
    let e = Client::connect(&addr, Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, ClientError::NoGreeting { .. }), "{e}");
    assert!(t.elapsed() < DEADLINE);
    assert!(e.to_string().contains("no loopscope greeting"), "{e}");
    h.join().unwrap();
}

#[test]
fn client_explains_unreachable_addresses() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: ServeAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let e = Client::connect(&addr, DEADLINE).unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("nothing is listening"), "{e}");
    assert!(std::error::Error::source(&e).is_some(), "the io::Error is kept as the source");
    assert!(e.is_retryable());
    let e = Client::connect(&"unix:/nonexistent/loopscope.sock".parse().unwrap(), DEADLINE).unwrap_err();
    assert!(e.to_string().contains("no such socket"), "{e}");
}

#[test]
fn client_reports_a_refusal() {
    let (addr, h) = fake_server(|mut s| {
        let mut b = proto::preamble(PROTOCOL_VERSION).to_vec();
        let refused = ServerMessage::Refused(Refused { reason: "too many clients (the limit is 1)".into() });
        b.extend(proto::encode_frame(&refused, proto::MAX_FRAME_LEN).unwrap());
        s.write_all(&b).unwrap();
        read_client_opening(&mut s);
    });
    let e = Client::connect(&addr, DEADLINE).unwrap_err();
    assert!(matches!(&e, ClientError::Refused { reason, .. } if reason.contains("too many")), "{e}");
    h.join().unwrap();
}

#[test]
fn client_skips_unknown_kinds_and_keeps_partial_frames_across_timeouts() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (addr, h) = fake_server(move |mut s| {
        s.write_all(&greeting()).unwrap();
        read_client_opening(&mut s);
        // A kind from a newer minor version (tag 200), then half of a Pong frame.
        s.write_all(&[3, 0, 0, 0, 0xc8, 0x01, 0x00]).unwrap();
        let pong = proto::encode_frame(&ServerMessage::Pong(Pong { nonce: 5 }), proto::MAX_FRAME_LEN).unwrap();
        s.write_all(&pong[..3]).unwrap();
        rx.recv().unwrap();
        s.write_all(&pong[3..]).unwrap();
        // Then a truncated frame and the end of the connection.
        s.write_all(&[10, 0, 0, 0, 1]).unwrap();
    });
    let mut c = Client::connect(&addr, DEADLINE).unwrap();
    assert_eq!(c.hello(), &example_hello());
    assert_eq!(c.recv(Duration::from_millis(100)).unwrap(), None);
    tx.send(()).unwrap();
    assert_eq!(c.recv(DEADLINE).unwrap(), Some(ServerMessage::Pong(Pong { nonce: 5 })));
    assert_eq!(c.skipped_frames(), 1);
    let e = c.recv(DEADLINE).unwrap_err();
    assert!(matches!(e, ClientError::Protocol { source: proto::ProtoError::Truncated { .. }, .. }), "{e}");
    h.join().unwrap();
}

fn hist(seed: u64) -> LogHistogram {
    let mut h = LogHistogram::new(16);
    h.counts[(seed % 6) as usize] = 1 + seed % 1000;
    h.counts[(seed % 6 + 2) as usize] = seed % 7;
    h
}

fn realistic_task(id: u64) -> TaskSample {
    TaskSample {
        id,
        location: (id % 100) as u32,
        state: TaskState::Live,
        poll_count: 10 + id % 5_000,
        busy_nanos: 1_000 * (id % 100_000),
        max_poll_nanos: 50_000 + id % 3_000,
        slow_poll_count: id % 3,
        stall_count: u64::from(id.is_multiple_of(1000)),
        poll_histogram: hist(id),
        schedule_latency: id.is_multiple_of(2).then(|| LatencySample {
            count: 10 + id % 5_000,
            total_nanos: 40_000 * (id % 100),
            max_nanos: 90_000,
            histogram: hist(id + 1),
        }),
    }
}

#[test]
fn a_full_state_of_100k_tasks_encodes_decodes_and_applies() {
    const TASKS: u64 = 100_000;
    let locations: Vec<LocationInfo> = (0..100)
        .map(|id| LocationInfo { id, location: Location::new(format!("src/handlers/module_{id}.rs"), id + 10, 5) })
        .collect();
    let location_stats: Vec<LocationSample> = (0..100)
        .map(|id| LocationSample {
            id,
            live_tasks: 1_000,
            spawned_tasks: 5_000,
            poll_count: 1_000_000,
            busy_nanos: 3_000_000_000,
            max_poll_nanos: 1_000_000,
            slow_poll_count: 100,
            stall_count: 1,
            poll_histogram: hist(u64::from(id)),
            schedule_latency: None,
        })
        .collect();
    let full = FullState { uptime_nanos: 5_000_000_000, locations, location_stats, ..FullState::default() };
    let tasks: Vec<TaskSample> = (0..TASKS).map(realistic_task).collect();

    // One frame holding every task would fit too, but chunks keep each frame small.
    let single = proto::encode_payload(&ServerMessage::FullTasks(FullTasks { tasks: tasks.clone() }), "x").unwrap();
    assert!(single.len() < proto::MAX_FRAME_LEN as usize);

    let t = Instant::now();
    let msgs = full_state_messages(full, tasks);
    let frames: Vec<Vec<u8>> = msgs.iter().map(|m| proto::encode_frame(m, proto::MAX_FRAME_LEN).unwrap()).collect();
    let encode_time = t.elapsed();
    let total: usize = frames.iter().map(Vec::len).sum();
    let largest = frames.iter().map(Vec::len).max().unwrap();

    let t = Instant::now();
    let mut state = State::new();
    state.apply_hello(&example_hello());
    let mut r = &frames.concat()[..];
    while let Some(payload) = proto::read_frame(&mut r, proto::MAX_FRAME_LEN).unwrap() {
        let proto::Decoded::Message(m) = proto::decode_server(&payload).unwrap() else { panic!("unknown kind") };
        state.apply(&m);
    }
    let decode_apply_time = t.elapsed();
    assert!(state.is_ready());
    assert_eq!(state.tasks().len(), TASKS as usize);
    assert_eq!(state.task(4242), Some(&realistic_task(4242)));
    assert_eq!(state.location_count(), 100);

    // A tick where 10% of the tasks changed and 1% finished costs time in proportion to that, not to 100k.
    let mut tick = Tick { seq: 1, uptime_nanos: 5_250_000_000, ..Tick::default() };
    tick.tasks = (0..TASKS / 10).map(|id| TaskSample { poll_count: 99_999, ..realistic_task(id * 10) }).collect();
    tick.finished = (0..TASKS / 100).map(|id| id * 100 + 1).collect();
    let tick_frame = proto::encode_frame(&ServerMessage::Tick(Box::new(tick.clone())), proto::MAX_FRAME_LEN).unwrap();
    let t = Instant::now();
    state.apply(&ServerMessage::Tick(Box::new(tick)));
    let tick_time = t.elapsed();
    assert_eq!(state.tasks().len(), (TASKS - TASKS / 100) as usize);
    assert_eq!(state.task(10).map(|t| t.poll_count), Some(99_999));
    assert!(state.task(101).is_none());

    println!(
        "100k tasks: {} frames, {total} bytes in all ({:.1} bytes/task), largest frame {largest} bytes, \
         single-frame FullTasks {} bytes; encode {encode_time:?}, decode+apply {decode_apply_time:?}; \
         tick with 10k changed + 1k finished: {} bytes, applied in {tick_time:?}",
        frames.len(),
        total as f64 / TASKS as f64,
        single.len(),
        tick_frame.len(),
    );
}

#[test]
fn state_stays_bounded_under_a_hostile_stream() {
    let limits = StateLimits {
        max_tasks: 1_000,
        max_finished: 10,
        max_locations: 50,
        max_workers: 8,
        max_stalls: 16,
        max_probes: 4,
        history: 30,
    };
    let mut state = State::with_limits(limits.clone());
    let mut next_id = 0u64;
    for seq in 1..=500u64 {
        let mut tick = Tick { seq, uptime_nanos: seq * 250_000_000, ..Tick::default() };
        tick.tasks = (0..100)
            .map(|_| {
                next_id += 1;
                TaskSample::new(next_id, 0)
            })
            .collect();
        tick.finished = (0..20).map(|i| next_id - i * 3).collect();
        tick.new_locations =
            (0..5).map(|i| LocationInfo { id: (seq * 5 + i) as u32, location: Location::new("f.rs", 1, 1) }).collect();
        tick.workers = (0..3)
            .map(|i| WorkerSample {
                index: (seq * 3 + i) as u32,
                thread: ThreadInfo { tid: 1, name: None },
                busy_nanos: 0,
                poll_count: 0,
                park_count: 0,
                noop_count: 0,
                steal_count: 0,
                overflow_count: 0,
                local_schedule_count: 0,
                local_queue_depth: 0,
                mean_poll_nanos: 0,
                slow_poll_count: 0,
                max_poll_nanos: 0,
                current_poll: None,
            })
            .collect();
        state.apply(&ServerMessage::Tick(Box::new(tick)));
        state.apply(&ServerMessage::Stall(Box::new(StallEvent {
            stall_id: seq,
            phase: StallPhase::Started,
            kind: StallKind::WorkerBlocked,
            runtime_id: 1,
            worker: None,
            thread: ThreadInfo { tid: 1, name: None },
            task_id: 1,
            location: None,
            elapsed: Duration::from_millis(10),
            threshold: Duration::from_millis(10),
            at_unix_nanos: seq,
            suppressed: 0,
            caught_in_flight: true,
            time: None,
            agent_task: None,
            culprit: None,
        })));
    }
    assert!(state.tasks().len() <= limits.max_tasks);
    assert!(state.finished_tasks().count() <= limits.max_finished);
    assert!(state.location_count() <= limits.max_locations);
    assert!(state.workers().count() <= limits.max_workers);
    assert!(state.stalls().count() <= limits.max_stalls);
    assert!(state.global_queue_history().len() <= limits.history);
    assert!(state.workers().all(|w| w.local_queue.len() <= limits.history));
    let d = state.state_dropped();
    assert!(d.tasks > 0 && d.locations > 0 && d.workers > 0 && d.stalls_evicted > 0, "{d:?}");
}
