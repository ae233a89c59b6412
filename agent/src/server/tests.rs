//! The server against real sockets and clients: handshakes, resyncs, hostile and stalled clients, shutdown.
//! Real sockets on 127.0.0.1 (ephemeral ports) and in a temporary directory; every wait has a deadline.

use super::*;
use loopscope_wire::Location;
use loopscope_wire::client::{Client, ClientError};
use loopscope_wire::proto::{
    ClientMessage, Decoded, FullState, LocationInfo, MAX_FRAME_LEN, MAX_HANDSHAKE_FRAME_LEN, Pong, ProtocolVersion,
    TaskSample, Tick, full_state_messages,
};
use loopscope_wire::state::State;
use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(unix)]
use std::os::unix::net::UnixListener;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

fn hello() -> ServerHello {
    loopscope_wire::record::example_hello()
}

fn config() -> ServerConfig {
    ServerConfig {
        handshake_timeout: Duration::from_millis(500),
        resync_interval: Duration::from_millis(20),
        accept_poll: Duration::from_millis(5),
        ..ServerConfig::default()
    }
}

fn full_state() -> Vec<ServerMessage> {
    let full = FullState { uptime_nanos: 1, ..FullState::default() };
    full_state_messages(full, vec![TaskSample::new(1, 0), TaskSample::new(2, 0)])
}

fn start(config: ServerConfig) -> Server {
    let addr: ServeAddr = "127.0.0.1:0".parse().unwrap();
    Server::start_with(&addr, config, hello(), full_state).unwrap()
}

fn connect_raw(server: &Server, name: &str) -> Client {
    Client::connect_named(server.local_addr(), name, DEADLINE).unwrap()
}

/// Connects and waits for the full state: only then does the client get every broadcast (frames queued
/// before its full state is built are superseded by it).
fn connect(server: &Server, name: &str) -> Client {
    let mut c = connect_raw(server, name);
    recv_until(&mut c, "the full state", |m| matches!(m, ServerMessage::FullTasks(_)));
    c
}

fn tick(seq: u64) -> ServerMessage {
    ServerMessage::Tick(Box::new(Tick { seq, uptime_nanos: 1 + seq, ..Tick::default() }))
}

/// Receives until `pred` matches, failing after the deadline with what arrived instead.
fn recv_until(c: &mut Client, what: &str, mut pred: impl FnMut(&ServerMessage) -> bool) -> ServerMessage {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while Instant::now() < end {
        if let Some(m) = c.recv(Duration::from_millis(100)).unwrap() {
            if pred(&m) {
                return m;
            }
            seen.push(m.kind());
        }
    }
    panic!("timed out waiting for {what}; saw {seen:?}");
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for {what}");
}

/// Reads a raw socket until the peer closes it; fails if it stays open past the deadline.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let end = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server did not close the connection");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) if proto::is_timeout(&e) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Parses what a server sent on a raw connection: the preamble, then frames.
fn parse_server_bytes(bytes: &[u8]) -> Vec<ServerMessage> {
    let mut r = bytes;
    proto::read_preamble(&mut r).unwrap();
    let mut out = Vec::new();
    while let Some(p) = proto::read_frame(&mut r, MAX_FRAME_LEN).unwrap() {
        if let Decoded::Message(m) = proto::decode_server(&p).unwrap() {
            out.push(m);
        }
    }
    out
}

