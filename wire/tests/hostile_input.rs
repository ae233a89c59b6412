//! Property tests: arbitrary bytes into every decoder never panic and never allocate beyond the limits, and
//! arbitrary messages round-trip through frames and recordings.
//!
//! This binary's global allocator ([`cap::Cap`]) enforces a memory limit while a decoder runs on hostile
//! input: an attempt to allocate what a forged length prefix announces (up to 4 GiB) would abort the test.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use cap::Cap;
use loopscope_wire::proto::{
    self, AgentCapabilities, ClientHello, ClientMessage, CurrentPoll, Decoded, FrameDecoder, FullState, FullTasks,
    GlobalSample, Goodbye, LatencySample, LocationInfo, LocationSample, MAX_FRAME_LEN, PROTOCOL_VERSION, Ping, Pong,
    ProtocolVersion, Refused, ServerFrame, ServerHello, ServerMessage, TaskSample, Tick, WaitHistogram, WaitTimes,
    WorkerSample,
};
use loopscope_wire::record::{Recorder, RecordingReader, example_hello};
use loopscope_wire::state::State;
use loopscope_wire::{
    Classification, Culprit, CulpritSample, Dropped, Frame, FrameOrigin, Location, LogHistogram, ProbeStatus,
    RuntimeInfo, StallEvent, StallKind, StallPhase, TaskState, ThreadInfo, Totals,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::sync::Mutex;
use std::time::Duration;

#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Tests in this file change the allocator's limit, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` allowing it at most `budget` bytes of new allocations (the largest legitimate frame plus slack).
fn with_memory_budget<T>(budget: usize, f: impl FnOnce() -> T) -> T {
    let before = ALLOC.allocated();
    ALLOC.set_limit(before + budget).expect("limit above current use");
    let out = f();
    ALLOC.set_limit(usize::MAX).expect("unlimited");
    out
}

/// Hostile input may make a decoder hold one maximal frame, never more.
const BUDGET: usize = 2 * MAX_FRAME_LEN as usize + (8 << 20);

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_.:<> µ-]{0,16}"
}

