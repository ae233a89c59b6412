//! Stable mode's confirmation that one poll holds a worker busy: the stacks of a busy span's looks are read
//! for the app's frames above tokio's task poll, and a span counts as a stall only when they show one poll
//! (the same frames, a blocking call or a lock wait). Split out of `probing.rs`, which takes the looks.

use super::{Look, symbolize};
use loopscope_wire::{Frame, FrameOrigin};
use std::time::Duration;

/// Stable mode: stacks wanted before the agent thread decides whether one poll holds a worker busy past the
/// threshold. Three: a storm of short polls by one task shows that task's frames in a sample now and then, but
/// rarely in three samples milliseconds apart.
pub(crate) const CONFIRM_STACKS: usize = 3;
/// The most looks taken for them (a runnable thread on a crowded CPU may miss a capture's deadline).
pub(crate) const CONFIRM_MAX_LOOKS: usize = 6;
/// A confirming capture waits this long for a runnable thread to take the signal: longer than a mid-stall
/// look's ([`RUNNABLE_CAPTURE_TIMEOUT`](super::RUNNABLE_CAPTURE_TIMEOUT)), since without the stacks there is no report at all.
pub(crate) const CONFIRM_CAPTURE_TIMEOUT: Duration = Duration::from_millis(5);
/// The time between the confirming looks: long enough that a storm of sub-millisecond polls has moved on,
/// short enough that a stall of twice the threshold is confirmed while it still runs.
pub(crate) const CONFIRM_GAP: Duration = Duration::from_micros(1500);

/// Stable mode: the shortest time with no worker at a scheduling point that counts as evidence of one poll
/// ([`WorkerMotion::still`]): a window of three stacks, [`CONFIRM_GAP`] apart, qualifies, and a shorter one
/// (looks that returned at once) does not.
pub(crate) const MIN_STILL_WINDOW: Duration = Duration::from_millis(2);

/// Stable mode: how long a thread must have run on a CPU while its confirmation's looks were taken before tokio's
/// metrics say anything about it ([`WorkerMotion`]): a storm of polls shorter than 2 ms / 61 (33 µs) reaches a
/// scheduling point in that much running.
pub(crate) const MIN_RUN: Duration = Duration::from_millis(2);

/// Stable mode: what tokio's stable worker metrics showed while the prober took a confirmation's looks.
///
/// tokio publishes a worker's busy time and park count only when it parks and at its maintenance, which runs
/// every 61 scheduler ticks (`event_interval`). So a worker whose figures did not move ran fewer than 61 ticks
/// (or stayed parked) meanwhile, and one whose figures moved reached a scheduling point: whatever poll it was
/// in when the window opened has returned. Which worker the thread runs is learned at its parks and unparks
/// (`busy.rs`); until then every worker it may run is a candidate, and only all of them still says "one poll".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerMotion {
    /// From the reading before the looks after the first to the last reading that the span was still open
    /// after (zero when there was none).
    pub(crate) window: Duration,
    /// The workers the thread may be running.
    pub(crate) candidates: usize,
    /// How many of them reached a scheduling point in the window.
    pub(crate) moved: usize,
    /// How long the thread ran on a CPU in the window, when its CPU clock could be read.
    pub(crate) thread_ran: Option<Duration>,
}

impl WorkerMotion {
    /// The thread ran long enough in the window for its worker's figures to mean something (see [`MIN_RUN`]).
    /// Unknown CPU time counts as enough: the metrics are then read as before the clock was added.
    fn ran_enough(&self) -> bool {
        self.thread_ran.is_none_or(|r| r >= MIN_RUN)
    }

    /// The thread's worker reached no scheduling point while the thread ran [`MIN_RUN`] or more: one poll (or
    /// fewer than 61 ticks) held it throughout.
    fn still(&self) -> bool {
        self.candidates > 0 && self.moved == 0 && self.window >= MIN_STILL_WINDOW && self.ran_enough()
    }

    /// What still figures say, for a verdict's reason.
    fn describe(&self) -> String {
        // One candidate: the thread's worker is known.
        let whose = if self.candidates == 1 {
            "its worker".to_string()
        } else {
            format!("none of the {} workers it may run", self.candidates)
        };
        let ran =
            self.thread_ran.map_or_else(String::new, |r| format!(", running {:.1} ms of it", r.as_secs_f64() * 1e3));
        format!("{whose} reached no scheduling point in {:.1} ms{ran}", self.window.as_secs_f64() * 1e3)
    }
}