#[test]
fn tcp_handshake_full_state_ticks_and_ping() {
    let addr: ServeAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(&addr, hello(), full_state).unwrap();
    let mut c = connect_raw(&server, "test client");
    assert_eq!(c.hello(), &hello());
    let mut state = State::new();
    state.apply_hello(c.hello());
    let full = recv_until(&mut c, "the full state", |m| matches!(m, ServerMessage::Full(_)));
    state.apply(&full);
    let chunk = recv_until(&mut c, "the tasks", |m| matches!(m, ServerMessage::FullTasks(_)));
    state.apply(&chunk);
    assert!(state.is_ready());
    assert_eq!(state.tasks().len(), 2);
    wait_until("the client to be listed", || server.client_count() == 1);
    assert_eq!(server.broadcast(&tick(1)), 1);
    let t = recv_until(&mut c, "a tick", |m| matches!(m, ServerMessage::Tick(_)));
    let ServerMessage::Tick(t) = t else { unreachable!() };
    assert_eq!((t.seq, t.client_dropped_frames), (1, 0));
    c.ping(77).unwrap();
    recv_until(&mut c, "the pong", |m| matches!(m, ServerMessage::Pong(Pong { nonce: 77 })));
    let stats = server.stats();
    assert_eq!(stats.clients.len(), 1);
    assert_eq!(stats.clients[0].name, "test client");
    assert_eq!(stats.handshakes, 1);
    // Clients that connect later get the updated greeting.
    let mut later = hello();
    later.runtime.flavor = Some("current_thread".into());
    server.set_hello(&later).unwrap();
    assert_eq!(connect_raw(&server, "later").hello(), &later);
}