fn duration() -> impl Strategy<Value = Duration> {
    (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

fn histogram() -> impl Strategy<Value = LogHistogram> {
    vec(any::<u64>(), 0..24).prop_map(|counts| LogHistogram { counts })
}

fn location() -> impl Strategy<Value = Location> {
    (text(), any::<u32>(), any::<u32>()).prop_map(|(file, line, column)| Location { file, line, column })
}

fn thread() -> impl Strategy<Value = ThreadInfo> {
    (any::<i32>(), option::of(text())).prop_map(|(tid, name)| ThreadInfo { tid, name })
}

fn runtime() -> impl Strategy<Value = RuntimeInfo> {
    (any::<u64>(), option::of(text()), option::of(text()), option::of(any::<usize>()), any::<u32>())
        .prop_map(|(id, name, flavor, workers, pid)| RuntimeInfo { id, name, flavor, workers, pid })
}

fn latency() -> impl Strategy<Value = LatencySample> {
    (any::<u64>(), any::<u64>(), any::<u64>(), histogram()).prop_map(|(count, total_nanos, max_nanos, histogram)| {
        LatencySample { count, total_nanos, max_nanos, histogram }
    })
}

fn task() -> impl Strategy<Value = TaskSample> {
    (
        (any::<u64>(), any::<u32>(), any::<bool>()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        histogram(),
        option::of(latency()),
    )
        .prop_map(|((id, location, live), (polls, busy, max, slow, stalls), poll_histogram, schedule_latency)| {
            TaskSample {
                id,
                location,
                state: if live { TaskState::Live } else { TaskState::Finished },
                poll_count: polls,
                busy_nanos: busy,
                max_poll_nanos: max,
                slow_poll_count: slow,
                stall_count: stalls,
                poll_histogram,
                schedule_latency,
            }
        })
}

fn location_sample() -> impl Strategy<Value = LocationSample> {
    (any::<u32>(), any::<[u64; 7]>(), histogram(), option::of(latency())).prop_map(|(id, c, poll_histogram, sl)| {
        LocationSample {
            id,
            live_tasks: c[0],
            spawned_tasks: c[1],
            poll_count: c[2],
            busy_nanos: c[3],
            max_poll_nanos: c[4],
            slow_poll_count: c[5],
            stall_count: c[6],
            poll_histogram,
            schedule_latency: sl,
        }
    })
}

fn worker() -> impl Strategy<Value = WorkerSample> {
    (any::<u32>(), thread(), any::<[u64; 11]>(), option::of((any::<u64>(), option::of(any::<u32>()), any::<u64>())))
        .prop_map(|(index, thread, c, cur)| WorkerSample {
            index,
            thread,
            busy_nanos: c[0],
            poll_count: c[1],
            park_count: c[2],
            noop_count: c[3],
            steal_count: c[4],
            overflow_count: c[5],
            local_schedule_count: c[6],
            local_queue_depth: c[7],
            mean_poll_nanos: c[8],
            slow_poll_count: c[9],
            max_poll_nanos: c[10],
            current_poll: cur.map(|(task_id, location, elapsed_nanos)| CurrentPoll {
                task_id,
                location,
                elapsed_nanos,
            }),
        })
}

fn global() -> impl Strategy<Value = GlobalSample> {
    (any::<u32>(), any::<[u64; 9]>()).prop_map(|(workers, c)| GlobalSample {
        workers,
        global_queue_depth: c[0],
        alive_tasks: c[1],
        spawned_tasks: c[2],
        remote_schedule_count: c[3],
        blocking_threads: c[4],
        idle_blocking_threads: c[5],
        blocking_queue_depth: c[6],
        budget_forced_yields: c[7],
        io_driver_ready_events: c[8],
    })
}

fn wait() -> impl Strategy<Value = WaitHistogram> {
    (any::<[u64; 3]>(), histogram(), any::<[Option<u64>; 4]>()).prop_map(|(c, histogram, o)| WaitHistogram {
        count: c[0],
        max_nanos: c[1],
        histogram,
        recent_window_nanos: c[2],
        recent_p50_nanos: o[0],
        recent_p99_nanos: o[1],
        recent_max_nanos: o[2],
        pending_nanos: o[3],
    })
}

fn totals() -> impl Strategy<Value = Totals> {
    (any::<[u64; 8]>(), duration()).prop_map(|(c, d)| Totals {
        spawned_tasks: c[0],
        finished_tasks: c[1],
        poll_count: c[2],
        total_poll_duration: d,
        slow_poll_count: c[3],
        stall_count: c[4],
        block_in_place_count: c[5],
        stall_reports: c[6],
        suppressed_reports: c[7],
    })
}

fn dropped() -> impl Strategy<Value = Dropped> {
    any::<[u64; 5]>().prop_map(|c| Dropped {
        untracked_tasks: c[0],
        untracked_locations: c[1],
        events: c[2],
        watchdog_messages: c[3],
        stall_details: c[4],
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<u64>(), option::of(text()), option::of(text()), option::of(any::<u32>()), 0u8..5).prop_map(
        |(ip, function, file, line, o)| Frame {
            ip,
            function,
            file,
            line,
            origin: [
                FrameOrigin::User,
                FrameOrigin::Runtime,
                FrameOrigin::Std,
                FrameOrigin::Probe,
                FrameOrigin::Unknown,
            ][o as usize],
            inlined: false,
            object: None,
        },
    )
}

fn classification() -> impl Strategy<Value = Classification> {
    prop_oneof![
        Just(Classification::CpuBound),
        (text(), option::of(text())).prop_map(|(name, fd_target)| Classification::Syscall { name, fd_target }),
        option::of(text()).prop_map(|detail| Classification::LockWait { detail }),
        Just(Classification::PageFault),
        Just(Classification::Unknown),
    ]
}

fn culprit() -> impl Strategy<Value = Culprit> {
    let sample = (duration(), vec(frame(), 0..24), option::of(text()), option::of(any::<char>()), option::of(text()))
        .prop_map(|(at_elapsed, frames, stack_error, state, syscall)| CulpritSample {
            at_elapsed,
            frames,
            symbolized: true,
            stack_error,
            state,
            syscall,
            fd_target: None,
        });
    (
        classification(),
        text(),
        option::of(0.0f64..=1.0),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        vec(sample, 0..3),
        option::of(any::<bool>()),
    )
        .prop_map(
            |(classification, reason, on_cpu_ratio, voluntary_switches, involuntary_switches, samples, stack_moved)| {
                Culprit {
                    classification,
                    reason,
                    on_cpu_ratio,
                    run_queue_ratio: on_cpu_ratio.map(|r| 1.0 - r),
                    counters: None,
                    voluntary_switches,
                    involuntary_switches,
                    samples,
                    stack_moved,
                }
            },
        )
}

fn stall() -> impl Strategy<Value = StallEvent> {
    (
        (any::<u64>(), 0u8..3, any::<bool>(), any::<u64>(), option::of(any::<u32>())),
        (thread(), any::<u64>(), option::of(location()), duration(), duration()),
        (any::<u64>(), any::<u64>(), any::<bool>(), option::of(culprit())),
    )
        .prop_map(
            |(
                (stall_id, phase, bip, runtime_id, worker),
                (thread, task_id, location, elapsed, threshold),
                (at_unix_nanos, suppressed, caught_in_flight, culprit),
            )| StallEvent {
                stall_id,
                phase: [StallPhase::Started, StallPhase::Updated, StallPhase::Ended][phase as usize],
                kind: if bip { StallKind::BlockInPlace } else { StallKind::WorkerBlocked },
                runtime_id,
                worker,
                thread,
                task_id,
                location,
                elapsed,
                threshold,
                at_unix_nanos,
                suppressed,
                caught_in_flight,
                time: None,
                agent_task: None,
                culprit,
            },
        )
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    (any::<u16>(), any::<u16>()).prop_map(|(major, minor)| ProtocolVersion { major, minor })
}

fn hello() -> impl Strategy<Value = ServerHello> {
    (
        (version(), text(), runtime(), any::<u32>(), option::of(text()), any::<u64>()),
        (duration(), duration(), duration()),
        (any::<[bool; 4]>(), vec(text(), 0..3)),
    )
        .prop_map(
            |(
                (protocol_version, agent_version, runtime, pid, program, started_at_unix_nanos),
                (sample_interval, stall_threshold, slow_poll_threshold),
                (b, missing),
            )| ServerHello {
                protocol_version,
                agent_version,
                runtime,
                pid,
                program,
                started_at_unix_nanos,
                sample_interval,
                stall_threshold,
                slow_poll_threshold,
                capabilities: AgentCapabilities {
                    poll_timing: b[0],
                    stall_detection: b[1],
                    schedule_latency: b[2],
                    runtime_metrics: b[3],
                    missing,
                },
            },
        )
}

fn location_info() -> impl Strategy<Value = LocationInfo> {
    (any::<u32>(), location()).prop_map(|(id, location)| LocationInfo { id, location })
}

fn waits() -> impl Strategy<Value = WaitTimes> {
    (wait(), wait()).prop_map(|(first_poll_delay, timer_lateness)| WaitTimes { first_poll_delay, timer_lateness })
}

fn full() -> impl Strategy<Value = FullState> {
    (
        (any::<[u64; 3]>(), vec((text(), any::<bool>(), text()), 0..3)),
        (vec(location_info(), 0..3), vec(location_sample(), 0..3), vec(worker(), 0..3)),
        (global(), waits(), histogram(), totals(), dropped()),
        (vec(stall(), 0..2), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (c, probes),
                (locations, location_stats, workers),
                (global, waits, poll_histogram, totals, dropped),
                (recent_stalls, task_count, client_dropped_frames),
            )| FullState {
                at_unix_nanos: c[0],
                uptime_nanos: c[1],
                tick_seq: c[2],
                probes: probes.into_iter().map(|(name, active, detail)| ProbeStatus { name, active, detail }).collect(),
                locations,
                location_stats,
                workers,
                global,
                waits,
                poll_histogram,
                totals,
                dropped,
                recent_stalls,
                task_count,
                client_dropped_frames,
            },
        )
}

fn tick() -> impl Strategy<Value = Tick> {
    (
        (any::<[u64; 3]>(), vec(worker(), 0..3), global(), waits()),
        (vec(location_info(), 0..3), vec(location_sample(), 0..3), vec(task(), 0..4), vec(any::<u64>(), 0..4)),
        (histogram(), totals(), dropped(), any::<u64>()),
    )
        .prop_map(
            |(
                (c, workers, global, waits),
                (new_locations, locations, tasks, finished),
                (poll_histogram, totals, dropped, client_dropped_frames),
            )| Tick {
                seq: c[0],
                at_unix_nanos: c[1],
                uptime_nanos: c[2],
                workers,
                global,
                waits,
                new_locations,
                locations,
                tasks,
                finished,
                poll_histogram,
                totals,
                dropped,
                client_dropped_frames,
            },
        )
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        hello().prop_map(|h| ServerMessage::Hello(Box::new(h))),
        text().prop_map(|reason| ServerMessage::Refused(Refused { reason })),
        full().prop_map(|f| ServerMessage::Full(Box::new(f))),
        vec(task(), 0..5).prop_map(|tasks| ServerMessage::FullTasks(FullTasks { tasks })),
        tick().prop_map(|t| ServerMessage::Tick(Box::new(t))),
        stall().prop_map(|s| ServerMessage::Stall(Box::new(s))),
        any::<u64>().prop_map(|nonce| ServerMessage::Pong(Pong { nonce })),
        text().prop_map(|reason| ServerMessage::Goodbye(Goodbye { reason })),
    ]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (version(), text()).prop_map(|(protocol_version, client_name)| ClientMessage::Hello(ClientHello {
            protocol_version,
            client_name
        })),
        any::<u64>().prop_map(|nonce| ClientMessage::Ping(Ping { nonce })),
    ]
}

/// Feeds bytes to every decoder. Results don't matter; panics and runaway allocations do.
fn decode_everything(bytes: &[u8]) {
    let _ = proto::decode_server(bytes);
    // The same bytes as a compressed envelope's body, and as valid DEFLATE data of arbitrary content.
    let tag = proto::COMPRESSED_KIND as u8;
    let _ = proto::decode_server(&[&[tag][..], bytes].concat());
    let _ = proto::decode_server(&[&[tag][..], &miniz_oxide::deflate::compress_to_vec(bytes, 1)[..]].concat());
    let _ = proto::decode_client(bytes);
    let mut r = bytes;
    while let Ok(Some(p)) = proto::read_frame(&mut r, MAX_FRAME_LEN) {
        if let Ok(Decoded::Message(m)) = proto::decode_server(&p) {
            State::new().apply(&m);
        }
    }
    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    for chunk in bytes.chunks(7) {
        d.push(chunk);
        while let Ok(Some(p)) = d.next_frame() {
            let _ = proto::decode_server(&p);
        }
    }
    let _ = proto::read_client_handshake(&mut &bytes[..]);
    let _ = proto::read_preamble(&mut &bytes[..]);
    if let Ok(reader) = RecordingReader::new(bytes) {
        for r in reader {
            if r.is_err() {
                break;
            }
        }
    }
}

fn preamble() -> Vec<u8> {
    proto::preamble(PROTOCOL_VERSION).to_vec()
}

/// A valid recording header, so that arbitrary bytes after it reach the record decoder.
fn recording_header() -> Vec<u8> {
    let rec = Recorder::new(Vec::new(), &example_hello(), 0).unwrap();
    let header_len = rec.bytes_written() as usize;
    rec.finish().unwrap()[..header_len].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(bytes in vec(any::<u8>(), 0..2048)) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        with_memory_budget(BUDGET, || {
            decode_everything(&bytes);
            // The same bytes behind valid openings, to get past the magic checks.
            let mut after_preamble = preamble();
            after_preamble.extend(&bytes);
            decode_everything(&after_preamble);
            let mut after_header = recording_header();
            after_header.extend(&bytes);
            decode_everything(&after_header);
        });
    }

    #[test]
    fn forged_lengths_never_allocate_what_they_announce(len in any::<u32>(), tail in vec(any::<u8>(), 0..64)) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        with_memory_budget(BUDGET, || {
            for prefix in [Vec::new(), preamble(), recording_header()] {
                let mut bytes = prefix;
                bytes.extend(len.to_le_bytes());
                bytes.extend(&tail);
                decode_everything(&bytes);
                // A record header with a valid checksum and a forged length.
                let mut rec = recording_header();
                let mut head = [0u8; 16];
                head[8..12].copy_from_slice(&len.to_le_bytes());
                let crc = crc32(&head[..12]);
                head[12..].copy_from_slice(&crc.to_le_bytes());
                rec.extend(head);
                rec.extend(&tail);
                decode_everything(&rec);
            }
        });
    }

    #[test]
    fn mutated_valid_frames_never_panic(msg in server_message(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes = preamble();
        bytes.extend(proto::encode_frame(&msg, MAX_FRAME_LEN).unwrap());
        // As sent: a large stall event is a compressed envelope.
        bytes.extend(ServerFrame::encode(&msg).unwrap().parts(0).to_vec());
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= b;
        }
        with_memory_budget(BUDGET, || decode_everything(&bytes));
    }

    #[test]
    fn server_messages_round_trip(msg in server_message(), dropped in any::<u64>()) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = proto::encode_frame(&msg, MAX_FRAME_LEN).unwrap();
        let payload = proto::read_frame(&mut &bytes[..], MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(proto::decode_server(&payload).unwrap(), Decoded::Message(msg.clone()));

        // Encoded once for many clients, with each client's drop count patched in.
        let shared = ServerFrame::encode(&msg).unwrap().parts(dropped).to_vec();
        let Decoded::Message(got) = proto::decode_server(&shared[4..]).unwrap() else { panic!("unknown kind") };
        let mut want = msg.clone();
        match &mut want {
            ServerMessage::Tick(t) => t.client_dropped_frames = dropped,
            ServerMessage::Full(f) => f.client_dropped_frames = dropped,
            _ => {}
        }
        prop_assert_eq!(&got, &want);
        // The same for a client of protocol 1.0, which gets no compressed envelope.
        let v1_0 = ProtocolVersion { major: PROTOCOL_VERSION.major, minor: 0 };
        let old = ServerFrame::encode(&msg).unwrap().parts_for(v1_0, dropped).to_vec();
        prop_assert_ne!(u32::from(old[4]), proto::COMPRESSED_KIND);
        let Decoded::Message(got) = proto::decode_server(&old[4..]).unwrap() else { panic!("unknown kind") };
        prop_assert_eq!(got, want);

        // Through a recording.
        let mut rec = Recorder::new(Vec::new(), &example_hello(), 0).unwrap();
        rec.write_at(Duration::from_nanos(dropped), &msg).unwrap();
        let file = rec.finish().unwrap();
        let records: Vec<_> = RecordingReader::new(&file[..]).unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(records.len(), 1);
        prop_assert_eq!(&records[0].message, &msg);
        prop_assert_eq!(records[0].offset, Duration::from_nanos(dropped));

        // And any message applies to a state without panicking.
        State::new().apply(&msg);
    }

    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = proto::encode_frame(&msg, MAX_FRAME_LEN).unwrap();
        let payload = proto::read_frame(&mut &bytes[..], MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(proto::decode_client(&payload).unwrap(), Decoded::Message(msg));
    }
}

/// CRC-32 (IEEE), as the recording format uses; computed by hand here to forge records independently.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
