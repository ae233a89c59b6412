//! `loopscope check`: run a program with the agent's CI reporting switched on, and fail when a poll blocked.
//!
//! The flow: create a fresh directory, run `CMD` with `LOOPSCOPE_CHECK_DIR` pointing at it (plus
//! `LOOPSCOPE_STALL_THRESHOLD` = `--max-poll`, `LOOPSCOPE_ADDR=off` and `LOOPSCOPE_METRICS_ADDR=off`), wait for it, read every agent's
//! records (every runtime of every process under `CMD`: `cargo test` runs many test binaries with many
//! runtimes), group the stalls by culprit, print the summary, write the `--json`/`--junit` reports and choose
//! the exit code. The records and the reader are in `loopscope_wire::check`.

mod report;
mod summary;

use loopscope_wire::check::{AllowList, CHECK_DIR_ENV, read_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use summary::{ChildEnd, Outcome};

/// The smallest `--max-poll` the agent's watchdog supports (the agent's `MIN_STALL_THRESHOLD`).
const MIN_MAX_POLL: Duration = Duration::from_micros(100);

/// Exit code for loopscope's own errors: bad arguments, nothing checked, records that can't be read.
const EXIT_ERROR: u8 = 2;

/// Arguments of `loopscope check`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
The program needs the loopscope agent installed in its runtime(s), e.g.
`loopscope::Agent::builder().install(&mut builder)?` or `#[loopscope::main]`; check switches on the agent's CI
reporting through environment variables, so no other change is needed. Every runtime of every process under
CMD reports, so `loopscope check -- cargo test` checks a whole test suite.

A poll counts when its own time passes --max-poll: its wall time less the time its thread waited for a CPU
(measured from the kernel's accounting). Polls that passed the limit only because the machine was
oversubscribed are listed apart; --count-preemption counts them too.

Exit status: 1 if any poll held its thread longer than --max-poll; otherwise the command's own exit status
(128+N if a signal N killed it); 2 if check itself could not run or no agent reported.

Examples:
  loopscope check -- cargo run --example blocking_sleep
  loopscope check --max-poll 5ms --junit report.xml -- cargo test
  loopscope check --allow-fn legacy::load_config --allow-spawn src/migrations.rs -- cargo test")]
pub(crate) struct CheckArgs {
    /// The longest a single task poll may hold its thread, e.g. 10ms, 500us, 1.5s (at least 100us).
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_max_poll)]
    pub(crate) max_poll: Duration,

    /// Exempt stalls of tasks spawned at LOCATION: a path suffix (`src/legacy.rs`) or one line of it
    /// (`src/legacy.rs:42`). Repeatable. Exempt stalls are listed in a note, and don't fail the check.
    #[arg(long = "allow-spawn", value_name = "LOCATION")]
    pub(crate) allow_spawn: Vec<String>,

    /// Exempt stalls whose captured stack passes through a function whose name contains FUNCTION, e.g.
    /// `my_crate::legacy::load_config`, or a test that blocks on purpose. Repeatable.
    #[arg(long = "allow-fn", value_name = "FUNCTION")]
    pub(crate) allow_fn: Vec<String>,

    /// Judge polls by wall time. By default a poll fails only when its own time (wall time less the time its
    /// thread was runnable but waiting for a CPU) passes --max-poll, so a busy machine (parallel tests, other
    /// jobs) can't fail clean code; such polls are listed apart.
    #[arg(long)]
    pub(crate) count_preemption: bool,

    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,

    /// Also write the report as JUnit XML to FILE (one test case per culprit), for CI test reporters.
    #[arg(long, value_name = "FILE")]
    pub(crate) junit: Option<PathBuf>,

    /// The command to run, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

fn parse_max_poll(s: &str) -> Result<Duration, String> {
    let d = loopscope_wire::parse_duration(s)?;
    if d < MIN_MAX_POLL {
        return Err(format!("{d:?} is below the agent's minimum of 100us"));
    }
    Ok(d)
}

/// Runs `loopscope check`; returns the process exit code.
pub(crate) fn run(args: CheckArgs) -> ExitCode {
    match run_check(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loopscope check: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some((program, program_args)) = args.command.split_first() else {
        anyhow::bail!(
            "missing command: give the program to run after `--`, e.g. `loopscope check -- cargo test` \
             or `loopscope check --max-poll 10ms -- ./my-server --port 8080`"
        );
    };
    if program.starts_with('-') && program.len() > 1 {
        // Without `--`, clap hands an option it does not know to the command, which would then fail to start
        // with a puzzling "not found".
        anyhow::bail!(
            "unknown option `{program}` (see `loopscope check --help`); put the command after `--`, e.g. \
             `loopscope check --max-poll 10ms -- cargo test`"
        );
    }
    // The report files are checked before the command runs, which may take an hour: a typo in --json must not
    // cost the run.
    let mut reports = ReportFiles::open(&[("--json", args.json.as_deref()), ("--junit", args.junit.as_deref())])?;
    let dir = TempDir::create()?;
    let started = Instant::now();

    let mut cmd = Command::new(program);
    cmd.args(program_args)
        .env(CHECK_DIR_ENV, dir.path())
        // The environment overrides the app's own settings, so every agent under CMD uses --max-poll.
        .env("LOOPSCOPE_STALL_THRESHOLD", format!("{}ns", args.max_poll.as_nanos()))
        // Many test processes at once would fight over the agent's default port; CI mode needs no server.
        .env("LOOPSCOPE_ADDR", "off")
        // Nor metrics: an app that serves them on a fixed port would fail to install in all but the first
        // process (and `#[loopscope::main]` would then run unmonitored, unchecked).
        .env("LOOPSCOPE_METRICS_ADDR", "off");
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => " (not found: check the name and your PATH)",
                std::io::ErrorKind::PermissionDenied => " (permission denied: is it executable?)",
                _ => "",
            };
            eprintln!("loopscope check: error: cannot start `{}`: {e}{hint}", shell_words(&args.command));
            // check could not run it: 2, as documented, rather than the shell's 127/126, which a CI script
            // could take for the command's own failure.
            reports.discard();
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let forwarding = signals::forward_to(&child);
    let status = child.wait();
    drop(forwarding);
    let status = status.map_err(|e| anyhow::anyhow!("waiting for `{program}` failed: {e}"))?;
    let elapsed = started.elapsed();

    let agents = read_dir(dir.path()).map_err(|e| anyhow::anyhow!("reading the agents' records failed: {e}"))?;
    let allow = AllowList { spawn: args.allow_spawn.clone(), functions: args.allow_fn.clone() };
    let outcome = Outcome::new(
        args.max_poll,
        args.command.clone(),
        ChildEnd::from(status),
        agents,
        elapsed,
        &allow,
        args.count_preemption,
    );
    eprint!("{}", outcome.render_text());

    let mut failed_output = false;
    let outputs = [("JSON", &args.json, report::json as fn(&Outcome) -> String), ("JUnit", &args.junit, report::junit)];
    for (what, path, render) in outputs {
        if let Some(path) = path
            && let Err(e) = std::fs::write(path, render(&outcome))
        {
            eprintln!("loopscope check: error: cannot write the {what} report to {}: {e}", path.display());
            failed_output = true;
        }
    }
    reports.written();
    let code = outcome.exit_code();
    if failed_output && code == 0 {
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(ExitCode::from(code))
}

/// The `--json`/`--junit` files, opened (created if missing, never truncated) before the command runs, so an
/// unwritable path is an error at once. A file created here and never written (the command could not start)
/// is removed again.
struct ReportFiles {
    created: Vec<PathBuf>,
}

impl ReportFiles {
    fn open(paths: &[(&str, Option<&Path>)]) -> anyhow::Result<ReportFiles> {
        let mut files = ReportFiles { created: Vec::new() };
        for (option, path) in paths {
            let Some(path) = path else { continue };
            if path.is_dir() {
                files.discard();
                anyhow::bail!("{option} {} is a directory; give a file name", path.display());
            }
            let existed = path.exists();
            if let Err(e) = std::fs::OpenOptions::new().append(true).create(true).open(path) {
                files.discard();
                anyhow::bail!("cannot write {option} {}: {e}", path.display());
            }
            if !existed {
                files.created.push(path.to_path_buf());
            }
        }
        Ok(files)
    }

    /// The reports were written: keep them.
    fn written(&mut self) {
        self.created.clear();
    }

    /// Nothing will be written: remove the empty files this run created.
    fn discard(&mut self) {
        for p in self.created.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ReportFiles {
    fn drop(&mut self) {
        self.discard();
    }
}

/// The command as one line, quoted where needed, for messages.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh directory for the agents' records, readable only by this user, removed when dropped (also after
/// Ctrl-C: the signal handler keeps this process alive until the child has exited).
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<TempDir> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut last_err = None;
        for attempt in 0..100u32 {
            let path = base.join(format!("loopscope-check-{}-{nanos}-{attempt}", std::process::id()));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            match builder.create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => {
                    anyhow::bail!("cannot create a directory for the agents' records in {}: {e}", base.display())
                }
            }
        }
        anyhow::bail!("cannot create a directory for the agents' records in {}: {last_err:?}", base.display())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("loopscope check: warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// Ctrl-C, SIGTERM and SIGHUP while the child runs: this process survives them (so it can still report and
/// remove its directory) and passes them on to the child, which decides when to stop.
#[cfg(unix)]
mod signals {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::{Handle, Signals};

    /// Forwards signals to the child until dropped.
    #[derive(Debug)]
    pub(super) struct Forwarding {
        handle: Option<Handle>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    pub(super) fn forward_to(child: &std::process::Child) -> Forwarding {
        let pid = rustix::process::Pid::from_child(child);
        let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            // Without handlers the default applies: a signal ends this process, and the directory stays.
            return Forwarding { handle: None, thread: None };
        };
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("loopscope-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if let Some(sig) = rustix::process::Signal::from_named_raw(sig) {
                        // The child may have exited already (a terminal's Ctrl-C reaches the whole process
                        // group at once); that error is expected.
                        let _ = rustix::process::kill_process(pid, sig);
                    }
                }
            })
            .ok();
        Forwarding { handle: Some(handle), thread }
    }

    impl Drop for Forwarding {
        fn drop(&mut self) {
            if let Some(h) = self.handle.take() {
                h.close();
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(not(unix))]
mod signals {
    /// Signals are not forwarded on this platform.
    #[derive(Debug)]
    pub(super) struct Forwarding;

    pub(super) fn forward_to(_child: &std::process::Child) -> Forwarding {
        Forwarding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_poll_needs_a_unit_and_a_sane_value() {
        assert_eq!(parse_max_poll("10ms"), Ok(Duration::from_millis(10)));
        assert!(parse_max_poll("10").unwrap_err().contains("missing unit"));
        assert!(parse_max_poll("50us").unwrap_err().contains("minimum of 100us"));
        assert!(parse_max_poll("fast").is_err());
    }

    #[test]
    fn commands_are_quoted_for_messages() {
        let words = ["cargo", "test", "--", "a b", "it's"].map(String::from);
        assert_eq!(shell_words(&words), r"cargo test -- 'a b' 'it'\''s'");
    }

    #[test]
    fn the_temp_dir_is_private_and_removed() {
        let dir = TempDir::create().unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        }
        std::fs::write(path.join("agent-1-1.jsonl"), "{}").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
