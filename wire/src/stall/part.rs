//! Stall events sent as what changed since the stall's previous event (protocol 3.2): [`StallPart`] and the
//! frame runs it copies from earlier samples. Split out of `stall.rs`, which holds the whole events.

use super::{CulpritSample, Frame, StallEvent};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A stall event sent as what changed since the same stall's previous event on the stream (protocol 3.2).
///
/// A stall's events each carry all of its samples so far, and the samples of one stall nearly always show
/// the same stack, or one that differs in a few inner frames: sent whole, every event repeated a stack of
/// 40–70 long generic names that the client already had. A part carries only the samples that are new or
/// changed since the stall's previous event (from `first_sample` on), and the longest run of frames that a
/// sample shares with an earlier sample of the stall is sent as a reference to it ([`CopiedFrames`]). The
/// receiver rebuilds the whole event with [`StallPart::apply`], from the stall's previous event as it holds
/// it. A client that joins late gets whole stalls in the full state.
///
/// # Examples
/// ```
/// use loopscope_wire::{CopiedFrames, StallPart, StallPhase, example_stall};
/// let started = example_stall(1, 60, 1);
/// let mut ended = example_stall(1, 60, 3);
/// ended.phase = StallPhase::Ended;
/// let part = StallPart::diff(Some(&started), &ended);
/// // The first sample was sent before; the two new ones repeat its stack, so they carry no frames.
/// assert_eq!(part.first_sample, 1);
/// let all = |sample| CopiedFrames { sample, at: 0, earlier: 0, from: 0, len: 60 };
/// assert_eq!(part.copied, [all(1), all(2)]);
/// assert_eq!(part.apply(Some(&started)), ended);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StallPart {
    /// The event, except that its culprit's `samples` hold only the stall's samples from `first_sample` on,
    /// and the frames listed in `copied` are left out of them.
    pub event: StallEvent,
    /// How many of the stall's samples, from the first, are the same as in its previous event and left out.
    pub first_sample: u32,
    /// Runs of frames left out of the carried samples because an earlier sample of the stall has them, in
    /// the order of `sample`.
    pub copied: Vec<CopiedFrames>,
}

/// A run of frames that a sample shares with an earlier sample of its stall, sent as a reference (see
/// [`StallPart`]). Samples are numbered from the stall's first; frames from the innermost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFrames {
    /// The sample the run belongs to.
    pub sample: u32,
    /// Where the run goes among the sample's frames: the sample's carried frames before `at` come before it.
    pub at: u32,
    /// The earlier sample that has the run.
    pub earlier: u32,
    /// Where the run starts among the earlier sample's frames.
    pub from: u32,
    /// How many frames the run has.
    pub len: u32,
}

/// Why a rebuilt sample has no stack: a part referred to a sample that this receiver never got (it joined
/// during the stall, or fell behind and lost the frame that carried it).
pub const SAMPLE_NOT_RECEIVED: &str = "this sample was sent before this client received the stall";

/// Shorter runs are sent as they are: a reference costs a few bytes, and the frames compress anyway.
const MIN_COPIED_RUN: usize = 4;

impl StallPart {
    /// The part that turns `previous` (the stall's event last sent on the same stream, if any) into `ev`.
    pub fn diff(previous: Option<&StallEvent>, ev: &StallEvent) -> StallPart {
        let mut event = ev.clone();
        let Some(culprit) = &mut event.culprit else {
            return StallPart { event, first_sample: 0, copied: Vec::new() };
        };
        let before = previous.and_then(|p| p.culprit.as_ref()).map_or(&[][..], |c| c.samples.as_slice());
        let first = culprit.samples.iter().zip(before).take_while(|(a, b)| a == b).count();
        let all = ev.culprit.as_ref().map_or(&[][..], |c| c.samples.as_slice());
        let mut copied = Vec::new();
        let mut carried = culprit.samples.split_off(first);
        for (i, sample) in carried.iter_mut().enumerate() {
            let at = first + i;
            // The earlier sample sharing the longest run of frames with this one (a stall's stacks differ,
            // when they do, in a few inner frames).
            let best = all[..at]
                .iter()
                .enumerate()
                .map(|(k, e)| (k, longest_common_run(&sample.frames, &e.frames)))
                .max_by_key(|&(k, (len, ..))| (len, std::cmp::Reverse(k)));
            if let Some((k, (len, start, from))) = best.filter(|&(_, (len, ..))| len >= MIN_COPIED_RUN) {
                sample.frames.drain(start..start + len);
                copied.push(CopiedFrames {
                    sample: at as u32,
                    at: start as u32,
                    earlier: k as u32,
                    from: from as u32,
                    len: len as u32,
                });
            }
        }
        culprit.samples = carried;
        StallPart { event, first_sample: first as u32, copied }
    }

    /// The whole event, given the stall's previous event as this receiver holds it. Samples the part refers
    /// to but the receiver never got come back without a stack, their `stack_error` saying why
    /// ([`SAMPLE_NOT_RECEIVED`]).
    pub fn apply(&self, previous: Option<&StallEvent>) -> StallEvent {
        let mut ev = self.event.clone();
        let Some(culprit) = &mut ev.culprit else { return ev };
        let before = previous.and_then(|p| p.culprit.as_ref()).map_or(&[][..], |c| c.samples.as_slice());
        let first = self.first_sample as usize;
        let mut samples: Vec<CulpritSample> = before.iter().take(first).cloned().collect();
        while samples.len() < first {
            samples.push(CulpritSample {
                at_elapsed: Duration::ZERO,
                frames: Vec::new(),
                symbolized: false,
                stack_error: Some(SAMPLE_NOT_RECEIVED.to_string()),
                state: None,
                syscall: None,
                fd_target: None,
            });
        }
        samples.append(&mut culprit.samples);
        for c in &self.copied {
            let (at, earlier) = (c.sample as usize, c.earlier as usize);
            if earlier >= at || at >= samples.len() {
                continue;
            }
            let from = c.from as usize;
            let run = samples[earlier].frames.get(from..from.saturating_add(c.len as usize)).map(<[Frame]>::to_vec);
            let sample = &mut samples[at];
            match run {
                Some(run) if (c.at as usize) <= sample.frames.len() => {
                    sample.frames.splice(c.at as usize..c.at as usize, run);
                }
                // A partial stack would mislead: none, and why.
                _ => {
                    sample.frames.clear();
                    sample.stack_error.get_or_insert_with(|| SAMPLE_NOT_RECEIVED.to_string());
                }
            }
        }
        culprit.samples = samples;
        ev
    }
}

/// The longest run of equal frames in `a` and `b`: its length and where it starts in each. At most 64 frames
/// a stack, so the quadratic table is small.
fn longest_common_run(a: &[Frame], b: &[Frame]) -> (usize, usize, usize) {
    let mut best = (0, 0, 0);
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            cur[j] = if a[i - 1] == b[j - 1] { prev[j - 1] + 1 } else { 0 };
            if cur[j] > best.0 {
                best = (cur[j], i - cur[j], j - cur[j]);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    best
}