/// Names of the frames that poll a task (tokio's harness) or a current-thread runtime's `block_on` body: the
/// app's frames above the innermost of them are the poll's.
const POLL_FRAMES: &[&str] =
    &["tokio::runtime::task::", "tokio::runtime::scheduler::current_thread::CoreGuard::block_on"];
/// A frame of a tokio scheduler: a worker's task polls run under one; a `spawn_blocking` closure on a
/// blocking-pool thread (also under `tokio::runtime::task::`) does not.
const SCHEDULER_FRAMES: &str = "tokio::runtime::scheduler::";

/// What [`confirm_busy`] decided about a busy worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BusyVerdict {
    /// One poll holds the worker: why; whether the poll is inside `block_in_place` (tokio moved the worker's
    /// queue to another thread, so this is reported as such); and the app's frames under its poll frame, when
    /// stacks showed them, by which later looks tell whether it is still the same poll ([`same_poll`]).
    Stall { reason: String, block_in_place: bool, frames: Option<UserFrames> },
    /// Not shown to be one poll (many short polls, or the scheduler's own work): why not.
    NotOnePoll(String),
    /// No stack shows a scheduler: a `spawn_blocking` thread (busy from its start, it never parks), or a thread
    /// back in the blocking pool after `block_in_place`, where no park hook ends its busy span.
    NotWorker,
}

/// One stack seen from the task poll it is in.
#[derive(Debug, PartialEq, Eq)]
struct PollView {
    in_scheduler: bool,
    block_in_place: bool,
    /// The innermost frame of the poll that isn't the standard library's is the app's: a poll stuck in a
    /// sleep, a lock or a loop is in the app's code or in std under it, while a task that keeps being polled
    /// is mostly caught inside tokio (sending, receiving, waking).
    own_code: bool,
    /// The app's frames above the innermost poll frame (innermost first); `None` without a poll frame.
    user: Option<UserFrames>,
}

/// The app's frames of a poll, innermost first: each function's name and, for the outermost (the task's body,
/// right under the poll frame), the address it was at: the call site it is in (its return address). A task
/// polled over and over (a ping-pong over channels) is sampled at different awaits, so that call site differs
/// where a long poll's stays put. `0` for the other frames (a long poll calls one function, then another) and
/// for a body in its own code (a spin loop's address moves): they match any address.
pub(crate) type UserFrames = Vec<(String, u64)>;

/// Whether two polls' frames are the same (see [`UserFrames`]), compared from the outermost (the task's body,
/// with its call site) inward as far as the shorter goes: a long poll calls into helpers of the app's own and
/// comes back (`spin` alone, then `spin::{closure}` under it), and samples land at either depth; the body's call
/// site still tells a ping-pong's awaits apart.
fn same_frames(a: &UserFrames, b: &UserFrames) -> bool {
    !a.is_empty()
        && !b.is_empty()
        && a.iter().rev().zip(b.iter().rev()).all(|((na, ia), (nb, ib))| na == nb && (ia == ib || *ia == 0 || *ib == 0))
}

impl PollView {
    /// Inside a poll that a scheduler runs, with some of the app's frames in it.
    fn in_poll(&self) -> bool {
        self.in_scheduler && self.own_code && self.user.as_ref().is_some_and(|u| !u.is_empty())
    }
}

fn poll_view(frames: &[Frame]) -> PollView {
    let name = |f: &Frame| f.function.clone().unwrap_or_default();
    let poll = frames.iter().position(|f| {
        let n = name(f);
        POLL_FRAMES.iter().any(|m| n.contains(m))
    });
    let own_code = poll.is_some_and(|i| {
        frames
            .iter()
            .take(i)
            .find(|f| !matches!(f.origin, FrameOrigin::Std | FrameOrigin::Probe | FrameOrigin::Unknown))
            .is_some_and(|f| f.origin == FrameOrigin::User)
    });
    PollView {
        own_code,
        in_scheduler: frames.iter().any(|f| name(f).contains(SCHEDULER_FRAMES)),
        block_in_place: frames.iter().any(|f| name(f).contains("block_in_place")),
        user: poll.map(|i| {
            let innermost = frames.first().map_or(0, |f| f.ip);
            let mut user: UserFrames = frames
                .iter()
                .take(i)
                .filter(|f| f.origin == FrameOrigin::User)
                .map(|f| (name(f), if f.ip == innermost { 0 } else { f.ip }))
                .collect();
            // Only the outermost frame's call site (the await the task's body is at) tells polls apart; frames
            // inside a long poll call one function, then another.
            let outer = user.len().saturating_sub(1);
            for (_, ip) in user.iter_mut().take(outer) {
                *ip = 0;
            }
            user
        }),
    }
}

