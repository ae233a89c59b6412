//! What an installed agent can observe in this build and configuration ([`Capabilities`]), and why not.

use crate::config::{Config, Mode};

/// What the installed agent can do in this build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// How stalls are found: the mode asked for, or [`Mode::Stable`] where the build has no task hooks.
    pub mode: Mode,
    /// Every task poll is timed and attributed to its task and spawn location.
    pub poll_timing: bool,
    /// The watchdog flags polls that block a worker while they run (in [`Mode::Stable`]: workers busy past
    /// the threshold that the probes confirm are held by one poll, with no task id or spawn location).
    pub stall_detection: bool,
    /// tokio measures wake→poll latency per task (`LOOPSCOPE_SCHEDULE_LATENCY`).
    pub schedule_latency: bool,
    /// Why something is missing, in words for the user.
    pub missing: Vec<String>,
}

impl Capabilities {
    /// What an agent with `config` can do in this build.
    pub(crate) fn of(config: &Config) -> Capabilities {
        let mode = config.mode.effective();
        let hooks = mode == Mode::TaskHooks && config.enabled;
        let mut missing = Vec::new();
        if !config.enabled {
            missing.push("the agent is disabled (LOOPSCOPE_ENABLED=0 or .enabled(false))".to_string());
        } else if mode == Mode::Stable {
            let how = if cfg!(tokio_unstable) {
                "switch to Mode::TaskHooks (LOOPSCOPE_MODE=hooks)"
            } else {
                "build with RUSTFLAGS=\"--cfg tokio_unstable\""
            };
            missing.push(format!(
                "stable mode: stalls are found from the workers' busy spans and stack samples, so a stall's task id \
                 and spawn location are unknown and tasks' polls are not timed (only futures run through \
                 Agent::spawn or Agent::instrument are); tokio's task hooks give them: {how}"
            ));
            if !config.probes {
                missing.push(
                    "stable mode confirms stalls with the OS probes, which are off (LOOPSCOPE_PROBES=0): only                      futures run through Agent::spawn or Agent::instrument are watched"
                        .to_string(),
                );
            }
        }
        let sched = hooks && cfg!(feature = "schedule-latency") && config.schedule_latency;
        if hooks && !sched {
            missing.push(
                "per-task schedule latency is off (LOOPSCOPE_SCHEDULE_LATENCY=1 or .track_schedule_latency(true))"
                    .to_string(),
            );
        }
        Capabilities {
            mode,
            poll_timing: hooks,
            // Stable mode confirms a busy worker's stall with the probes; without them it can't tell one long
            // poll from many short ones, and reports nothing rather than guess.
            stall_detection: config.enabled && (hooks || config.probes),
            schedule_latency: sched,
            missing,
        }
    }
}
