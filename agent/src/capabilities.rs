//! What an installed agent can observe in this build and configuration ([`Capabilities`]), and why not.

use crate::config::Config;

/// What the installed agent can do in this build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Every task poll is timed and attributed to its task and spawn location.
    pub poll_timing: bool,
    /// The watchdog flags polls that block a worker while they run.
    pub stall_detection: bool,
    /// tokio measures wake→poll latency per task (`LOOPSCOPE_SCHEDULE_LATENCY`).
    pub schedule_latency: bool,
    /// Why something is missing, in words for the user.
    pub missing: Vec<String>,
}

impl Capabilities {
    /// What an agent with `config` can do in this build.
    pub(crate) fn of(config: &Config) -> Capabilities {
        let on = cfg!(tokio_unstable) && config.enabled;
        let mut missing = Vec::new();
        if !config.enabled {
            missing.push("the agent is disabled (LOOPSCOPE_ENABLED=0 or .enabled(false))".to_string());
        } else if !cfg!(tokio_unstable) {
            missing.push(
                "poll timing and stall detection need tokio task hooks: build with RUSTFLAGS=\"--cfg tokio_unstable\""
                    .to_string(),
            );
        }
        let sched = on && cfg!(feature = "schedule-latency") && config.schedule_latency;
        if on && !sched {
            missing.push(
                "per-task schedule latency is off (LOOPSCOPE_SCHEDULE_LATENCY=1 or .track_schedule_latency(true))"
                    .to_string(),
            );
        }
        Capabilities { poll_timing: on, stall_detection: on, schedule_latency: sched, missing }
    }
}