/// The look's stack seen from its poll, symbolized (waiting for the symbolizer: a verdict needs names).
fn view_of(look: &Look) -> Option<PollView> {
    let raw = look.snapshot.stack.as_ref()?.as_ref().ok()?;
    symbolize(raw, true).map(|frames| poll_view(&frames))
}

/// Stable mode: whether the looks at a worker busy past the threshold show **one poll** holding it. Any of:
///
/// * the thread is asleep in the same system call at two looks in a row or more (a blocking syscall, or a
///   lock wait: a futex under a lock's frames), inside a poll — with no stacks, any call but the park's
///   `futex`/`epoll_wait`;
/// * [`CONFIRM_STACKS`] stack samples in a row (two when they are all and the worker parked right after: the
///   poll is over) have the same frames of the app's own under the task's poll frame: one task that yields in
///   a tight loop shows its frames in a sample now and then, rarely in three in a row. The run may begin in
///   the span's previous candidate (`carry`, returned on rejection for the next one).
///
/// * failing those, every stack sample is inside a poll of the same task body, and the thread's worker reached
///   no scheduling point while it ran [`MIN_RUN`] or more ([`WorkerMotion::still`], read by the prober from
///   tokio's stable metrics): a task that never yields while tokio's own code runs inside its poll (a channel
///   that is always ready, under `tokio::task::unconstrained`). Its samples land in tokio's code, so the rule
///   above, which wants the app's own code innermost, can't tell it from a task that is polled over and over;
///   the metrics can, since a worker publishes them every 61 ticks, and a task polled over and over runs ticks.
///
/// When the metrics were read, the stack rule counts only if they agree ([`WorkerMotion::still`]): not when the
/// thread's worker (or, while it isn't known, any worker it may be) reached a scheduling point, nor when the
/// thread ran less than [`MIN_RUN`] in the window (the OS kept it waiting, so three samples in one place say
/// little). The span is looked at again later. Many tasks with one body, each poll a few microseconds of its
/// own work, otherwise show "the same frames" in three samples often enough to be confirmed. Not for a thread
/// inside `block_in_place`, whose worker runs on another thread.
///
/// A run of looks counts wherever it is: the first may come before the poll began (the busy span began with
/// other work), the last after it ended (the worker hasn't parked yet).
pub(crate) fn confirm_busy(
    looks: &[Look],
    span_ended: bool,
    carry: Option<&(UserFrames, usize)>,
    motion: Option<WorkerMotion>,
) -> (BusyVerdict, Option<(UserFrames, usize)>) {
    let views: Vec<Option<PollView>> = looks.iter().map(view_of).collect();
    let stacks: Vec<&PollView> = views.iter().flatten().collect();
    if !stacks.is_empty() && stacks.iter().all(|v| !v.in_scheduler) {
        return (BusyVerdict::NotWorker, None);
    }
    let block_in_place = stacks.iter().any(|v| v.block_in_place);
    let first_frames = || stacks.iter().find(|v| v.in_poll()).and_then(|v| v.user.clone());
    use loopscope_probes::thread::{RunState, ThreadSample};
    let asleep_in = |s: &ThreadSample| {
        matches!(s.state, RunState::Sleeping | RunState::DiskSleep)
            .then(|| s.syscall.as_ref().map_or_else(|| "no system call".to_string(), |c| c.name.to_string()))
    };
    // Runs of looks asleep in one call, each inside a poll (or without a stack): the first may come before the
    // poll began (the span began with other work), later ones after it ended.
    let mut runs: Vec<(String, usize, bool)> = Vec::new();
    for (l, v) in looks.iter().zip(&views) {
        // The app's frames in one stack of a run are enough: an outside unwind of a thread asleep in a call can
        // come out shorter than a signal's.
        let call = l
            .snapshot
            .sample
            .as_ref()
            .ok()
            .and_then(asleep_in)
            .filter(|_| v.as_ref().is_none_or(|v| v.in_scheduler && v.user.is_some()));
        match (call, runs.last_mut()) {
            (Some(c), Some((last, n, seen))) if *last == c && *n > 0 => {
                *n += 1;
                *seen |= v.as_ref().is_some_and(PollView::in_poll);
            }
            (Some(c), _) => runs.push((c, 1, v.as_ref().is_some_and(PollView::in_poll))),
            (None, _) => runs.push((String::new(), 0, false)),
        }
    }
    for (call, n, seen_in_poll) in runs {
        // Without a stack, the park's own waits can't be told from the app's.
        let park = !seen_in_poll && (loopscope_probes::thread::is_futex_syscall(&call) || call.starts_with("epoll_"));
        if n >= 2 && !park && (seen_in_poll || stacks.is_empty()) {
            let verdict = BusyVerdict::Stall {
                reason: format!("asleep in {call} at {n} looks in a row, inside one poll"),
                block_in_place,
                frames: first_frames(),
            };
            return (verdict, None);
        }
    }
    // Runs of stacks (failed captures don't count either way) inside one poll with the same app frames, the
    // first continuing the run the span's previous candidate ended on (`carry`): a runnable thread on a crowded
    // CPU gives few stacks per candidate, and a spin goes on agreeing with itself from one to the next.
    let (mut frames, mut run) = carry.map_or((None, 0), |(f, n)| (Some(f.clone()), *n));
    let mut best = (None, 0);
    for v in &stacks {
        if !v.in_poll() {
            (frames, run) = (None, 0);
        } else if let (Some(f), Some(u)) = (&frames, &v.user)
            && same_frames(f, u)
        {
            run += 1;
        } else {
            (frames, run) = (v.user.clone(), 1);
        }
        if run > best.1 {
            best = (frames.clone(), run);
        }
    }
    let carried = frames.map(|f| (f, run));
    let wanted = if span_ended && best.1 == stacks.len() + carry.map_or(0, |c| c.1) { 2 } else { CONFIRM_STACKS };
    let overruled = !block_in_place && motion.is_some_and(|m| !m.still());
    if best.1 >= wanted && !overruled {
        let verdict = BusyVerdict::Stall {
            reason: format!("the same frames under the task's poll in {} stack samples in a row", best.1),
            block_in_place,
            frames: best.0,
        };
        return (verdict, None);
    }
    if let Some(m) = motion.filter(|m| m.still() && !span_ended)
        && let Some(body) = one_task_body(&stacks)
    {
        let verdict = BusyVerdict::Stall {
            reason: format!("{} stack samples inside polls of {body}, and {}", stacks.len(), m.describe()),
            block_in_place,
            // The body alone, at any call site: the poll moves between its awaits without returning.
            frames: Some(vec![(body, 0)]),
        };
        return (verdict, None);
    }
    let why = format!(
        "{} looks, {} stacks: not one poll (short polls, or the scheduler's own work){}",
        looks.len(),
        stacks.len(),
        match motion.filter(|_| overruled) {
            Some(m) if !m.ran_enough() => format!("; it ran only {:?} meanwhile", m.thread_ran.unwrap_or_default()),
            Some(m) => format!("; {} of the {} workers it may run reached a scheduling point", m.moved, m.candidates),
            None => String::new(),
        }
    );
    (BusyVerdict::NotOnePoll(why), carried)
}

