//! Stable mode: a worker's busy span (park to unpark) watched as if it were a poll, when no timed poll runs.

use super::*;

impl Watchdog {
    /// Stable mode: the busy span in flight on `slot`, as if it were a poll (its tagged sequence number, no
    /// task), counted from the last timed poll seen in it, if any. `None` when the worker is parked, or while a
    /// timed poll runs: that poll is watched as itself, and its time is then taken off the span.
    pub(super) fn busy_span(&self, slot: &WorkerSlot, sw: &mut SlotWatch, timed: bool) -> Option<InFlight> {
        let (seq, start) = slot.busy()?;
        if timed {
            sw.busy_floor = Some((seq, self.shared.clock.raw()));
            return None;
        }
        let start = match sw.busy_floor {
            Some((s, raw)) if s == seq => start.max(raw),
            _ => start,
        };
        Some(InFlight { seq, start, task_id: 0, location_addr: 0 })
    }

    /// Stable mode: looks at a busy span `f` (from [`busy_span`](Self::busy_span)); returns the nanoseconds until it
    /// could need another look.
    ///
    /// A span past the threshold is only a *candidate*: a worker that runs many short polls is busy just as long
    /// as one that is blocked. The prober takes several looks a little apart and the agent thread decides
    /// (`probing::confirm_busy`): a blocking syscall or a lock wait inside a poll, or the same frames under the
    /// task's poll in every stack sample. Confirmed, the span is followed like a timed poll (reports at 2×, 4×,
    /// ... and an end when the worker parks); rejected, it is looked at again a threshold later, then two, four
    /// and eight, so a storm of short polls costs a few looks a second at most.
    pub(super) fn look_busy(&mut self, slot: &Arc<WorkerSlot>, sw: &mut SlotWatch, f: InFlight) -> u64 {
        // Scheduler readings of the span, as of a poll (`accounting.rs`), from the candidate on: they split its
        // time so that a worker the OS kept waiting for a CPU is told from one that computed.
        if sw.readings.is_some_and(|r| r.seq != f.seq || r.start != f.start) {
            sw.readings = None;
        }
        let stall_ns = self.shared.stall_ns;
        let interval_ns = u64::try_from(self.shared.config.watchdog_interval.as_nanos()).unwrap_or(u64::MAX);
        let elapsed_ns = self.shared.clock.delta_as_nanos(f.start, self.shared.clock.raw());
        let at_elapsed = Duration::from_nanos(elapsed_ns);
        if let Some(t) = &mut sw.tracked {
            t.last_elapsed_ns = elapsed_ns;
            let verdict = t.verdict.as_ref().map_or(Verdict::CONFIRMED, |v| v.get());
            match verdict {
                Verdict::PENDING => return interval_ns,
                Verdict::CONFIRMED => {
                    if elapsed_ns >= t.next_report_ns {
                        // Past every doubling already passed, in one report: a verdict that came late (the first
                        // stall of a process waits for the symbolizer) otherwise sent one report per tick, each
                        // with a stack, until the doublings caught up.
                        while t.next_report_ns <= elapsed_ns && t.next_report_ns < u64::MAX / 2 {
                            t.next_report_ns *= 2;
                        }
                        // Every report of a busy span takes a stack, past `MAX_CAPTURES` too: a thread can leave
                        // the scheduler with its span still open, since no park hook fires when a
                        // current-thread runtime's `block_on` returns (nor for a thread sent back to the
                        // blocking pool by `block_in_place`), and the stack is the only thing that shows it
                        // (`probing::same_poll`, on the agent thread). Without one, once `MAX_CAPTURES` were
                        // spent, the thread blocked in whatever it did next was reported as the same stall
                        // until it entered its runtime again or exited. One capture per doubling: a handful
                        // over seconds.
                        let look = LookRequest {
                            slot: slot.clone(),
                            seq: f.seq,
                            tid: t.tid,
                            at_elapsed,
                            with_stack: true,
                            captured: t.captured.clone(),
                            confirm: false,
                        };
                        let stall_id = t.stall_id;
                        self.refresh_latest(slot, f.seq, f.start, &mut sw.readings);
                        let time = self.time_so_far(elapsed_ns, sw.readings);
                        let msg = WatchMsg::Updated {
                            stall_id,
                            elapsed_ns,
                            at_unix_nanos: crate::os::unix_nanos(),
                            look: None,
                            time,
                        };
                        self.send(ProbeJob { msg, look: Some(look) });
                    }
                    // Watched every interval while open, so that its end (the park) is reported promptly.
                    return interval_ns;
                }
                _ => {
                    let rejections = match sw.busy_retry {
                        Some(r) if r.seq == f.seq => r.rejections.saturating_add(1),
                        _ => 1,
                    };
                    // Counted from the first look: a poll that began after it can't be a stall before a threshold
                    // later, and one that began before it would have shown in the looks.
                    let at_ns = match verdict {
                        Verdict::NOT_WORKER => u64::MAX,
                        // A stall just ended: whatever runs next gets a whole threshold, as a new poll would.
                        Verdict::ENDED => elapsed_ns.saturating_add(stall_ns),
                        _ => t.flagged_ns.saturating_add(stall_ns << (rejections - 1).min(3)),
                    };
                    let rejections = if verdict == Verdict::ENDED { 0 } else { rejections };
                    sw.busy_retry = Some(BusyRetry { seq: f.seq, rejections, at_ns });
                    sw.tracked = None;
                }
            }
        }
        let retry_at = match sw.busy_retry {
            Some(r) if r.seq == f.seq => r.at_ns,
            _ => stall_ns,
        };
        // Without the probes nothing can tell one long poll from many short ones: report nothing rather than
        // guess (`Capabilities` says so), and look no more often than while idle.
        if !self.shared.config.probes {
            return stall_ns;
        }
        if elapsed_ns < retry_at {
            return (retry_at - elapsed_ns).min(stall_ns);
        }
        self.prepare(slot.tid);
        let stall_id = self.shared.next_stall_id.fetch_add(1, Relaxed);
        // tokio names a worker's thread only with --cfg tokio_unstable (`locate`); without it, the thread alone.
        let worker = match self.locate(slot) {
            (StallKind::WorkerBlocked, w) => w,
            _ => None,
        };
        let captured = Arc::new(AtomicUsize::new(0));
        let verdict = Arc::new(Verdict::default());
        if sw.readings.is_none() {
            sw.readings = self.first_readings(slot, f.seq, f.start, elapsed_ns);
        }
        let flag = Flag {
            stall_id,
            kind: StallKind::WorkerBlocked,
            worker,
            slot: slot.clone(),
            task_id: 0,
            location: NONE,
            elapsed_ns,
            at_unix_nanos: crate::os::unix_nanos(),
            look: None,
            time: self.time_so_far(elapsed_ns, sw.readings),
            agent_task: None,
            confirm: Some(verdict.clone()),
            more_looks: Vec::new(),
            span_ended: false,
            motion: None,
            span_seq: f.seq,
        };
        let look = LookRequest {
            slot: slot.clone(),
            seq: f.seq,
            tid: slot.tid,
            at_elapsed,
            with_stack: true,
            captured: captured.clone(),
            confirm: true,
        };
        let mut next_report_ns = stall_ns.saturating_mul(2);
        while next_report_ns <= elapsed_ns && next_report_ns < u64::MAX / 2 {
            next_report_ns *= 2;
        }
        sw.tracked = Some(Tracked {
            seq: f.seq,
            stall_id,
            next_report_ns,
            last_elapsed_ns: elapsed_ns,
            // The confirmation's looks already sample the span a few times.
            next_sample_ns: u64::MAX,
            captured,
            tid: slot.tid,
            verdict: Some(verdict),
            flagged_ns: elapsed_ns,
        });
        self.send(ProbeJob { msg: WatchMsg::Started(Box::new(flag)), look: Some(look) });
        interval_ns
    }
}
