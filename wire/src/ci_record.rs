//! CI mode records: what every agent writes for `loopscope check`, and the reader the CLI uses.
//!
//! `loopscope check -- CMD` creates a fresh directory and runs `CMD` with [`CHECK_DIR_ENV`] pointing at it.
//! Every agent (one per runtime) in every process under `CMD` writes its own file there,
//! `agent-<pid>-<runtime_id>.jsonl`, as JSON Lines:
//!
//! 1. one [`CheckRecord::Agent`] line describing the process and runtime ([`AgentInfo`]);
//! 2. one [`CheckRecord::Stall`] line per stall event: every phase (`Started`, `Updated`, `Ended`), so a
//!    process killed in the middle of a stall still reports it;
//! 3. one [`CheckRecord::Finished`] line ([`CheckSummary`]) when the runtime shut down cleanly.
//!
//! [`CheckWriter`] writes a file; it does file I/O, so call it from a background thread, never from a task
//! hook. Each record is written with a single `write` call and no user-space buffer, so a process that
//! crashes loses nothing that was written before. [`read_dir`] reads every file of a directory back into
//! [`AgentReport`]s. It keeps one entry per stall (its latest phase) and tolerates a damaged file: a torn
//! last line (the process died while writing it) or a line it cannot parse is reported in
//! [`AgentReport::damage`], and everything else is kept.
//!
//! # Examples
//!
//! ```
//! use loopscope_wire::ci_record::{AgentInfo, CheckSummary, CheckWriter, read_dir};
//! use std::time::Duration;
//!
//! let dir = std::env::temp_dir().join(format!("loopscope-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let info = AgentInfo::for_this_process(1, Duration::from_millis(10));
//! let mut writer = CheckWriter::create(&dir, &info)?;
//! // ... writer.write_stall(&event)? for every stall event ...
//! writer.finish(&CheckSummary::default())?;
//!
//! let reports = read_dir(&dir)?;
//! assert_eq!(reports.len(), 1);
//! assert_eq!(reports[0].info.pid, std::process::id());
//! assert!(reports[0].finished.is_some());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::snapshot::{Dropped, Totals};
use crate::stall::{ProbeStatus, StallEvent, StallPhase, StallSummary};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Environment variable: the directory where every agent writes its CI records. `loopscope check` sets it;
/// apps don't set it themselves.
pub const CHECK_DIR_ENV: &str = "LOOPSCOPE_CHECK_DIR";

/// The record format this version writes, in [`AgentInfo::format`]. Readers skip record types they don't
/// know, so a newer agent's file still reads.
pub const CHECK_FORMAT: u32 = 1;

/// Which stalls a check exempts: tasks spawned at some locations, or stacks that pass through some functions.
/// The same rules serve `#[loopscope::test(allow_spawn = ..., allow_fn = ...)]`, `loopscope::Check` and
/// `loopscope check --allow-spawn ... --allow-fn ...`.
///
/// # Examples
/// ```
/// use loopscope_wire::ci_record::{AllowList, Exemption};
/// use loopscope_wire::{Location, StallEvent, StallKind, StallPhase, ThreadInfo};
/// # use std::time::Duration;
/// let allow = AllowList { spawn: vec!["src/legacy.rs".into()], functions: vec![] };
/// let mut ev = StallEvent {
///     location: Some(Location::new("crates/app/src/legacy.rs", 12, 5)),
/// #   stall_id: 1, phase: StallPhase::Ended, kind: StallKind::WorkerBlocked, runtime_id: 1, worker: Some(0),
/// #   thread: ThreadInfo { tid: 1, name: None }, task_id: 3, elapsed: Duration::from_millis(30),
/// #   threshold: Duration::from_millis(10), at_unix_nanos: 0, suppressed: 0, caught_in_flight: true,
/// #   culprit: None, time: None, agent_task: None,
///     // ...
/// };
/// assert_eq!(allow.exempts(&ev), Some(Exemption::Spawn("src/legacy.rs")));
/// ev.location = Some(Location::new("src/main.rs", 3, 1));
/// assert_eq!(allow.exempts(&ev), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Spawn locations: a path suffix (`src/legacy.rs`) or a path suffix and a line (`src/legacy.rs:42`).
    pub spawn: Vec<String>,
    /// Function names, or parts of them (`legacy::load_config`), matched against every frame of every
    /// captured sample of the stall. Needs the stack probe.
    pub functions: Vec<String>,
}

