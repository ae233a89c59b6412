//! The tokio task hooks (with `--cfg tokio_unstable`): the only loopscope code that runs on every poll of a
//! task. They hand the poll's start and end to `poll.rs`, whose budget they share: no lock, no allocation, no
//! channel send, and a syscall only on two rare paths (see there). The spawn hook claims the task's table
//! entry; the terminate hook (or, when it fires inside the task's last poll, that poll's after-hook) retires it,
//! so the entry is free again the moment the task ends (`tables.rs`).

use crate::shared::Shared;
use crate::shared::slots;
use crate::shared::tables::Finish;
use crate::taskid::task_id;
use std::sync::Arc;
use tokio::runtime::{Builder, TaskMeta};

/// A task hook callback, as tokio's builder takes it.
pub type TaskHook = Arc<dyn Fn(&TaskMeta<'_>) + Send + Sync + 'static>;

/// App callbacks chained behind loopscope's own (tokio keeps one callback per hook).
#[derive(Default, Clone)]
pub(crate) struct Chain {
    pub(crate) spawn: Option<TaskHook>,
    pub(crate) before_poll: Option<TaskHook>,
    pub(crate) after_poll: Option<TaskHook>,
    pub(crate) terminate: Option<TaskHook>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("spawn", &self.spawn.is_some())
            .field("before_poll", &self.before_poll.is_some())
            .field("after_poll", &self.after_poll.is_some())
            .field("terminate", &self.terminate.is_some())
            .finish()
    }
}

/// Sets all four task hooks on `builder`, each calling the app's chained callback too.
///
/// `start` starts the agent's threads; the first poll calls it (see `lifecycle.rs`), handed down here so the
/// hooks never import the stages they feed.
pub(crate) fn install(builder: &mut Builder, shared: &Arc<Shared>, chain: Chain, start: fn(&Arc<Shared>)) {
    let s = shared.clone();
    let app = chain.spawn;
    builder.on_task_spawn(move |meta| {
        s.on_spawn(meta);
        if let Some(f) = &app {
            f(meta);
        }
    });
    let s = shared.clone();
    let app = chain.before_poll;
    builder.on_before_task_poll(move |meta| {
        // The app's hook first, so its cost is not counted as the task's poll time.
        if let Some(f) = &app {
            f(meta);
        }
        s.before_poll(meta, start);
    });
    let s = shared.clone();
    let app = chain.after_poll;
    builder.on_after_task_poll(move |meta| {
        s.after_poll(meta);
        if let Some(f) = &app {
            f(meta);
        }
    });
    let s = shared.clone();
    let app = chain.terminate;
    builder.on_task_terminate(move |meta| {
        s.on_terminate(meta);
        if let Some(f) = &app {
            f(meta);
        }
    });
    if shared.config.schedule_latency {
        builder.track_task_schedule_latency();
    }
}

impl Shared {
    #[inline]
    fn on_spawn(&self, meta: &TaskMeta<'_>) {
        if crate::shared::AGENT_THREAD.with(|f| f.get()) {
            return;
        }
        let location = self.locations.intern(meta.spawned_at());
        let _ = self.tasks.insert(task_id(meta.id()), location);
    }

    #[inline]
    fn before_poll(self: &Arc<Self>, meta: &TaskMeta<'_>, start: fn(&Arc<Shared>)) {
        let id = task_id(meta.id());
        #[cfg(feature = "schedule-latency")]
        if let Some(latency) = meta.schedule_latency()
            && let Some(e) = self.tasks.sched(self.tasks.find(id))
        {
            e.record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        }
        let location_addr = meta.spawned_at() as *const std::panic::Location<'static> as usize;
        self.begin_poll(id, location_addr, start);
    }

    #[inline]
    fn after_poll(&self, _meta: &TaskMeta<'_>) {
        self.end_poll();
    }

    fn on_terminate(&self, meta: &TaskMeta<'_>) {
        let id = task_id(meta.id());
        let idx = self.tasks.find(id);
        let e = self.tasks.get(idx);
        // The thread's id picks its shard of the termination count: tokio's workers have consecutive ids.
        let (in_poll, shard) =
            slots::existing_slot(self.id, |s| (s.is_polling(id), s.tid as usize)).unwrap_or((false, 0));
        // Also fires for tasks the spawn hook never saw (`spawn_blocking`); see `count_termination`.
        self.tasks.count_termination(e.is_some(), shard);
        let Some(e) = e else { return };
        match self.tasks.finish(e, in_poll) {
            // The entry goes back to the table now, so a spawn storm never waits for the agent thread.
            Finish::Retire => self.tasks.retire(idx, &self.locations, &self.finished_ring),
            // A client has it: the agent thread tells them and frees it. If the queue is full the periodic
            // sweep finds the entry instead.
            Finish::Queue => {
                let _ = self.finished.push(idx);
            }
            Finish::AfterPoll | Finish::Nothing => {}
        }
    }
}