#[cfg(unix)]
#[test]
fn unix_socket_is_private_replaces_stale_files_and_is_removed() {
    use std::os::unix::fs::PermissionsExt;
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("loopscope-srv-{}-{}", std::process::id(), N.fetch_add(1, Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.sock");
    // A stale socket file, as a crashed app leaves behind.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let addr = ServeAddr::Unix(path.clone());
    let server = Server::start_with(&addr, config(), hello(), full_state).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let mut c = Client::connect(&addr, DEADLINE).unwrap();
    recv_until(&mut c, "the full state", |m| matches!(m, ServerMessage::Full(_)));
    // A second server on the same live socket is refused rather than stealing it.
    let e = Server::start_with(&addr, config(), hello(), full_state).unwrap_err();
    assert!(matches!(e, ServeError::SocketInUse { .. }), "{e}");
    assert!(e.to_string().contains("another process"), "{e}");
    server.shutdown();
    recv_until(&mut c, "goodbye", |m| matches!(m, ServerMessage::Goodbye(_)));
    assert!(!path.exists(), "the socket file is removed on shutdown");
    // Something that is not a socket is never deleted.
    std::fs::write(&path, b"precious").unwrap();
    let e = Server::start_with(&addr, config(), hello(), full_state).unwrap_err();
    assert!(matches!(e, ServeError::NotASocket { .. }), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stall event as big as real ones: a 60-frame stack of long names, sampled three times.
fn big_stall() -> ServerMessage {
    ServerMessage::Stall(Box::new(loopscope_wire::example_stall(1, 60, 3)))
}

#[test]
fn stall_events_are_compressed_except_for_protocol_1_0_clients() {
    let server = start(config());
    let mut new = connect(&server, "1.1");
    // A 1.0 client, by hand: its preamble and hello name minor 0.
    let ServeAddr::Tcp(sa) = *server.local_addr() else { unreachable!() };
    let mut old = TcpStream::connect(sa).unwrap();
    let v1_0 = ProtocolVersion { major: PROTOCOL_VERSION.major, minor: 0 };
    old.write_all(&proto::preamble(v1_0)).unwrap();
    let hello =
        ClientMessage::Hello(loopscope_wire::proto::ClientHello { protocol_version: v1_0, client_name: "1.0".into() });
    proto::write_frame(&mut old, &hello).unwrap();
    old.set_read_timeout(Some(DEADLINE)).unwrap();
    proto::read_preamble(&mut old).unwrap();
    let mut next_old = || proto::read_frame(&mut old, MAX_FRAME_LEN).unwrap().expect("a frame");
    // Once the old client has its full state, every broadcast reaches it.
    while !matches!(proto::decode_server(&next_old()).unwrap(), Decoded::Message(ServerMessage::FullTasks(_))) {}

    let stall = big_stall();
    assert_eq!(server.broadcast(&stall), 2);
    let plain = loop {
        let p = next_old();
        if matches!(proto::decode_server(&p).unwrap(), Decoded::Message(ServerMessage::Stall(_))) {
            break p;
        }
    };
    assert_eq!(u32::from(plain[0]), 5, "the 1.0 client gets a plain Stall (kind 5)");
    let packed = loop {
        match new.recv_raw(DEADLINE).unwrap() {
            Some((m @ ServerMessage::Stall(_), p)) => break (m, p),
            Some(_) => {}
            None => panic!("no stall within the deadline"),
        }
    };
    assert_eq!(u32::from(packed.1[0]), proto::COMPRESSED_KIND, "the 1.1 client gets the envelope");
    assert!(packed.1.len() * 4 < plain.len(), "{} vs {} bytes", packed.1.len(), plain.len());
    assert_eq!(packed.0, stall, "and decodes the same event");
}

#[test]
fn client_with_another_major_is_refused_naming_both_versions() {
    let server = start(config());
    let ServeAddr::Tcp(sa) = server.local_addr() else { unreachable!() };
    let mut s = TcpStream::connect(sa).unwrap();
    let theirs = ProtocolVersion { major: PROTOCOL_VERSION.major + 1, minor: 3 };
    s.write_all(&proto::preamble(theirs)).unwrap();
    s.write_all(&[1, 0, 0, 0, 0]).unwrap();
    let msgs = parse_server_bytes(&read_to_close(&mut s));
    assert!(matches!(msgs.first(), Some(ServerMessage::Hello(_))), "{msgs:?}");
    let Some(ServerMessage::Refused(r)) = msgs.get(1) else { panic!("expected Refused, got {msgs:?}") };
    assert!(r.reason.contains(&PROTOCOL_VERSION.to_string()), "{}", r.reason);
    assert!(r.reason.contains(&theirs.to_string()), "{}", r.reason);
    assert_eq!(server.stats().refused, 1);
}

#[test]
fn too_many_clients_are_refused() {
    let server = start(ServerConfig { max_clients: 1, ..config() });
    let _first = connect_raw(&server, "first");
    wait_until("the first client", || server.client_count() == 1);
    match Client::connect(server.local_addr(), DEADLINE) {
        Err(ClientError::Refused { reason, .. }) => assert!(reason.contains("too many clients"), "{reason}"),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(mut c) => {
            // The refusal may come right after the greeting when two handshakes raced.
            let e = c.recv(DEADLINE).unwrap_err();
            assert!(matches!(e, ClientError::Refused { .. }), "{e}");
        }
    }
}

#[test]
fn garbage_clients_are_closed_and_others_keep_receiving() {
    let server = start(config());
    let ServeAddr::Tcp(sa) = *server.local_addr() else { unreachable!() };
    let mut good = connect(&server, "good");

    let mut random = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..256 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push(x as u8);
    }
    let mut huge = proto::preamble(PROTOCOL_VERSION).to_vec();
    huge.extend(u32::MAX.to_le_bytes());
    let mut oversized_hello = proto::preamble(PROTOCOL_VERSION).to_vec();
    oversized_hello.extend((MAX_HANDSHAKE_FRAME_LEN + 1).to_le_bytes());
    let mut undecodable = proto::preamble(PROTOCOL_VERSION).to_vec();
    undecodable.extend([3, 0, 0, 0, 0, 0xff, 0xff]);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("a huge length prefix", huge),
        ("an oversized hello", oversized_hello),
        ("an undecodable hello", undecodable),
        ("silence", Vec::new()),
    ];
    let mut seq = 0;
    for (what, bytes) in &inputs {
        let mut s = TcpStream::connect(sa).unwrap();
        s.write_all(bytes).unwrap();
        let start = Instant::now();
        let got = read_to_close(&mut s);
        assert!(got.starts_with(&proto::MAGIC), "{what}: the server greets first");
        eprintln!("{what}: closed after {:?}", start.elapsed());
        seq += 1;
        server.broadcast(&tick(seq));
        recv_until(&mut good, "a tick", |m| matches!(m, ServerMessage::Tick(t) if t.seq == seq));
    }
    wait_until("all bad handshakes counted", || server.stats().bad_handshakes == inputs.len() as u64);
    assert_eq!(server.client_count(), 1);

    // Garbage after a good handshake closes that client only.
    let mut s = TcpStream::connect(sa).unwrap();
    proto::write_client_handshake(&mut s, "then garbage").unwrap();
    wait_until("the second client", || server.client_count() == 2);
    s.write_all(&(MAX_FRAME_LEN).to_le_bytes()).unwrap();
    read_to_close(&mut s);
    wait_until("the garbage client to be dropped", || server.client_count() == 1);
    server.broadcast(&tick(100));
    recv_until(&mut good, "a tick", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 100));
}

#[test]
fn stalled_client_never_blocks_broadcast_and_learns_its_drop_count() {
    let server = start(ServerConfig { queue_frames: 8, queue_bytes: 2 * 1024 * 1024, ..config() });
    let mut slow = connect(&server, "slow");
    let mut fast = connect(&server, "fast");
    wait_until("both clients", || server.client_count() == 2);
    // `slow` stops reading. Ticks of 512 KiB soon fill the kernel's socket buffers and then its queue.
    let big = |seq: u64| {
        let location = Location::new("x".repeat(512 * 1024), 1, 1);
        ServerMessage::Tick(Box::new(Tick {
            seq,
            uptime_nanos: 1 + seq,
            new_locations: vec![LocationInfo { id: seq as u32, location }],
            ..Tick::default()
        }))
    };
    let mut worst = Duration::ZERO;
    let mut seq = 0;
    let fast_reader = std::thread::spawn(move || {
        let mut got = 0u64;
        let end = Instant::now() + DEADLINE;
        while got < 60 {
            assert!(Instant::now() < end, "the fast client got only {got} ticks");
            match fast.recv(Duration::from_millis(100)) {
                Ok(Some(ServerMessage::Tick(_))) => got += 1,
                Ok(_) => {}
                Err(e) => panic!("the fast client lost its connection: {e}"),
            }
        }
        fast
    });
    while seq < 60 {
        seq += 1;
        let m = big(seq);
        let t = Instant::now();
        server.broadcast(&m);
        worst = worst.max(t.elapsed());
        // Let the fast client's writer keep up (its queue holds only three such ticks); the slow one has no
        // excuse.
        wait_until("the fast client's queue to drain", || {
            server.stats().clients.iter().any(|c| c.name == "fast" && c.queued_frames == 0)
        });
    }
    eprintln!("slowest broadcast: {worst:?}");
    assert!(worst < Duration::from_millis(500), "broadcast blocked for {worst:?}");
    let _fast = fast_reader.join().unwrap();
    let stats = server.stats();
    let slow_stats = stats.clients.iter().find(|c| c.name == "slow").unwrap();
    assert!(slow_stats.dropped_frames > 0, "{stats:?}");
    assert!(slow_stats.queued_bytes <= 2 * 1024 * 1024 + 600 * 1024, "{stats:?}");
    let fast_stats = stats.clients.iter().find(|c| c.name == "fast").unwrap();
    assert_eq!(fast_stats.dropped_frames, 0, "{stats:?}");

    // `slow` reads again: it gets a fresh full state telling it how much it missed, then the stream.
    let full =
        recv_until(&mut slow, "a resync", |m| matches!(m, ServerMessage::Full(f) if f.client_dropped_frames > 0));
    let ServerMessage::Full(full) = full else { unreachable!() };
    server.broadcast(&tick(1000));
    let t = recv_until(&mut slow, "the next tick", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 1000));
    let ServerMessage::Tick(t) = t else { unreachable!() };
    let dropped = server.stats().clients.iter().find(|c| c.name == "slow").unwrap().dropped_frames;
    assert_eq!(t.client_dropped_frames, dropped);
    assert!(t.client_dropped_frames >= full.client_dropped_frames);
    assert!(server.stats().clients.iter().find(|c| c.name == "slow").unwrap().resyncs >= 1);
}