/// Why an [`AllowList`] exempts a stall: the entry that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption<'a> {
    /// The task was spawned at this location entry.
    Spawn(&'a str),
    /// The stack passes through a function matching this entry.
    Function(&'a str),
}

impl AllowList {
    /// Whether nothing is exempt.
    pub fn is_empty(&self) -> bool {
        self.spawn.is_empty() && self.functions.is_empty()
    }

    /// The first entry that exempts `ev`, if any: spawn locations first, then functions.
    pub fn exempts(&self, ev: &StallEvent) -> Option<Exemption<'_>> {
        if let Some(loc) = &ev.location {
            for a in &self.spawn {
                let matches = match a.rsplit_once(':') {
                    Some((file, line)) if line.parse::<u32>().is_ok() => {
                        loc.file.ends_with(file) && line.parse() == Ok(loc.line)
                    }
                    _ => loc.file.ends_with(a.as_str()),
                };
                if matches {
                    return Some(Exemption::Spawn(a));
                }
            }
        }
        let culprit = ev.culprit.as_ref()?;
        self.functions
            .iter()
            .find(|f| {
                culprit
                    .samples
                    .iter()
                    .flat_map(|s| &s.frames)
                    .any(|fr| fr.function.as_deref().is_some_and(|n| n.contains(f.as_str())))
            })
            .map(|f| Exemption::Function(f))
    }
}

/// The prefix of every agent's file name in a check directory.
const FILE_PREFIX: &str = "agent-";

/// The extension of every agent's file in a check directory.
const FILE_EXTENSION: &str = "jsonl";

/// The check directory from [`CHECK_DIR_ENV`], when it is set and not empty.
///
/// ```
/// // Unset in doctests, so the agent would not write CI records.
/// assert_eq!(loopscope_wire::ci_record::check_dir_from_env(), None);
/// ```
pub fn check_dir_from_env() -> Option<PathBuf> {
    std::env::var_os(CHECK_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// One line of an agent's file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CheckRecord {
    /// The first line: who is writing.
    Agent(AgentInfo),
    /// One event of a stall (any phase).
    Stall(Box<StallEvent>),
    /// The last line, written when the runtime shut down: the agent's totals.
    Finished(CheckSummary),
}

/// Who wrote an agent file: the process and the runtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The record format ([`CHECK_FORMAT`] for files this version writes).
    #[serde(default)]
    pub format: u32,
    /// Process id.
    pub pid: u32,
    /// The program, as it was started (its first argument, or the executable's path).
    pub program: String,
    /// The name of the thread that installed the agent, when it has one. Under the standard test harness
    /// this is the test's name (for example `check::clean_code_passes`), since each test runs on a thread
    /// named after it.
    #[serde(default)]
    pub thread: Option<String>,
    /// Identifies the agent (one per runtime) within the process; the same as `StallEvent::runtime_id`.
    pub runtime_id: u64,
    /// A name given to the runtime (`LOOPSCOPE_NAME`), if any.
    #[serde(default)]
    pub runtime_name: Option<String>,
    /// `multi_thread` or `current_thread`, when known.
    #[serde(default)]
    pub flavor: Option<String>,
    /// Number of worker threads, when known.
    #[serde(default)]
    pub workers: Option<usize>,
    /// The stall threshold in force, in nanoseconds.
    pub stall_threshold_nanos: u64,
    /// When the agent started, in nanoseconds since the Unix epoch.
    pub started_at_unix_nanos: u64,
    /// The OS probes and whether they work in this process (stacks need them to name a culprit function).
    #[serde(default)]
    pub probes: Vec<ProbeStatus>,
    /// Capabilities the agent lacks, in words, as `Agent::capabilities()` lists them. Some (per-task
    /// schedule latency) don't matter to a check; [`no_stall_detection`](Self::no_stall_detection) says
    /// whether stalls can be seen at all.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Why this agent cannot detect stalls, when it cannot (built without `--cfg tokio_unstable`, or
    /// disabled); `None` when it can. A check of a program whose agents all have this set checked nothing.
    #[serde(default)]
    pub no_stall_detection: Option<String>,
}

