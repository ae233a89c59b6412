//! The watchdog's way to the prober: sends that never block, and the backlog that keeps a stall's start and
//! end when the prober's queue is full (a lost `Ended` would leave a stall open forever).

use super::*;

/// The most messages the backlog holds while the agent thread is behind; past it they are dropped and
/// counted, so a stuck agent thread can't grow the watchdog without bound.
const BACKLOG: usize = 4096;

impl Watchdog {
    /// A message with no look to take.
    pub(super) fn send_msg(&mut self, msg: WatchMsg) {
        self.send(ProbeJob { msg, look: None });
    }

    /// Hands a message to the prober without blocking. Looks in the middle of a stall (`Updated`, `Sampled`)
    /// may be lost when the prober or the agent thread is behind (counted); a stall's start and end wait in
    /// the backlog instead, in order.
    pub(super) fn send(&mut self, job: ProbeJob) {
        let must_arrive = matches!(job.msg, WatchMsg::Started(_) | WatchMsg::Late(_) | WatchMsg::Ended { .. });
        if must_arrive && !self.backlog.is_empty() {
            self.queue(job);
            return;
        }
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) if must_arrive => self.queue(job),
            Err(TrySendError::Full(_)) => {
                self.shared.dropped_watchdog.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn queue(&mut self, job: ProbeJob) {
        if self.backlog.len() < BACKLOG {
            self.backlog.push_back(job);
        } else {
            self.shared.dropped_watchdog.fetch_add(1, Relaxed);
        }
    }

    /// Sends what the backlog holds, oldest first, until the queue is full again.
    pub(super) fn flush_backlog(&mut self) {
        while let Some(msg) = self.backlog.pop_front() {
            match self.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.backlog.push_front(msg);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }
}