#[test]
fn killed_client_is_dropped_and_others_keep_receiving() {
    let server = start(config());
    let mut clients: Vec<Client> = (0..4).map(|i| connect(&server, &format!("c{i}"))).collect();
    wait_until("four clients", || server.client_count() == 4);
    server.broadcast(&tick(1));
    for c in &mut clients {
        recv_until(c, "tick 1", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 1));
    }
    drop(clients.remove(0));
    wait_until("the killed client to be dropped", || {
        server.broadcast(&tick(2));
        server.client_count() == 3
    });
    server.broadcast(&tick(3));
    for c in &mut clients {
        recv_until(c, "tick 3", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 3));
    }
    assert_eq!(server.stats().disconnected, 1);
}

#[test]
fn shutdown_says_goodbye_and_stops_promptly() {
    let server = start(config());
    let mut c = connect(&server, "c");
    wait_until("the client", || server.client_count() == 1);
    let t = Instant::now();
    server.shutdown_with("the runtime shut down");
    let took = t.elapsed();
    let bye = recv_until(&mut c, "goodbye", |m| matches!(m, ServerMessage::Goodbye(_)));
    assert_eq!(bye, ServerMessage::Goodbye(Goodbye { reason: "the runtime shut down".into() }));
    assert!(matches!(c.recv(DEADLINE), Err(ClientError::Closed { .. })));
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert_eq!(*lock(&server.inner.threads), 0, "every server thread exited");
    // New connections are no longer accepted.
    assert!(Client::connect(server.local_addr(), Duration::from_millis(500)).is_err());
}

