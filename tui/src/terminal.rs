//! The terminal the dashboard reads its keys from, watched for hang-up.
//!
//! Why not only crossterm: when the terminal goes away (the window closed, the SSH session dropped, the pty
//! master closed), every `read` of it returns 0 or fails at once, and crossterm's event reader retries such a
//! read in a loop that never returns — the process spins at full CPU and never gets back to the code that
//! would notice a signal. So the dashboard asks the kernel first, with `poll(2)` on the same terminal, and
//! hands the terminal to crossterm only when it has input and has not hung up.

use rustix::event::{PollFd, PollFlags, Timespec};
use std::io::IsTerminal as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// What [`TerminalInput::wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputReady {
    /// Keys (or mouse events) are waiting: crossterm may read them without blocking.
    Input,
    /// Nothing arrived within the timeout.
    Idle,
    /// The terminal hung up or is no longer readable: nobody can see the dashboard any more.
    Gone,
}

/// The terminal crossterm reads: standard input when it is a terminal, else `/dev/tty` (crossterm's rule).
#[derive(Debug)]
pub struct TerminalInput {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Stdin(std::io::Stdin),
    Tty(std::fs::File),
}

impl TerminalInput {
    /// Opens the terminal the keys come from.
    pub fn open() -> std::io::Result<TerminalInput> {
        let stdin = std::io::stdin();
        let source = if stdin.is_terminal() {
            Source::Stdin(stdin)
        } else {
            Source::Tty(std::fs::File::options().read(true).open("/dev/tty")?)
        };
        Ok(TerminalInput { source })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            Source::Stdin(s) => s.as_fd(),
            Source::Tty(f) => f.as_fd(),
        }
    }

    /// Waits at most `timeout` for input; says whether there is some, none, or no terminal any more.
    pub fn wait(&self, timeout: Duration) -> InputReady {
        self.poll(PollFlags::IN, timeout)
    }

    /// Waits at most `timeout` for the terminal to hang up, ignoring input: for when input is waiting that
    /// crossterm will not read until more arrives (see `app`), so that waiting for input would return at once.
    pub fn wait_for_hang_up(&self, timeout: Duration) -> InputReady {
        // poll(2) reports a hang-up (and errors) even when no event was asked for.
        self.poll(PollFlags::empty(), timeout)
    }

    fn poll(&self, events: PollFlags, timeout: Duration) -> InputReady {
        let fd = self.fd();
        let mut fds = [PollFd::new(&fd, events)];
        let ts = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => InputReady::Idle,
            Ok(_) => classify(fds[0].revents()),
            // poll itself failing on a descriptor we hold means the terminal cannot be used.
            Err(_) => InputReady::Gone,
        }
    }
}

/// What `poll`'s answer means. A terminal that hung up reports `POLLHUP` (and often `POLLIN` too, for the
/// end-of-file that every read now returns): the hang-up wins.
fn classify(revents: PollFlags) -> InputReady {
    if revents.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
        InputReady::Gone
    } else if revents.contains(PollFlags::IN) {
        InputReady::Input
    } else {
        InputReady::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hang_up_wins_over_readable() {
        assert_eq!(classify(PollFlags::IN | PollFlags::HUP), InputReady::Gone);
        assert_eq!(classify(PollFlags::ERR), InputReady::Gone);
        assert_eq!(classify(PollFlags::IN), InputReady::Input);
        assert_eq!(classify(PollFlags::empty()), InputReady::Idle);
    }
}
