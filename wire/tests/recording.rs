//! Recordings: round trips, damage at every byte, and recording a live connection.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use loopscope_wire::client::Client;
use loopscope_wire::proto::{
    self, FullState, FullTasks, Goodbye, PROTOCOL_VERSION, ServeAddr, ServerMessage, TaskSample, Tick,
    full_state_messages,
};
use loopscope_wire::record::{RecordError, Recorder, RecordingReader, StreamEnd, example_hello, record_stream};
use loopscope_wire::{StallEvent, StallKind, StallPhase, ThreadInfo};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn stall(id: u64) -> ServerMessage {
    ServerMessage::Stall(Box::new(StallEvent {
        stall_id: id,
        phase: StallPhase::Ended,
        kind: StallKind::WorkerBlocked,
        runtime_id: 1,
        worker: Some(1),
        thread: ThreadInfo { tid: 77, name: Some("tokio-runtime-worker".into()) },
        task_id: 9,
        location: Some(loopscope_wire::Location::new("src/main.rs", 10, 5)),
        elapsed: Duration::from_millis(120),
        threshold: Duration::from_millis(10),
        at_unix_nanos: 1_700_000_000_123_000_000,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: None,
    }))
}

fn messages() -> Vec<ServerMessage> {
    let mut m = full_state_messages(
        FullState { uptime_nanos: 10, ..FullState::default() },
        vec![TaskSample::new(1, 0), TaskSample::new(2, 0)],
    );
    m.push(ServerMessage::Tick(Box::new(Tick { seq: 1, uptime_nanos: 20, finished: vec![2], ..Tick::default() })));
    m.push(stall(5));
    m.push(ServerMessage::Goodbye(Goodbye { reason: "bye".into() }));
    m
}

/// A small recording, and the byte offset at which each record ends.
fn recording() -> (Vec<u8>, Vec<u64>, u64) {
    let mut rec = Recorder::new(Vec::new(), &example_hello(), 1_000).unwrap();
    let header_end = rec.bytes_written();
    let mut ends = Vec::new();
    for (i, m) in messages().iter().enumerate() {
        rec.write_at(Duration::from_millis(i as u64 * 250), m).unwrap();
        ends.push(rec.bytes_written());
    }
    (rec.finish().unwrap(), ends, header_end)
}

#[test]
fn round_trip_keeps_messages_and_timestamps() {
    let (bytes, _, _) = recording();
    let mut reader = RecordingReader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().hello, example_hello());
    assert_eq!(reader.header().started_at_unix_nanos, 1_000);
    let records: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(records.iter().map(|r| r.message.clone()).collect::<Vec<_>>(), messages());
    assert_eq!(records[2].offset, Duration::from_millis(500));
    assert_eq!(records[2].at_unix_nanos(reader.header()), 1_000 + 500_000_000);
    assert!(reader.finished_cleanly());
    assert!(reader.next().is_none());
}

