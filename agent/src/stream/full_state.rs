//! Full states for new clients and for the start of a recording: everything a client needs to draw the
//! runtime without having seen a tick, built on the server's threads (or the agent thread, for the recording)
//! from the same tables and marks as the ticks.

use super::feed::proto_nanos;
use crate::scan::dropped;
use crate::scan::pass::{Recent, scan};
use crate::shared::Shared;
use crate::shared::stream::FeedShared;
use crate::shared::tables::TaskCounts;
use crate::sync::lock;
use loopscope_wire::StallEvent;
use loopscope_wire::proto::{self, FullState, LocationSample, ServerMessage, TaskSample};
use std::sync::{Arc, Weak};

/// Builds full states for new clients, on the server's threads. Holds the agent weakly: a connected client
/// must not keep a dropped runtime's agent alive.
#[derive(Debug, Clone)]
pub(crate) struct FullStateSource {
    shared: Weak<Shared>,
    feed: Arc<FeedShared>,
}

impl FullStateSource {
    pub(crate) fn new(shared: &Arc<Shared>, feed: Arc<FeedShared>) -> Self {
        FullStateSource { shared: Arc::downgrade(shared), feed }
    }

    /// A full state and its task chunks (empty once the agent is gone).
    pub(crate) fn messages(&self) -> Vec<ServerMessage> {
        let Some(shared) = self.shared.upgrade() else { return Vec::new() };
        let (full, tasks) = full_state(&shared, &self.feed);
        proto::full_state_messages(full, tasks)
    }
}

/// Encoded bytes of stall events a full state carries at most. A frame holds at most 16 MiB
/// (`MAX_FRAME_LEN`), and a stall event with four samples of a deep stack can take a few hundred KB, so the
/// agent's 256 recent stalls may not fit: a full state that cannot be encoded would leave a new client with
/// nothing at all. A quarter of the frame leaves room for the locations and workers.
const FULL_STALLS_BUDGET: usize = 4 << 20;

/// The newest of `events` (given newest first) whose encodings fit in `budget` bytes, oldest first. Older
/// stalls that do not fit are left out: the totals still count them, and a client that was connected saw
/// them live.
fn newest_within(events: impl Iterator<Item = StallEvent>, budget: usize) -> Vec<StallEvent> {
    let mut out = Vec::new();
    let mut used = 0;
    for ev in events {
        let Ok(bytes) = proto::encode_payload(&ev, "StallEvent") else { continue };
        if used + bytes.len() > budget {
            break;
        }
        used += bytes.len();
        out.push(ev);
    }
    out.reverse();
    out
}

fn full_state(shared: &Shared, feed: &FeedShared) -> (FullState, Vec<TaskSample>) {
    let latest = lock(&feed.latest).clone();
    let mut ids = lock(&feed.ids);
    let uptime = shared.uptime();
    let location = |index| ids.id(&shared.locations, index);
    // Every task in the table goes in, marked `SEEN` first so that its end reaches the client; one that is
    // ending right then stays out.
    let keep = |i, c: Option<&TaskCounts>| c.is_some_and(|c| shared.tasks.publish(i, c.id));
    let mut scan = scan(shared, location, keep, Recent::Skip);
    let mut location_stats: Vec<LocationSample> = scan.locations.drain().map(|(_, l)| l).collect();
    location_stats.sort_by_key(|l| l.id);
    let locations = ids.infos.clone();
    drop(ids);
    // The latest event of each recent stall, oldest first, as many as fit the budget.
    let recent_stalls = newest_within(lock(&shared.recent_stalls).events_newest_first(), FULL_STALLS_BUDGET);
    let full = FullState {
        at_unix_nanos: crate::os::unix_nanos(),
        uptime_nanos: proto_nanos(uptime),
        tick_seq: latest.seq,
        probes: crate::watch::probing::status(),
        locations,
        location_stats,
        workers: latest.workers,
        global: latest.global,
        waits: latest.waits,
        poll_histogram: scan.poll_histogram,
        totals: scan.totals,
        dropped: dropped(shared),
        recent_stalls,
        task_count: 0,
        client_dropped_frames: 0,
    };
    (full, scan.tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_wire::proto::{MAX_FRAME_LEN, ServerFrame};

    /// A stall as deep as the probes capture: four samples of 128 frames with long generic names.
    fn deep_stall(id: u64) -> StallEvent {
        loopscope_wire::example_stall(id, 128, 4)
    }

    #[test]
    fn a_full_state_with_many_deep_stalls_still_fits_in_a_frame() {
        let recent: Vec<StallEvent> = (0..crate::shared::RECENT_STALLS as u64).map(deep_stall).collect();
        let full = |recent_stalls| ServerMessage::Full(Box::new(FullState { recent_stalls, ..FullState::default() }));
        // All of them would not fit: the full state could not be sent at all.
        assert!(ServerFrame::encode(&full(recent.clone())).is_err(), "the test needs more than a frame of stalls");

        let kept = newest_within(recent.iter().rev().cloned(), FULL_STALLS_BUDGET);
        assert!(!kept.is_empty() && kept.len() < recent.len(), "kept {}", kept.len());
        let ids: Vec<u64> = kept.iter().map(|e| e.stall_id).collect();
        let newest: Vec<u64> = (recent.len() - kept.len()..recent.len()).map(|i| i as u64).collect();
        assert_eq!(ids, newest, "the newest stalls, oldest first");
        let frame = ServerFrame::encode(&full(kept)).expect("fits");
        assert!(frame.wire_len() <= FULL_STALLS_BUDGET + 1024 && frame.wire_len() < MAX_FRAME_LEN as usize);
        // Small stalls all fit.
        let small: Vec<StallEvent> = (0..10).map(|i| StallEvent { culprit: None, ..deep_stall(i) }).collect();
        assert_eq!(newest_within(small.into_iter().rev(), FULL_STALLS_BUDGET).len(), 10);
    }
}
