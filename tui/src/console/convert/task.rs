//! One console task as the converter keeps it ([`ConsoleTask`]: its latest stats, the poll it judged last, its
//! open stall), and the protobuf time conversions: split out of `convert.rs`.

use console_api::tasks::Stats;
use loopscope_wire::proto::{LatencySample, TaskSample};
use loopscope_wire::{LogHistogram, TaskState};

/// A `google.protobuf.Timestamp` as nanoseconds since the Unix epoch. `None` before the epoch or with nanos out
/// of range (a malformed timestamp): a time we cannot trust is no time, rather than a huge or negative elapsed.
pub fn timestamp_nanos(t: &prost_types::Timestamp) -> Option<i128> {
    if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    Some(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

/// A `google.protobuf.Duration` as nanoseconds, 0 when negative or malformed.
pub(super) fn duration_nanos(d: &prost_types::Duration) -> u64 {
    if d.seconds < 0 || d.nanos < 0 {
        return 0;
    }
    let n = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A non-negative nanosecond difference as a `u64` (0 when negative).
pub(super) fn span(from: i128, to: i128) -> u64 {
    u64::try_from(to.saturating_sub(from).max(0)).unwrap_or(u64::MAX)
}

/// What kind of task tokio said it spawned (the span's `kind` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `tokio::spawn`, `spawn_local`, `block_on`: polls that must return quickly.
    Async,
    /// `spawn_blocking`: one "poll" is the whole closure, long by design, never a stall.
    Blocking,
}

/// A stall we reported and have not ended yet.
#[derive(Clone, Debug)]
pub(super) struct OpenStall {
    pub(super) id: u64,
    /// When the poll started, on the app's clock.
    pub(super) started: i128,
    /// The task's poll count when the poll was first seen in flight (console counts a poll when it starts).
    pub(super) polls_at_start: u64,
    /// The task's busy time then: the time of its completed polls, which excludes this one.
    pub(super) busy_at_start: u64,
    /// The longest elapsed time seen so far: a lower bound of the poll's length.
    pub(super) elapsed: u64,
    /// The next elapsed time that gets an `Updated` event (2×, 4×, ... the threshold, as the agent does).
    pub(super) next_update: u64,
}

#[derive(Clone, Debug)]
pub(super) struct ConsoleTask {
    /// tokio's task id (the span's `task.id` field), or console's span id when tokio did not give one.
    pub(super) id: u64,
    pub(super) location: u32,
    pub(super) kind: Kind,
    pub(super) stats: Option<Stats>,
    pub(super) max_poll_nanos: u64,
    pub(super) stall_count: u64,
    /// The start of the latest completed poll already judged (so one poll is never counted twice).
    pub(super) judged_start: Option<i128>,
    pub(super) stall: Option<OpenStall>,
    pub(super) changed: bool,
    pub(super) finished: bool,
}

impl ConsoleTask {
    pub(super) fn polls(&self) -> u64 {
        self.stats.as_ref().and_then(|s| s.poll_stats.as_ref()).map_or(0, |p| p.polls)
    }

    pub(super) fn busy_nanos(&self) -> u64 {
        self.stats
            .as_ref()
            .and_then(|s| s.poll_stats.as_ref())
            .and_then(|p| p.busy_time.as_ref())
            .map_or(0, duration_nanos)
    }

    /// (start, end) of the latest poll, on the app's clock.
    pub(super) fn last_poll(&self) -> (Option<i128>, Option<i128>) {
        let p = self.stats.as_ref().and_then(|s| s.poll_stats.as_ref());
        let started = p.and_then(|p| p.last_poll_started.as_ref()).and_then(timestamp_nanos);
        let ended = p.and_then(|p| p.last_poll_ended.as_ref()).and_then(timestamp_nanos);
        (started, ended)
    }

    /// The start of the poll running when the stats were read, if one was.
    pub(super) fn in_flight(&self) -> Option<i128> {
        match self.last_poll() {
            (Some(s), None) => Some(s),
            (Some(s), Some(e)) if s > e => Some(s),
            _ => None,
        }
    }

    pub(super) fn sample(&self) -> TaskSample {
        let scheduled = self.stats.as_ref().and_then(|s| s.scheduled_time.as_ref()).map_or(0, duration_nanos);
        TaskSample {
            id: self.id,
            location: self.location,
            state: if self.finished { TaskState::Finished } else { TaskState::Live },
            poll_count: self.polls(),
            busy_nanos: self.busy_nanos(),
            max_poll_nanos: self.max_poll_nanos,
            // Console has no slow-poll count (its histogram would need a stream per task); stalls are ours.
            slow_poll_count: self.stall_count,
            stall_count: self.stall_count,
            poll_histogram: LogHistogram::default(),
            // Console's scheduled time: the total time from a wake to the poll it caused.
            schedule_latency: Some(LatencySample {
                count: self.polls(),
                total_nanos: scheduled,
                max_nanos: 0,
                histogram: LogHistogram::default(),
            }),
        }
    }
}
