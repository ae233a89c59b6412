//! The runner: starts one child process per measured run, pairs each mode with a bare run just before it,
//! and prints ratios to bare as median [min–max] over the pairs, as Markdown tables.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Mode, Sizes, Workload, procfs};

/// The suite's options.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Tiny sizes and one pair per mode: checks that every mode and workload still runs; measures nothing.
    #[arg(long)]
    pub quick: bool,
    /// (bare, mode) pairs per mode and workload [default: 5 for the yield storm and idle tasks, 3 for HTTP and
    /// the spawn storm (console's storm alone takes ~20 s a run), 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub pairs: Option<u32>,
    /// Only these modes, comma-separated (bare always runs, as every pair's baseline) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Vec<Mode>,
    /// Only these workloads, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// The console child (examples/console_peer). When not given, the runner builds it with cargo, in this
    /// executable's profile, and takes it from this executable's target directory.
    #[arg(long, value_name = "PATH")]
    pub console_bin: Option<PathBuf>,
}

/// One run's figures, by name.
type Sample = HashMap<String, f64>;

/// A child that runs longer than this is killed and the suite fails (the slowest full run, console's spawn
/// storm, takes well under a minute).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the suite and prints its tables to stdout (progress goes to stderr).
pub fn run(args: &RunArgs) -> Result<()> {
    let started = Instant::now();
    let sizes = Sizes::pick(args.quick);
    let modes: Vec<Mode> = if args.modes.is_empty() { Mode::ALL.to_vec() } else { args.modes.clone() };
    let modes: Vec<Mode> = Mode::ALL.into_iter().filter(|m| *m != Mode::Bare && modes.contains(m)).collect();
    let workloads: Vec<Workload> =
        Workload::ALL.into_iter().filter(|w| args.workloads.is_empty() || args.workloads.contains(w)).collect();
    let own = std::env::current_exe().context("finding this executable")?;
    let console = if modes.iter().any(|m| m.needs_console()) {
        Some(match &args.console_bin {
            Some(p) => p.clone(),
            None => build_console_child(&own)?,
        })
    } else {
        None
    };
    let runner = Runner { own, console, quick: args.quick, sizes };

    println!("# loopscope peers suite{}\n", if args.quick { " (--quick: a smoke run, not a measurement)" } else { "" });
    println!("{}", machine_line());
    println!("load average at start: {}", procfs::loadavg());
    println!("Interleaved (bare, mode) pairs per mode and workload; each run a fresh process; 2-worker runtime.");
    println!("Cells: median [min–max] over the pairs; ratios are mode / bare within each pair.\n");

    let mut results: HashMap<(Workload, Mode), Vec<(Sample, Sample)>> = HashMap::new();
    for &w in &workloads {
        let pairs = match (args.pairs, args.quick, w) {
            (Some(p), _, _) => p as usize,
            (None, true, _) => 1,
            (None, false, Workload::Yield | Workload::Idle) => 5,
            (None, false, Workload::Http | Workload::Spawn) => 3,
        };
        for pair in 0..pairs {
            for &m in &modes {
                let bare = runner.run_one(Mode::Bare, w)?;
                let mine = runner.run_one(m, w)?;
                eprintln!("[{} {}/{pairs}] {}: {}", w.arg(), pair + 1, m.arg(), progress(w, &bare, &mine));
                results.entry((w, m)).or_default().push((bare, mine));
            }
        }
        println!("{pairs} pairs:\n");
        print!("{}", table(w, &sizes, &modes, &results));
    }
    print!("{}", goals(&modes, &workloads, &results));
    println!("load average at end: {}; suite took {:.0} s.", procfs::loadavg(), started.elapsed().as_secs_f64());
    Ok(())
}

struct Runner {
    own: PathBuf,
    console: Option<PathBuf>,
    quick: bool,
    sizes: Sizes,
}