/// A client of `PROTOCOL_VERSION.major`.`minor`, by hand, past its full state: from here every broadcast
/// reaches it.
fn connect_as(server: &Server, minor: u16) -> TcpStream {
    let ServeAddr::Tcp(sa) = *server.local_addr() else { unreachable!() };
    let mut s = TcpStream::connect(sa).unwrap();
    let v = ProtocolVersion { major: PROTOCOL_VERSION.major, minor };
    s.write_all(&proto::preamble(v)).unwrap();
    let hello =
        ClientMessage::Hello(loopscope_wire::proto::ClientHello { protocol_version: v, client_name: format!("{v}") });
    proto::write_frame(&mut s, &hello).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    proto::read_preamble(&mut s).unwrap();
    while !matches!(next_message(&mut s), ServerMessage::FullTasks(_)) {}
    s
}

fn next_message(s: &mut TcpStream) -> ServerMessage {
    let payload = proto::read_frame(s, MAX_FRAME_LEN).unwrap().expect("a frame");
    match proto::decode_server(&payload).unwrap() {
        Decoded::Message(m) => m,
        Decoded::Unknown { kind } => panic!("kind {kind} unknown to this version"),
    }
}

#[test]
fn stall_parts_go_to_clients_of_3_2_and_whole_events_to_older_ones() {
    let server = start(config());
    let mut old = connect_as(&server, 1);
    let mut new = connect_as(&server, PROTOCOL_VERSION.minor);
    let ServerMessage::Stall(ev) = big_stall() else { unreachable!() };
    let part = loopscope_wire::StallPart::diff(None, &ev);
    let sent =
        server.broadcast_stall(&ServerMessage::Stall(ev.clone()), &ServerMessage::StallPart(Box::new(part.clone())));
    assert_eq!(sent, 2);
    assert_eq!(next_message(&mut old), ServerMessage::Stall(ev.clone()), "3.1 gets the whole event");
    let ServerMessage::StallPart(got) = next_message(&mut new) else { panic!("3.2 gets a part") };
    assert_eq!(*got, part);
    // The three samples share a stack: the part carries it once.
    let all = |sample| loopscope_wire::CopiedFrames { sample, at: 0, earlier: 0, from: 0, len: 60 };
    assert_eq!(got.copied, [all(1), all(2)]);
    assert_eq!(got.apply(None), *ev);
}
