//! Measures what stalls cost in a recording: bytes on the wire per stall (every stall message as it is sent,
//! compressed where the protocol compresses it), events and samples per stall, and the heap size of each
//! stall's latest event kept as it is (what the agent's recent-stalls store kept per stall before issue 12).
//!
//! ```text
//! cargo run --release -p loopscope-wire --example stall_bytes -- FILE.lsrec
//! ```
//!
//! Every record has a 16-byte header (counted); "as parts" is what the same events cost as
//! `StallPart`s (protocol 3.2), computed from the events, so an old recording shows before and after.

use loopscope_wire::proto::{ServerMessage, encode_server_payload};
use loopscope_wire::record::RecordingReader;
use loopscope_wire::{Frame, StallEvent, StallPart};
use std::collections::BTreeMap;
use std::mem::size_of;

/// Heap bytes a stall event holds, plus the event itself: what one entry of the store costs.
fn heap_size(ev: &StallEvent) -> usize {
    let s = |x: &Option<String>| x.as_ref().map_or(0, String::capacity);
    let mut n = size_of::<StallEvent>() + s(&ev.thread.name) + s(&ev.agent_task);
    n += ev.location.as_ref().map_or(0, |l| l.file.capacity());
    if let Some(c) = &ev.culprit {
        n += size_of::<loopscope_wire::Culprit>() + c.reason.capacity();
        n += c.samples.capacity() * size_of::<loopscope_wire::CulpritSample>();
        for smp in &c.samples {
            n += smp.frames.capacity() * size_of::<Frame>() + s(&smp.stack_error) + s(&smp.syscall) + s(&smp.fd_target);
            n += smp.frames.iter().map(|f| s(&f.function) + s(&f.file)).sum::<usize>();
        }
    }
    n
}

#[derive(Default)]
struct PerStall {
    events: usize,
    wire: usize,
    /// For whole events (protocol 3.1 and older): what the same events cost as parts (3.2).
    as_parts: usize,
    samples_sent: usize,
    last: Option<StallEvent>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: stall_bytes FILE.lsrec")?;
    let reader = RecordingReader::open(&path)?;
    let protocol = reader.header().hello.protocol_version;
    let mut stalls: BTreeMap<u64, PerStall> = BTreeMap::new();
    let mut total = 0usize;
    for rec in reader {
        let rec = rec?;
        let len = encode_server_payload(&rec.message)?.len() + 16;
        total += len;
        let (ev, carried) = match &rec.message {
            ServerMessage::Stall(ev) => ((**ev).clone(), ev.culprit.as_ref().map_or(0, |c| c.samples.len())),
            // Protocol 3.2: rebuild the event from the stall's previous one, as a client does.
            ServerMessage::StallPart(p) => {
                let previous = stalls.get(&p.event.stall_id).and_then(|s| s.last.as_ref());
                let carried = p.event.culprit.as_ref().map_or(0, |c| c.samples.len());
                (p.apply(previous), carried)
            }
            _ => continue,
        };
        let e = stalls.entry(ev.stall_id).or_default();
        let part = StallPart::diff(e.last.as_ref(), &ev);
        e.as_parts += encode_server_payload(&ServerMessage::StallPart(Box::new(part)))?.len() + 16;
        e.events += 1;
        e.wire += len;
        e.samples_sent += carried;
        e.last = Some(ev);
    }
    println!("{path}: protocol {protocol}, {} records bytes (re-encoded), {} stalls", total, stalls.len());
    let mut wire: Vec<usize> = Vec::new();
    let mut heap: Vec<usize> = Vec::new();
    let mut parts: Vec<usize> = Vec::new();
    for (id, s) in &stalls {
        let last = s.last.as_ref().expect("one event");
        let c = last.culprit.as_ref();
        let frames: Vec<usize> = c.map_or(vec![], |c| c.samples.iter().map(|x| x.frames.len()).collect());
        let h = heap_size(last);
        println!(
            "stall {id}: {} events, {} samples sent, final samples {:?} frames, {} B on the wire ({} B as parts), {} B \
             heap",
            s.events, s.samples_sent, frames, s.wire, s.as_parts, h
        );
        parts.push(s.as_parts);
        wire.push(s.wire);
        heap.push(h);
    }
    let median = |v: &mut Vec<usize>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let sum_w: usize = wire.iter().sum();
    let sum_h: usize = heap.iter().sum();
    let n = stalls.len().max(1);
    let sum_p: usize = parts.iter().sum();
    println!(
        "as parts: mean {} B, median {} B, max {} B",
        sum_p / stalls.len().max(1),
        median(&mut parts),
        parts.iter().max().unwrap_or(&0)
    );
    println!(
        "wire per stall: mean {} B, median {} B; heap per stall: mean {} B, median {} B; store at 256 stalls ~{} KiB",
        sum_w / n,
        median(&mut wire),
        sum_h / n,
        median(&mut heap),
        sum_h / n * 256 / 1024
    );
    Ok(())
}