impl AgentInfo {
    /// Information about this process (pid, program, the current thread's name, the time now) for the agent
    /// of runtime `runtime_id` with `stall_threshold`. Set the other fields (runtime name, flavor, probes,
    /// missing capabilities) as they are known.
    pub fn for_this_process(runtime_id: u64, stall_threshold: Duration) -> AgentInfo {
        let program = std::env::args_os()
            .next()
            .map(|a| a.to_string_lossy().into_owned())
            .or_else(|| std::env::current_exe().ok().map(|p| p.display().to_string()))
            .unwrap_or_default();
        AgentInfo {
            format: CHECK_FORMAT,
            pid: std::process::id(),
            program,
            thread: std::thread::current().name().map(str::to_string),
            runtime_id,
            stall_threshold_nanos: u64::try_from(stall_threshold.as_nanos()).unwrap_or(u64::MAX),
            started_at_unix_nanos: unix_nanos_now(),
            ..AgentInfo::default()
        }
    }

    /// The stall threshold in force.
    pub fn stall_threshold(&self) -> Duration {
        Duration::from_nanos(self.stall_threshold_nanos)
    }

    /// A short name for reports: the program's file name, then the runtime's name or the installing
    /// thread's name when there is one, e.g. `integration-1a2b (check::clean_code_passes)`.
    ///
    /// ```
    /// let mut info = loopscope_wire::ci_record::AgentInfo::default();
    /// info.program = "/repo/target/debug/examples/blocking_sleep".into();
    /// info.pid = 42;
    /// assert_eq!(info.display_name(), "blocking_sleep (pid 42)");
    /// info.runtime_name = Some("api".into());
    /// assert_eq!(info.display_name(), "blocking_sleep (pid 42, runtime api)");
    /// ```
    pub fn display_name(&self) -> String {
        let program = Path::new(&self.program)
            .file_name()
            .map_or_else(|| self.program.clone(), |f| f.to_string_lossy().into_owned());
        let program = if program.is_empty() { "unknown program".to_string() } else { program };
        let mut extra = vec![format!("pid {}", self.pid)];
        if let Some(name) = &self.runtime_name {
            extra.push(format!("runtime {name}"));
        } else if let Some(thread) = self.thread.as_deref().filter(|t| *t != "main") {
            extra.push(format!("thread {thread}"));
        }
        format!("{program} ({})", extra.join(", "))
    }
}

/// The last record of an agent's file: what the agent counted over its whole life.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// When the runtime shut down, in nanoseconds since the Unix epoch.
    pub finished_at_unix_nanos: u64,
    /// The agent's totals. `stall_count` counts every stall, including any whose events were suppressed by
    /// the rate limit or dropped, so a reader can tell how many stalls it has no details for.
    pub totals: Totals,
    /// What the agent dropped to stay within its memory bounds.
    pub dropped: Dropped,
    /// Records this file is missing because writing them failed (filled in by [`CheckWriter::finish`]).
    #[serde(default)]
    pub failed_writes: u64,
}

/// Writes one agent's records into a check directory. Not for the hot path: every call is a `write`
/// system call. Call it from the agent's background thread.
#[derive(Debug)]
pub struct CheckWriter {
    file: File,
    path: PathBuf,
    line: Vec<u8>,
    failed_writes: u64,
}

impl CheckWriter {
    /// Creates the agent's file in `dir`, named `agent-<pid>-<runtime_id>.jsonl` (with a `-<n>` suffix if
    /// that name is taken, as when a pid was reused during a long run), and writes the [`CheckRecord::Agent`]
    /// line. Call it once per agent when the agent starts and [`check_dir_from_env`] (or the configuration)
    /// names a directory. The directory must exist: `loopscope check` creates it.
    pub fn create(dir: &Path, info: &AgentInfo) -> io::Result<CheckWriter> {
        let base = format!("{FILE_PREFIX}{}-{}", info.pid, info.runtime_id);
        let mut n = 0u32;
        let (file, path) = loop {
            let name = if n == 0 { format!("{base}.{FILE_EXTENSION}") } else { format!("{base}-{n}.{FILE_EXTENSION}") };
            let path = dir.join(name);
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        };
        let mut writer = CheckWriter { file, path, line: Vec::with_capacity(1024), failed_writes: 0 };
        writer.write_record(&CheckRecord::Agent(info.clone()))?;
        Ok(writer)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one stall event. Call it for every event of every stall (`Started`, `Updated` and `Ended`):
    /// the reader keeps each stall's latest phase, and a stall whose process dies before it ends is still
    /// reported from its `Started` event.
    pub fn write_stall(&mut self, event: &StallEvent) -> io::Result<()> {
        self.write_record(&CheckRecord::Stall(Box::new(event.clone())))
    }

    /// Writes the last record, with the agent's totals. Call it once when the runtime has shut down and the
    /// agent has written its last stall event. `summary.failed_writes` is replaced by this writer's count of
    /// failed writes.
    pub fn finish(&mut self, summary: &CheckSummary) -> io::Result<()> {
        let summary = CheckSummary { failed_writes: self.failed_writes, ..summary.clone() };
        self.write_record(&CheckRecord::Finished(summary))
    }

    /// Records that failed to write so far.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes
    }

