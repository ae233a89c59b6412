//! Stall events as parts (protocol 3.2): each sample sent once, each repeated stack once, and the whole
//! event rebuilt on the receiving side, through the real encoding.
// The helpers build known-good values; a failure there is a broken test.
#![allow(clippy::unwrap_used)]

use loopscope_wire::proto::{self, Decoded, ServerMessage};
use loopscope_wire::state::State;
use loopscope_wire::{CopiedFrames, SAMPLE_NOT_RECEIVED, StallEvent, StallPart, StallPhase, example_stall};

fn whole(sample: u32, earlier: u32) -> CopiedFrames {
    CopiedFrames { sample, at: 0, earlier, from: 0, len: 64 }
}

/// The events of one stall as the agent produces them: a raw stack first (the symbolizer was busy), then the
/// names, then more samples of the same stack, then the end.
fn events() -> Vec<StallEvent> {
    let mut started = example_stall(9, 64, 1);
    started.phase = StallPhase::Started;
    for f in &mut started.culprit.as_mut().unwrap().samples[0].frames {
        f.function = None;
        f.file = None;
        f.line = None;
    }
    started.culprit.as_mut().unwrap().samples[0].symbolized = false;
    let mut updated = example_stall(9, 64, 2);
    updated.phase = StallPhase::Updated;
    let mut later = example_stall(9, 64, 4);
    later.phase = StallPhase::Updated;
    // A sample without a stack (the capture timed out) keeps its error, and is not a reference.
    let c = later.culprit.as_mut().unwrap();
    c.samples[3].frames.clear();
    c.samples[3].stack_error = Some("timed out".into());
    let mut ended = later.clone();
    ended.phase = StallPhase::Ended;
    vec![started, updated, later, ended]
}

fn through_the_wire(msg: &ServerMessage) -> (ServerMessage, usize) {
    let payload = proto::encode_server_payload(msg).unwrap();
    match proto::decode_server(&payload).unwrap() {
        Decoded::Message(m) => (m, payload.len()),
        Decoded::Unknown { kind } => panic!("kind {kind} unknown"),
    }
}

#[test]
fn a_stall_sent_as_parts_is_rebuilt_exactly_and_costs_a_fraction_of_whole_events() {
    let (mut whole_bytes, mut part_bytes) = (0, 0);
    let mut state = State::new();
    let mut previous: Option<StallEvent> = None;
    for ev in events() {
        let part = StallPart::diff(previous.as_ref(), &ev);
        let (msg, n) = through_the_wire(&ServerMessage::StallPart(Box::new(part)));
        part_bytes += n;
        whole_bytes += through_the_wire(&ServerMessage::Stall(Box::new(ev.clone()))).1;
        state.apply(&msg);
        let got = &state.stalls().next().expect("the stall").latest;
        assert_eq!(*got, ev, "rebuilt after {:?}", ev.phase);
        previous = Some(ev);
    }
    assert_eq!(state.stalls().count(), 1);
    assert!(part_bytes * 2 < whole_bytes, "parts {part_bytes} B, whole events {whole_bytes} B");
}

#[test]
fn what_changed_is_sent_and_nothing_else() {
    let ev = events();
    // The names arrived: the first sample changed, so it is sent again; the second repeats its stack.
    let p = StallPart::diff(Some(&ev[0]), &ev[1]);
    assert_eq!(p.first_sample, 0);
    assert_eq!(p.copied, [whole(1, 0)]);
    // Two new samples, one a repeat, one without a stack.
    let p = StallPart::diff(Some(&ev[1]), &ev[2]);
    assert_eq!(p.first_sample, 2);
    assert_eq!(p.copied, [whole(2, 0)]);
    let carried = &p.event.culprit.as_ref().unwrap().samples;
    assert_eq!(carried.len(), 2);
    assert!(carried.iter().all(|s| s.frames.is_empty()));
    // The end changed no sample: none is carried.
    let p = StallPart::diff(Some(&ev[2]), &ev[3]);
    assert_eq!(p.first_sample, 4);
    assert!(p.event.culprit.as_ref().unwrap().samples.is_empty());
    assert_eq!(p.apply(Some(&ev[2])), ev[3]);
    // No culprit at all: nothing to split.
    let bare = StallEvent { culprit: None, ..ev[3].clone() };
    assert_eq!(StallPart::diff(Some(&ev[2]), &bare).apply(None), bare);
}

#[test]
fn a_receiver_that_missed_the_earlier_events_gets_the_samples_it_can_and_says_which_it_missed() {
    let ev = events();
    let p = StallPart::diff(Some(&ev[1]), &ev[2]);
    // It never saw the stall: the two earlier samples are placeholders, and the repeat of sample 0 has no
    // stack to copy.
    let got = p.apply(None);
    let samples = &got.culprit.as_ref().unwrap().samples;
    assert_eq!(samples.len(), 4);
    for s in &samples[..3] {
        assert!(s.frames.is_empty());
        assert_eq!(s.stack_error.as_deref(), Some(SAMPLE_NOT_RECEIVED));
    }
    assert_eq!(samples[3], ev[2].culprit.as_ref().unwrap().samples[3]);
    // A stack that moved in its inner frames: only those are sent, the rest refers to the earlier sample.
    let mut moved = ev[2].clone();
    let frames = &mut moved.culprit.as_mut().unwrap().samples[2].frames;
    frames[0].ip += 1;
    frames[1].line = Some(7);
    frames.remove(5);
    let p = StallPart::diff(Some(&ev[1]), &moved);
    assert_eq!(p.copied, [CopiedFrames { sample: 2, at: 5, earlier: 0, from: 6, len: 58 }]);
    assert_eq!(p.event.culprit.as_ref().unwrap().samples[0].frames.len(), 5);
    assert_eq!(p.apply(Some(&ev[1])), moved);
    // Everything else of the event is there.
    assert_eq!(StallEvent { culprit: None, ..got }, StallEvent { culprit: None, ..ev[2].clone() });
}