impl Runner {
    /// One measured run in a fresh child process.
    fn run_one(&self, mode: Mode, w: Workload) -> Result<Sample> {
        let exe = if mode.needs_console() {
            self.console.as_ref().context("console modes need the console child")?
        } else {
            &self.own
        };
        let mut cmd = Command::new(exe);
        cmd.args(["child", "--mode", mode.arg(), "--workload", w.arg()]);
        if self.quick {
            cmd.arg("--quick");
        }
        let what = format!("{} / {}", w.arg(), mode.arg());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let cancel = kill_after(child.id(), RUN_TIMEOUT);
        // Drained on a thread of its own so that a chatty child can't block on a full pipe. Shown only when
        // the run fails: a successful run's stderr is loopscope's stall reports (counted, see below).
        let mut stderr = child.stderr.take().context("piped stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
        let mut sample = Sample::new();
        if w == Workload::Http {
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            let port: u16 = line
                .trim()
                .strip_prefix("port=")
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("{what}: the server did not say its port (said {line:?})"))?;
            sample.extend(self.loadgen(port).with_context(|| format!("{what}: load generator"))?);
        }
        // Closing stdin ends the HTTP server's run; other workloads never read it.
        drop(stdin);
        let mut out = String::new();
        stdout.read_to_string(&mut out)?;
        let status = child.wait()?;
        cancel.store(true, Ordering::Relaxed);
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            bail!("{what}: the child failed ({status}); its stderr:\n{stderr}");
        }
        sample.extend(parse_figures(&out));
        // Stall reports during a run (each report line of a stall counts): on a loaded machine these are
        // mostly polls delayed by the OS, and say how disturbed the run was.
        sample.insert(
            "stall_report_lines".into(),
            stderr.lines().filter(|l| l.contains("blocked worker")).count() as f64,
        );
        check(mode, w, &sample).with_context(|| format!("{what}: figures {sample:?}"))?;
        Ok(sample)
    }

    fn loadgen(&self, port: u16) -> Result<Sample> {
        let s = &self.sizes;
        let out = Command::new(&self.own)
            .args(["loadgen", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--connections", &s.http_connections.to_string()])
            .args(["--warmup-ms", &s.http_warmup.as_millis().to_string()])
            .args(["--duration-ms", &s.http_duration.as_millis().to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("failed ({}); its error is above", out.status);
        }
        Ok(parse_figures(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Kills process `pid` (a child this runner started) after `after`, unless the returned flag is set first, so
/// that a hung run fails the suite instead of hanging it.
fn kill_after(pid: u32, after: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + after;
        while Instant::now() < deadline {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !flag.load(Ordering::Relaxed) {
            eprintln!("loopscope-peers: run (pid {pid}) still going after {after:?}: killing it");
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    done
}

fn parse_figures(out: &str) -> Sample {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Refuses a run whose mode evidently did not watch it, so that a broken mode can't pass for a cheap one.
fn check(mode: Mode, w: Workload, s: &Sample) -> Result<()> {
    let get = |k: &str| s.get(k).copied().unwrap_or(0.0);
    let needs: &[&str] = match w {
        Workload::Yield => &["cpu_ns_per_poll", "wall_ns_per_poll"],
        Workload::Http => &["rps", "p99_us", "server_cpu_ms"],
        Workload::Spawn => &["wall_ms", "peak_rss_mib"],
        Workload::Idle => &["fixed_rss_mib"],
    };
    for k in needs {
        if !s.contains_key(*k) {
            bail!("no {k} in the child's figures");
        }
    }
    if mode.is_loopscope() && get("agent_polls") == 0.0 {
        bail!("the agent saw no poll");
    }
    if mode == Mode::TaskMonitor && get("monitor_polls") == 0.0 {
        bail!("the TaskMonitor saw no poll");
    }
    if matches!(mode, Mode::LoopscopeClient | Mode::ConsoleClient) && get("client_messages") == 0.0 {
        bail!("the client received nothing");
    }
    Ok(())
}

/// Builds examples/console_peer with cargo in this executable's profile and returns its path. It is a build of
/// its own because console-subscriber turns on tokio's `tracing` feature, which must not reach the other modes.
fn build_console_child(own: &Path) -> Result<PathBuf> {
    let dir = own.parent().context("this executable has no directory")?;
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    eprintln!("loopscope-peers: building the console child (examples/console_peer.rs, profile {profile})");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", "console_peer", "--manifest-path"]).arg(&manifest);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().context("running cargo (or pass --console-bin PATH)")?;
    if !status.success() {
        bail!("building the console child failed ({status}); or pass --console-bin PATH");
    }
    let bin = dir.join("examples").join("console_peer");
    if !bin.exists() {
        bail!("cargo built the console child, but not at {} (a custom target dir? pass --console-bin)", bin.display());
    }
    Ok(bin)
}

fn machine_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| Some(l.strip_prefix("model name")?.split_once(':')?.1.trim().to_string())))
        .unwrap_or_else(|| "unknown CPU".into());
    let commit = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("machine: {cpus} CPUs ({model}); commit {commit}")
}

fn progress(w: Workload, bare: &Sample, mine: &Sample) -> String {
    let key = headline(w);
    let (b, m) = (bare.get(key).copied().unwrap_or(f64::NAN), mine.get(key).copied().unwrap_or(f64::NAN));
    let stalls = mine.get("stall_report_lines").copied().unwrap_or(0.0);
    let stalls = if stalls > 0.0 { format!("; {stalls} stall report lines") } else { String::new() };
    format!("{key} {m:.1} against bare {b:.1} ({:.2}x){stalls}", m / b)
}

/// The figure a workload is mainly about.
fn headline(w: Workload) -> &'static str {
    match w {
        Workload::Yield => "cpu_ns_per_poll",
        Workload::Http => "rps",
        Workload::Spawn => "wall_ms",
        Workload::Idle => "bytes_per_task",
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// `median [min–max]`, with `prec` decimals.
fn spread(v: &[f64], prec: usize) -> String {
    let fin: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if fin.is_empty() {
        return "–".into();
    }
    let (lo, hi) = fin.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    if fin.len() == 1 {
        return format!("{:.prec$}", fin[0]);
    }
    format!("{:.prec$} [{lo:.prec$}–{hi:.prec$}]", median(&fin))
}

/// For one (workload, mode): the mode's values, the pair ratios mode/bare, and the pair differences.
struct Series<'a>(&'a [(Sample, Sample)]);

impl Series<'_> {
    fn mine(&self, k: &str) -> Vec<f64> {
        self.0.iter().map(|(_, m)| m.get(k).copied().unwrap_or(f64::NAN)).collect()
    }
    fn bare(&self, k: &str) -> Vec<f64> {
        self.0.iter().map(|(b, _)| b.get(k).copied().unwrap_or(f64::NAN)).collect()
    }
    fn ratio(&self, k: &str) -> Vec<f64> {
        self.mine(k).iter().zip(self.bare(k)).map(|(m, b)| m / b).collect()
    }
    fn diff(&self, k: &str) -> Vec<f64> {
        self.mine(k).iter().zip(self.bare(k)).map(|(m, b)| m - b).collect()
    }
    /// A derived per-run figure, e.g. server CPU per request.
    fn mine_by(&self, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.0.iter().map(|(_, m)| f(m)).collect()
    }
    fn ratio_by(&self, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.0.iter().map(|(b, m)| f(m) / f(b)).collect()
    }
}

fn table(w: Workload, s: &Sizes, modes: &[Mode], results: &HashMap<(Workload, Mode), Vec<(Sample, Sample)>>) -> String {
    // Every bare run of this workload, for the baseline row.
    let all_bare: Vec<&Sample> = modes.iter().filter_map(|m| results.get(&(w, *m))).flatten().map(|(b, _)| b).collect();
    let bare = |k: &str| spread(&all_bare.iter().map(|b| b.get(k).copied().unwrap_or(f64::NAN)).collect::<Vec<_>>(), 1);
    let get = |x: &Sample, k: &str| x.get(k).copied().unwrap_or(f64::NAN);
    let cpu_per_req = |x: &Sample| get(x, "server_cpu_ms") * 1e3 / (get(x, "rps") * s.http_duration.as_secs_f64());
    let mut out = String::new();
    let mut row = |cells: Vec<String>| out.push_str(&format!("| {} |\n", cells.join(" | ")));
    match w {
        Workload::Yield => {
            row(vec![format!(
                "**yield storm**: {} tasks × {} `yield_now` ({} polls) | CPU ns/poll | added CPU ns/poll | CPU/poll ratio | wall ratio",
                s.yield_tasks,
                s.yields,
                s.yield_tasks * (s.yields + 1)
            )]);
            row(vec!["---".into(), "---:".into(), "---:".into(), "---:".into(), "---:".into()]);
            row(vec![Mode::Bare.label().into(), bare("cpu_ns_per_poll"), "–".into(), "1".into(), "1".into()]);
            for m in modes {
                let Some(r) = results.get(&(w, *m)) else { continue };
                let r = Series(r);
                row(vec![
                    m.label().into(),
                    spread(&r.mine("cpu_ns_per_poll"), 1),
                    spread(&r.diff("cpu_ns_per_poll"), 1),
                    spread(&r.ratio("cpu_ns_per_poll"), 2),
                    spread(&r.ratio("wall_ns_per_poll"), 2),
                ]);
            }
        }
        Workload::Http => {
            row(vec![format!(
                "**HTTP**: keep-alive server, {} connections, {} ms measured | req/s | req/s ratio | p99 µs | p99 ratio | server CPU/req ratio",
                s.http_connections,
                s.http_duration.as_millis()
            )]);
            row(vec!["---".into(), "---:".into(), "---:".into(), "---:".into(), "---:".into(), "---:".into()]);
            row(vec![Mode::Bare.label().into(), bare("rps"), "1".into(), bare("p99_us"), "1".into(), "1".into()]);
            for m in modes {
                let Some(r) = results.get(&(w, *m)) else { continue };
                let r = Series(r);
                row(vec![
                    m.label().into(),
                    spread(&r.mine("rps"), 0),
                    spread(&r.ratio("rps"), 2),
                    spread(&r.mine("p99_us"), 0),
                    spread(&r.ratio("p99_us"), 2),
                    spread(&r.ratio_by(cpu_per_req), 2),
                ]);
            }
        }
        Workload::Spawn => {
            row(vec![format!(
                "**spawn storm**: {} tasks spawned from a task, then joined | time ms | time ratio | peak RSS MiB | peak RSS ratio | untracked tasks",
                s.spawn_tasks
            )]);
            row(vec!["---".into(), "---:".into(), "---:".into(), "---:".into(), "---:".into(), "---:".into()]);
            row(vec![
                Mode::Bare.label().into(),
                bare("wall_ms"),
                "1".into(),
                bare("peak_rss_mib"),
                "1".into(),
                "–".into(),
            ]);
            for m in modes {
                let Some(r) = results.get(&(w, *m)) else { continue };
                let r = Series(r);
                let untracked = if m.is_loopscope() { spread(&r.mine("untracked_tasks"), 0) } else { "–".into() };
                row(vec![
                    m.label().into(),
                    spread(&r.mine("wall_ms"), 1),
                    spread(&r.ratio("wall_ms"), 2),
                    spread(&r.mine("peak_rss_mib"), 1),
                    spread(&r.ratio("peak_rss_mib"), 2),
                    untracked,
                ]);
            }
        }
        Workload::Idle => {
            row(vec![format!(
                "**idle tasks**: {} tasks polled once, then pending | RSS before them, MiB | over bare, MiB | bytes/task | over bare, bytes/task | untracked tasks",
                s.idle_tasks
            )]);
            row(vec!["---".into(), "---:".into(), "---:".into(), "---:".into(), "---:".into(), "---:".into()]);
            row(vec![
                Mode::Bare.label().into(),
                bare("fixed_rss_mib"),
                "–".into(),
                bare("bytes_per_task"),
                "–".into(),
                "–".into(),
            ]);
            for m in modes {
                let Some(r) = results.get(&(w, *m)) else { continue };
                let r = Series(r);
                let untracked = if m.is_loopscope() { spread(&r.mine("untracked_tasks"), 0) } else { "–".into() };
                row(vec![
                    m.label().into(),
                    spread(&r.mine("fixed_rss_mib"), 1),
                    spread(&r.diff("fixed_rss_mib"), 1),
                    spread(&r.mine_by(|x| get(x, "bytes_per_task")), 0),
                    spread(&r.diff("bytes_per_task"), 0),
                    untracked,
                ]);
            }
        }
    }
    out.push('\n');
    out.push_str(&stalled_runs(w, modes, results));
    out
}

/// Which loopscope runs reported stalls: on a loaded machine, polls the OS delayed past the threshold. Such a
/// run also paid for stack captures and the symbolizer's first load, which shows in its figures.
fn stalled_runs(w: Workload, modes: &[Mode], results: &HashMap<(Workload, Mode), Vec<(Sample, Sample)>>) -> String {
    let counts: Vec<String> = modes
        .iter()
        .filter(|m| m.is_loopscope())
        .filter_map(|m| {
            let r = results.get(&(w, *m))?;
            let n = r.iter().filter(|(_, x)| x.get("stall_report_lines").is_some_and(|v| *v > 0.0)).count();
            Some(format!("{} {n} of {}", m.arg(), r.len()))
        })
        .collect();
    if counts.is_empty() {
        return String::new();
    }
    format!("Runs in which loopscope reported a stall: {}.\n\n", counts.join(", "))
}

/// The goals for loopscope at its defaults, each with the measured figure.
fn goals(modes: &[Mode], workloads: &[Workload], results: &HashMap<(Workload, Mode), Vec<(Sample, Sample)>>) -> String {
    let mut out = String::from("Goals (issue 16), loopscope at its defaults, no client:\n\n");
    if !modes.contains(&Mode::Loopscope) {
        out.push_str("- (mode loopscope not run)\n\n");
        return out;
    }
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let series = |w: Workload| results.get(&(w, Mode::Loopscope)).map(|r| Series(r));
    if let Some(r) = series(Workload::Yield).filter(|_| workloads.contains(&Workload::Yield)) {
        let d = median(&r.diff("cpu_ns_per_poll"));
        out.push_str(&format!("- yield storm ≤ +25 ns CPU/poll over bare: +{d:.1} ns, {}\n", verdict(d <= 25.0)));
    }
    if let Some(r) = series(Workload::Spawn).filter(|_| workloads.contains(&Workload::Spawn)) {
        let q = median(&r.ratio("wall_ms"));
        let u = median(&r.mine("untracked_tasks"));
        out.push_str(&format!("- spawn storm ≤ 1.15× bare: {q:.2}×, {}\n", verdict(q <= 1.15)));
        out.push_str(&format!("- 0 untracked tasks in the spawn storm: {u:.0}, {}\n", verdict(u == 0.0)));
    }
    if let Some(r) = series(Workload::Idle).filter(|_| workloads.contains(&Workload::Idle)) {
        let mb = median(&r.diff("fixed_rss_mib")) * 1.048_576;
        out.push_str(&format!("- ≤ 10 MB fixed RSS (probes on): +{mb:.1} MB over bare, {}\n", verdict(mb <= 10.0)));
    }
    out.push('\n');
    out
}