    fn write_record(&mut self, record: &CheckRecord) -> io::Result<()> {
        let result = self.try_write(record);
        if result.is_err() {
            self.failed_writes += 1;
        }
        result
    }

    fn try_write(&mut self, record: &CheckRecord) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).map_err(io::Error::other)?;
        self.line.push(b'\n');
        // One write of the whole line, straight to the file (no BufWriter): a crash after this call loses
        // nothing, and a crash during it leaves at most a torn last line, which the reader tolerates.
        self.file.write_all(&self.line)
    }
}

/// Everything one agent wrote, as read back by [`read_dir`] or [`read_file`].
#[derive(Clone, Debug, PartialEq)]
pub struct AgentReport {
    /// The file it came from.
    pub path: PathBuf,
    /// Who wrote it. When the file lacks its first line (the process died right after creating it), the pid
    /// and runtime id come from the file name and the other fields are empty.
    pub info: AgentInfo,
    /// One entry per stall, in the order the stalls started, each with its latest event (the `Ended` one
    /// once the poll returned; `ended` is false for a stall still running when the process stopped).
    pub stalls: Vec<StallSummary>,
    /// The last record, present when the runtime shut down cleanly.
    pub finished: Option<CheckSummary>,
    /// Lines that could not be read, in file order. A torn last line means the process died while writing.
    pub damage: Vec<DamagedLine>,
    /// Records of types this version does not know (written by a newer agent), skipped.
    pub unknown_records: u64,
}

impl AgentReport {
    /// Stalls counted, with or without details: the larger of the stalls listed and the agent's own count.
    pub fn stall_count(&self) -> u64 {
        let listed = self.stalls.len() as u64;
        self.finished.as_ref().map_or(listed, |f| f.totals.stall_count.max(listed))
    }

    /// Stalls the agent counted but wrote no event for (suppressed by its rate limit, or dropped).
    pub fn unlisted_stalls(&self) -> u64 {
        self.stall_count() - self.stalls.len() as u64
    }

    /// Whether the file ends with a line cut short: the process died while writing it.
    pub fn is_torn(&self) -> bool {
        self.damage.last().is_some_and(|d| d.torn)
    }
}

/// A line of an agent file that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedLine {
    /// 1-based line number.
    pub line: usize,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// True for a last line without its newline: the writer was interrupted.
    pub torn: bool,
    /// Why it could not be read.
    pub error: String,
}

/// A check directory or one of its files could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckReadError {
    /// Listing the directory or reading a file failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Reads every agent file (`agent-*.jsonl`) in `dir`, ordered by start time, then pid and runtime id.
/// Other files are ignored. A damaged file still gives its report, with the damage listed.
pub fn read_dir(dir: &Path) -> Result<Vec<AgentReport>, CheckReadError> {
    let io_err = |source| CheckReadError::Io { path: dir.to_path_buf(), source };
    let mut reports = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.starts_with(FILE_PREFIX) && name.ends_with(&format!(".{FILE_EXTENSION}")) && path.is_file() {
            reports.push(read_file(&path)?);
        }
    }
    reports.sort_by(|a, b| {
        (a.info.started_at_unix_nanos, a.info.pid, a.info.runtime_id, &a.path).cmp(&(
            b.info.started_at_unix_nanos,
            b.info.pid,
            b.info.runtime_id,
            &b.path,
        ))
    });
    Ok(reports)
}