/// The task body (the outermost of the app's frames under the poll frame) that every one of at least
/// [`CONFIRM_STACKS`] stacks shows, wherever inside it they were taken; `None` if any stack is elsewhere.
fn one_task_body(stacks: &[&PollView]) -> Option<String> {
    let body = |v: &PollView| {
        let outer = v.user.as_ref().filter(|_| v.in_scheduler)?.last()?;
        Some(outer.0.clone())
    };
    let first = body(stacks.first()?)?;
    (stacks.len() >= CONFIRM_STACKS && stacks.iter().all(|v| body(v).as_ref() == Some(&first))).then_some(first)
}

/// Stable mode: whether a later look at a confirmed stall still shows the same poll (the app's `frames` under
/// a poll frame, when the confirmation saw them). `None` when the look has no stack to tell by, or when it shows
/// a scheduler but the confirmation had no frames to compare with.
///
/// A stack with no scheduler on it is never the same poll, frames or not: the thread left the runtime without
/// a park hook ending its busy span (a current-thread runtime's `block_on` returned, or `block_in_place` sent it
/// back to the blocking pool). A stall confirmed by its system call alone (no stack then) has no frames:
/// leaving the scheduler is the only end a later look can show for it.
pub(crate) fn same_poll(look: &Look, frames: Option<&UserFrames>) -> Option<bool> {
    still_in_poll(&view_of(look)?, frames)
}