#[test]
fn a_file_round_trips_and_a_dropped_recorder_still_finishes() {
    let path = std::env::temp_dir().join(format!("loopscope-rec-{}.lsrec", std::process::id()));
    {
        let mut rec = Recorder::create(&path, &example_hello()).unwrap();
        rec.set_flush_interval(Duration::ZERO);
        for m in messages() {
            rec.write(&m).unwrap();
        }
        // Dropped without `finish`: the end marker is still written.
    }
    let mut reader = RecordingReader::open(&path).unwrap();
    let n = reader.by_ref().map(Result::unwrap).count();
    assert_eq!(n, messages().len());
    assert!(reader.finished_cleanly());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn truncation_at_every_byte_keeps_the_good_prefix_then_one_clear_error() {
    let (bytes, ends, header_end) = recording();
    for cut in 0..=bytes.len() {
        let part = &bytes[..cut];
        let mut reader = match RecordingReader::new(part) {
            Ok(r) => r,
            Err(e) => {
                assert!((cut as u64) < header_end, "cut {cut}: header error past the header: {e}");
                assert!(matches!(e, RecordError::Truncated { .. }), "cut {cut}: {e}");
                continue;
            }
        };
        assert!(cut as u64 >= header_end, "cut {cut}");
        let mut good = 0;
        let mut errors = Vec::new();
        for r in reader.by_ref() {
            match r {
                Ok(rec) => {
                    assert!(errors.is_empty(), "cut {cut}: a record after an error");
                    assert_eq!(rec.message, messages()[good], "cut {cut}");
                    good += 1;
                }
                Err(e) => errors.push(e),
            }
        }
        let complete = ends.iter().filter(|&&e| e <= cut as u64).count();
        assert_eq!(good, complete, "cut {cut}: every complete record is delivered");
        if cut == bytes.len() {
            assert!(errors.is_empty() && reader.finished_cleanly(), "cut {cut}: {errors:?}");
            continue;
        }
        assert_eq!(errors.len(), 1, "cut {cut}: exactly one error, got {errors:?}");
        let e = &errors[0];
        if ends.contains(&(cut as u64)) || cut as u64 == header_end {
            assert!(e.is_unfinished(), "cut {cut} at a record boundary: {e}");
        } else {
            assert!(matches!(e, RecordError::Truncated { .. }), "cut {cut}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("record {good}")), "cut {cut}: the error names the record: {msg}");
        }
        assert!(reader.next().is_none());
    }
}

#[test]
fn a_corrupt_byte_is_reported_at_its_record_and_earlier_records_survive() {
    let (bytes, ends, header_end) = recording();
    for at in header_end as usize..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        let reader = RecordingReader::new(&damaged[..]).unwrap();
        let results: Vec<_> = reader.collect();
        let damaged_record = ends.iter().filter(|&&e| e <= at as u64).count();
        let good: Vec<_> = results.iter().take_while(|r| r.is_ok()).collect();
        assert_eq!(good.len(), damaged_record, "byte {at}: records before the damage survive");
        assert_eq!(results.len(), damaged_record + 1, "byte {at}: then exactly one error");
        let e = results.last().unwrap().as_ref().unwrap_err();
        assert!(matches!(e, RecordError::Corrupt { .. }), "byte {at}: {e}");
        assert!(e.to_string().contains(&format!("record {damaged_record}")), "byte {at}: {e}");
    }
    // Damage inside the header is caught too.
    for at in 0..header_end as usize {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        assert!(RecordingReader::new(&damaged[..]).is_err(), "header byte {at}");
    }
}

#[test]
fn something_else_is_not_a_recording() {
    let e = RecordingReader::new(&b"HTTP/1.1 200 OK\r\n\r\nhello world"[..]).unwrap_err();
    assert!(matches!(e, RecordError::NotARecording { .. }), "{e}");
    assert!(e.to_string().contains("HTTP/1.1"), "{e}");
}

#[test]
fn record_stream_records_a_live_connection_until_goodbye() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = ServeAddr::Tcp(l.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = proto::preamble(PROTOCOL_VERSION).to_vec();
        out.extend(
            proto::encode_frame(&ServerMessage::Hello(Box::new(example_hello())), proto::MAX_FRAME_LEN).unwrap(),
        );
        s.write_all(&out).unwrap();
        proto::read_client_handshake(&mut s).unwrap();
        for m in messages() {
            proto::write_frame(&mut s, &m).unwrap();
        }
        let mut buf = [0u8; 64];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut client = Client::connect(&addr, Duration::from_secs(10)).unwrap();
    let mut rec = Recorder::new(Vec::new(), client.hello(), 42).unwrap();
    let summary =
        record_stream(&mut client, &mut rec, Some(Instant::now() + Duration::from_secs(10)), || false).unwrap();
    assert_eq!(summary.end, StreamEnd::Goodbye("bye".into()));
    assert_eq!(summary.messages, messages().len() as u64);
    drop(client);
    server.join().unwrap();
    let bytes = rec.finish().unwrap();
    let reader = RecordingReader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().hello, example_hello());
    let got: Vec<ServerMessage> = reader.map(|r| r.unwrap().message).collect();
    assert_eq!(got, messages());
    assert!(matches!(&got[1], ServerMessage::FullTasks(FullTasks { tasks }) if tasks.len() == 2));
}