/// Reads one agent file.
pub fn read_file(path: &Path) -> Result<AgentReport, CheckReadError> {
    let file = File::open(path).map_err(|source| CheckReadError::Io { path: path.to_path_buf(), source })?;
    read_records(BufReader::new(file), path)
}

/// Reads one agent's records from `input`; `path` is only recorded in the report (and parsed for the pid
/// and runtime id when the first line is missing).
pub fn read_records(mut input: impl BufRead, path: &Path) -> Result<AgentReport, CheckReadError> {
    let mut info: Option<AgentInfo> = None;
    let mut stalls: Vec<StallSummary> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut finished = None;
    let mut damage = Vec::new();
    let mut unknown_records = 0;
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|source| CheckReadError::Io { path: path.to_path_buf(), source })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.last() == Some(&b'\n');
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let here = offset;
        offset += n as u64;
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(text) {
            Ok(Some(CheckRecord::Agent(a))) => info = Some(a),
            Ok(Some(CheckRecord::Stall(ev))) => merge_stall(&mut stalls, &mut index, *ev),
            Ok(Some(CheckRecord::Finished(s))) => finished = Some(s),
            Ok(None) => unknown_records += 1,
            Err(error) => damage.push(DamagedLine { line: line_no, offset: here, torn: !complete, error }),
        }
    }
    let info = info.unwrap_or_else(|| info_from_file_name(path));
    Ok(AgentReport { path: path.to_path_buf(), info, stalls, finished, damage, unknown_records })
}

/// Parses one line; `Ok(None)` for a well-formed record of a type this version does not know.
fn parse_line(text: &[u8]) -> Result<Option<CheckRecord>, String> {
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let kind = value.get("type").and_then(serde_json::Value::as_str).ok_or("a record without a \"type\"")?.to_string();
    if !matches!(kind.as_str(), "agent" | "stall" | "finished") {
        return Ok(None);
    }
    serde_json::from_value(value).map(Some).map_err(|e| format!("a {kind} record: {e}"))
}

/// Keeps each stall's latest event: the highest phase, and the latest of equal phases. A later event that
/// lacks the culprit keeps the one an earlier event had.
fn merge_stall(stalls: &mut Vec<StallSummary>, index: &mut HashMap<u64, usize>, ev: StallEvent) {
    let rank = |p: StallPhase| match p {
        StallPhase::Started => 0,
        StallPhase::Updated => 1,
        StallPhase::Ended => 2,
    };
    match index.get(&ev.stall_id) {
        None => {
            index.insert(ev.stall_id, stalls.len());
            let ended = ev.phase == StallPhase::Ended;
            stalls.push(StallSummary { last: ev, ended });
        }
        Some(&i) => {
            let known = &mut stalls[i];
            if rank(ev.phase) < rank(known.last.phase) {
                if known.last.culprit.is_none() {
                    known.last.culprit = ev.culprit;
                }
                return;
            }
            let mut ev = ev;
            if ev.culprit.is_none() {
                ev.culprit = known.last.culprit.take();
            }
            known.ended = ev.phase == StallPhase::Ended;
            known.last = ev;
        }
    }
}

/// The pid and runtime id from a file name `agent-<pid>-<runtime_id>[-<n>].jsonl`, for a file whose first
/// line is missing.
fn info_from_file_name(path: &Path) -> AgentInfo {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let mut parts = stem.strip_prefix(FILE_PREFIX).unwrap_or_default().split('-');
    let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or_default();
    let runtime_id = parts.next().and_then(|p| p.parse().ok()).unwrap_or_default();
    AgentInfo { pid, runtime_id, ..AgentInfo::default() }
}

fn unix_nanos_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_gives_pid_and_runtime() {
        let info = info_from_file_name(Path::new("/tmp/x/agent-123-7-2.jsonl"));
        assert_eq!((info.pid, info.runtime_id), (123, 7));
        let info = info_from_file_name(Path::new("/tmp/x/agent-123-7.jsonl"));
        assert_eq!((info.pid, info.runtime_id), (123, 7));
    }

    #[test]
    fn unknown_record_types_are_skipped_not_damage() {
        assert_eq!(parse_line(br#"{"type":"from_the_future","x":1}"#), Ok(None));
        assert!(parse_line(br#"{"no_type":1}"#).is_err());
        assert!(parse_line(br#"{"type":"stall","stall_id":"#).is_err());
    }
}