/// [`same_poll`] on a stack already seen from its poll.
fn still_in_poll(v: &PollView, frames: Option<&UserFrames>) -> Option<bool> {
    if !v.in_scheduler {
        return Some(false);
    }
    let frames = frames?;
    Some(v.user.as_ref().is_some_and(|u| same_frames(u, frames)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, origin: FrameOrigin) -> Frame {
        Frame { ip: 0, function: Some(name.into()), file: None, line: None, origin, inlined: false, object: None }
    }

    /// A worker's stack, innermost first: the app's frames, tokio's task poll, the scheduler, and (below it)
    /// the blocking-pool task that runs the worker itself.
    fn worker_stack(app: &[&str]) -> Vec<Frame> {
        let mut frames = vec![frame("std::thread::sleep", FrameOrigin::Std)];
        frames.extend(app.iter().map(|f| frame(f, FrameOrigin::User)));
        frames.extend([
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::scheduler::multi_thread::worker::Context::run_task", FrameOrigin::Runtime),
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::blocking::pool::Inner::run", FrameOrigin::Runtime),
        ]);
        frames
    }

    #[test]
    fn a_task_poll_shows_the_apps_frames_above_the_innermost_poll_frame() {
        let v = poll_view(&worker_stack(&["app::handler", "app::serve::{async block}"]));
        assert!(v.in_scheduler && v.in_poll() && !v.block_in_place);
        let names: Vec<String> = v.user.unwrap_or_default().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["app::handler", "app::serve::{async block}"]);
    }

    #[test]
    fn the_schedulers_own_work_is_no_poll_of_the_app() {
        // Between polls: the innermost poll frame is the one that runs the worker, with no app frame above it.
        let v = poll_view(&worker_stack(&[]));
        assert!(v.in_scheduler && !v.in_poll());
    }

    #[test]
    fn a_spawn_blocking_closure_is_no_worker() {
        let frames = vec![
            frame("app::load_file", FrameOrigin::User),
            frame("tokio::runtime::blocking::task::BlockingTask::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::blocking::pool::Inner::run", FrameOrigin::Runtime),
        ];
        let v = poll_view(&frames);
        assert!(!v.in_scheduler, "{v:?}");
    }

    #[test]
    fn a_task_polled_again_and_again_differs_by_its_call_sites() {
        // A long poll: the body stays at one call site; the frames inside it match by name.
        let spin_a = vec![("app::spin".to_string(), 0), ("app::handler".to_string(), 0x1010)];
        let spin_b = vec![("app::spin".to_string(), 0), ("app::handler".to_string(), 0x1010)];
        assert!(same_frames(&spin_a, &spin_b));
        // Sampled one level deeper, in a helper the spin calls: still the same poll.
        let deeper = vec![("app::spin::{closure}".to_string(), 0), ("app::spin".to_string(), 0), spin_a[1].clone()];
        assert!(same_frames(&spin_a, &deeper) && same_frames(&deeper, &spin_b));
        // ... but not a different body, nor one at another call site.
        let other = vec![("app::spin".to_string(), 0), ("app::other".to_string(), 0x1010)];
        assert!(!same_frames(&spin_a, &other));
        assert!(!same_frames(&spin_a, &vec![("app::spin".to_string(), 0), ("app::handler".to_string(), 0x1090)]));
        let frames = worker_stack(&["app::spin", "app::handler"]);
        let v = poll_view(&frames);
        assert!(v.user.is_some_and(|u| u.iter().take(1).all(|(_, ip)| *ip == 0)));
        // A ping-pong: sampled at its send, then at its receive.
        let at_send = vec![("app::ping::{async block}".to_string(), 0x3010)];
        let at_recv = vec![("app::ping::{async block}".to_string(), 0x3080)];
        assert!(!same_frames(&at_send, &at_recv));
    }

    #[test]
    fn the_workers_figures_agree_only_when_the_thread_ran_and_its_worker_stood_still() {
        let ms = Duration::from_millis;
        let still = WorkerMotion { window: ms(4), candidates: 1, moved: 0, thread_ran: Some(ms(3)) };
        assert!(still.still());
        // Its worker reached a scheduling point, or (unknown worker) one it may run did.
        assert!(!WorkerMotion { moved: 1, ..still }.still());
        assert!(!WorkerMotion { candidates: 2, moved: 1, ..still }.still());
        // The OS kept the thread waiting: too few polls for tokio to publish anything.
        assert!(!WorkerMotion { thread_ran: Some(ms(1)), ..still }.still());
        // Too short a window, or no worker at all.
        assert!(!WorkerMotion { window: ms(1), ..still }.still());
        assert!(!WorkerMotion { candidates: 0, ..still }.still());
        // Without the thread's CPU clock the figures are read alone.
        assert!(WorkerMotion { thread_ran: None, ..still }.still());
        assert!(still.describe().contains("its worker reached no scheduling point"), "{}", still.describe());
    }

    #[test]
    fn a_poll_inside_tokio_code_is_one_task_body_at_any_call_site() {
        let mut in_recv = worker_stack(&["app::drain::{async block}"]);
        in_recv.insert(1, frame("tokio::sync::mpsc::chan::Rx::recv", FrameOrigin::Runtime));
        let in_step = worker_stack(&["app::step", "app::drain::{async block}"]);
        let (a, b) = (poll_view(&in_recv), poll_view(&in_step));
        assert!(!a.in_poll(), "the stack rule wants the app's own code innermost");
        assert_eq!(one_task_body(&[&a, &b, &a]), Some("app::drain::{async block}".to_string()));
        // Fewer than three stacks, another body, or the scheduler's own work: not one body.
        assert_eq!(one_task_body(&[&a, &b]), None);
        let other = poll_view(&worker_stack(&["app::other::{async block}"]));
        assert_eq!(one_task_body(&[&a, &b, &other]), None);
        let between = poll_view(&worker_stack(&[]));
        assert_eq!(one_task_body(&[&a, &between, &b]), None);
    }

    #[test]
    fn a_task_caught_inside_tokio_is_not_held_by_its_own_code() {
        let mut frames = worker_stack(&["app::ping::{async block}"]);
        frames.insert(1, frame("tokio::sync::mpsc::bounded::Sender::send", FrameOrigin::Runtime));
        let v = poll_view(&frames);
        assert!(v.in_scheduler && !v.own_code && !v.in_poll(), "{v:?}");
    }

    #[test]
    fn block_in_place_is_seen_on_the_stack() {
        let v = poll_view(&worker_stack(&[
            "app::legacy",
            "tokio::runtime::scheduler::multi_thread::worker::block_in_place",
            "app::handler",
        ]));
        assert!(v.block_in_place && v.in_poll());
    }

    /// A current-thread runtime's thread inside `block_on`, polling a task, and the same thread after
    /// `block_on` returned, asleep in the caller's own code (no park hook ended its busy span).
    #[test]
    fn a_thread_out_of_its_runtime_is_no_longer_in_the_poll() {
        let in_runtime = vec![
            frame("std::thread::sleep", FrameOrigin::Std),
            frame("app::handler", FrameOrigin::User),
            frame("app::serve::{async block}", FrameOrigin::User),
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::scheduler::current_thread::CoreGuard::block_on", FrameOrigin::Runtime),
            frame("tokio::runtime::runtime::Runtime::block_on", FrameOrigin::Runtime),
            frame("app::main", FrameOrigin::User),
        ];
        let left = vec![
            frame("std::thread::sleep", FrameOrigin::Std),
            frame("app::after_the_runtime", FrameOrigin::User),
            frame("app::main", FrameOrigin::User),
        ];
        let inside = poll_view(&in_runtime);
        let frames = inside.user.clone().expect("a poll frame");
        assert_eq!(still_in_poll(&inside, Some(&frames)), Some(true));
        // Confirmed from its system call alone, the stall has no frames: a stack inside the runtime can't tell.
        assert_eq!(still_in_poll(&inside, None), None);
        // Out of the runtime it is over, whether the confirmation saw frames or not.
        let outside = poll_view(&left);
        assert_eq!(still_in_poll(&outside, Some(&frames)), Some(false));
        assert_eq!(still_in_poll(&outside, None), Some(false));
    }
}
