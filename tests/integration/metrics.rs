//! `/metrics` end to end: an app with the agent serving Prometheus metrics on an ephemeral port, scraped over
//! real sockets on 127.0.0.1 — parsed with an independent parser, flooded with clients that misbehave, and
//! scraped by a real Prometheus server when one is installed.

use crate::support::*;
use loopscope::AgentBuilder;
use prometheus_parse::{Scrape, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn metrics_agent() -> AgentBuilder {
    agent().metrics_addr("127.0.0.1:0").sample_interval(ms(50)).stall_threshold(ms(20))
}

/// One HTTP exchange: sends `request` whole, returns the status code, the head and the body.
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    try_exchange(addr, request).unwrap_or_else(|e| panic!("no whole response before the deadline: {e}"))
}

fn try_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String, String)> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(DEADLINE))?;
    conn.write_all(request)?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {head}"));
    Ok((code, head.to_string(), body.to_string()))
}

fn scrape_with(addr: SocketAddr, accept: &str) -> (String, String) {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n");
    let (code, head, body) = exchange(addr, req.as_bytes());
    assert_eq!(code, 200, "{head}\n{body}");
    (head, body)
}

/// A scrape in the Prometheus text format, parsed by `prometheus-parse`.
fn scrape(addr: SocketAddr) -> Scrape {
    let (_, body) = scrape_with(addr, "text/plain");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse reads the exposition")
}

/// The values of `label` across the series of `name`.
fn labels_of(s: &Scrape, name: &str, label: &str) -> BTreeSet<String> {
    s.samples.iter().filter(|x| x.metric == name).filter_map(|x| x.labels.get(label).map(str::to_string)).collect()
}

fn counter_sum(s: &Scrape, name: &str) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .map(|x| match x.value {
            Value::Counter(v) => v,
            ref other => panic!("{name} should be a counter, is {other:?}"),
        })
        .sum()
}

/// Blocks a worker with `std::thread::sleep` from a task spawned here; each caller's line is a location.
#[track_caller]
fn spawn_stall(rt: &tokio::runtime::Runtime, d: Duration) -> tokio::task::JoinHandle<()> {
    let _guard = rt.enter();
    tokio::spawn(async move { std::thread::sleep(d) })
}

#[test]
fn exposition_has_prometheus_names_types_and_labels() {
    let (rt, agent) = multi_thread(2, metrics_agent().name("api"));
    let addr = agent.metrics_addr().expect("metrics are served");
    assert!(addr.ip().is_loopback());
    rt.block_on(spawn_stall(&rt, ms(120))).unwrap();
    let mut s = scrape(addr);
    wait_until("the stall to be counted in /metrics", || {
        s = scrape(addr);
        counter_sum(&s, "loopscope_stalls_total") >= 1.0
    });

    let stall = s.samples.iter().find(|x| x.metric == "loopscope_stalls_total").unwrap();
    assert_eq!(stall.labels.get("kind"), Some("worker_blocked"));
    let class = stall.labels.get("classification").unwrap();
    assert!(
        ["syscall", "cpu_bound", "lock_wait", "page_fault", "preempted", "unknown"].contains(&class),
        "classification label {class}"
    );
    let location = stall.labels.get("location").unwrap();
    assert!(location.contains("metrics.rs:"), "the stall's spawn location: {location}");

    let histogram = |name: &str| -> Vec<(f64, f64)> {
        let x = s.samples.iter().find(|x| x.metric == name).unwrap_or_else(|| panic!("{name} missing"));
        match &x.value {
            Value::Histogram(b) => b.iter().map(|b| (b.less_than, b.count)).collect(),
            other => panic!("{name} should be a histogram, is {other:?}"),
        }
    };
    let stall_buckets = histogram("loopscope_stall_duration_seconds");
    let inf = stall_buckets.last().unwrap();
    assert!(inf.0.is_infinite() && inf.1 >= 1.0, "{stall_buckets:?}");
    // The 120 ms stall lies above the 67 ms bound, and (with whatever a loaded machine adds to the sleep)
    // below the 1.07 s one.
    let below = |b: &[(f64, f64)], le: f64| b.iter().rev().find(|(l, _)| *l <= le).map_or(0.0, |x| x.1);
    assert_eq!(below(&stall_buckets, 0.06), 0.0, "{stall_buckets:?}");
    assert!(below(&stall_buckets, 1.1) >= 1.0, "{stall_buckets:?}");
    let poll_buckets = histogram("loopscope_poll_duration_seconds");
    assert!(poll_buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "cumulative: {poll_buckets:?}");
    assert!(counter_sum(&s, "loopscope_task_polls_total") >= 1.0);

    let workers = labels_of(&s, "loopscope_worker_busy_ratio", "worker");
    assert_eq!(workers, BTreeSet::from(["0".into(), "1".into()]));
    for name in ["loopscope_worker_local_queue_depth", "loopscope_worker_busy_seconds_total"] {
        assert_eq!(labels_of(&s, name, "worker"), workers, "{name}");
    }
    for x in s.samples.iter().filter(|x| x.metric == "loopscope_worker_busy_ratio") {
        let Value::Gauge(v) = x.value else { panic!("busy ratio is a gauge: {x:?}") };
        assert!((0.0..=1.0).contains(&v), "{v}");
    }
    for name in ["loopscope_global_queue_depth", "loopscope_blocking_queue_depth", "loopscope_stalled_workers"] {
        let x = s.samples.iter().find(|x| x.metric == name).unwrap_or_else(|| panic!("{name} missing"));
        assert!(matches!(x.value, Value::Gauge(_)), "{name}: {x:?}");
    }
    wait_until("the lag probes' histograms", || {
        s = scrape(addr);
        labels_of(&s, "loopscope_scheduling_delay_seconds", "probe")
            == BTreeSet::from(["first_poll".into(), "timer".into()])
    });
    assert_eq!(
        labels_of(&s, "loopscope_dropped_total", "what"),
        [
            "stall_details",
            "stall_events",
            "stream_frames",
            "untracked_locations",
            "untracked_tasks",
            "watchdog_messages"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let build = s.samples.iter().find(|x| x.metric == "loopscope_build_info").unwrap();
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    let runtime = s.samples.iter().find(|x| x.metric == "loopscope_runtime_info").unwrap();
    assert_eq!((runtime.labels.get("name"), runtime.labels.get("flavor")), (Some("api"), Some("multi_thread")));
    for name in s.docs.keys() {
        assert!(name.starts_with("loopscope_"), "{name}");
    }

    // Prometheus asks for OpenMetrics first, and gets it.
    let (head, body) = scrape_with(addr, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(body.contains("# TYPE loopscope_stalls counter") && body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# UNIT loopscope_stall_duration_seconds seconds"), "{body}");
}

/// The `+Inf` bucket of a histogram: how many values it holds.
fn histogram_total(s: &Scrape, name: &str) -> f64 {
    match s.samples.iter().find(|x| x.metric == name).map(|x| &x.value) {
        Some(Value::Histogram(b)) => b.last().map_or(0.0, |b| b.count),
        other => panic!("{name} should be a histogram, is {other:?}"),
    }
}

#[test]
fn metrics_stay_whole_as_stream_clients_come_and_go() {
    // Without a stream client the metrics get a totals-only scan; with one, the ticks the client gets. The
    // counters must carry on across the switch, never go back.
    let (rt, agent) = multi_thread(2, metrics_agent().serve("127.0.0.1:0"));
    let addr = agent.metrics_addr().unwrap();
    rt.block_on(spawn_stall(&rt, ms(60))).unwrap();
    let mut s = scrape(addr);
    wait_until("the first stall, with no client", || {
        s = scrape(addr);
        counter_sum(&s, "loopscope_stalls_total") >= 1.0
    });
    let polls = counter_sum(&s, "loopscope_task_polls_total");
    let timed = histogram_total(&s, "loopscope_poll_duration_seconds");
    assert!(polls >= 1.0 && timed >= 1.0, "{polls} polls, {timed} in the histogram");

    let client = loopscope::wire::client::Client::connect(&agent.serve_addr().unwrap(), ms(2000)).unwrap();
    wait_until("the stream client to register", || agent.stream_clients() == 1);
    rt.block_on(spawn_stall(&rt, ms(60))).unwrap();
    wait_until("the second stall, with a client listening", || {
        s = scrape(addr);
        counter_sum(&s, "loopscope_stalls_total") >= 2.0
    });
    assert!(counter_sum(&s, "loopscope_task_polls_total") >= polls + 1.0);
    assert!(histogram_total(&s, "loopscope_poll_duration_seconds") >= timed + 1.0);
    assert_eq!(labels_of(&s, "loopscope_worker_busy_ratio", "worker").len(), 2);

    drop(client);
    wait_until("the stream client to leave", || agent.stream_clients() == 0);
    let (polls, timed) =
        (counter_sum(&s, "loopscope_task_polls_total"), histogram_total(&s, "loopscope_poll_duration_seconds"));
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    wait_until("the polls counted on, with the client gone", || {
        s = scrape(addr);
        counter_sum(&s, "loopscope_task_polls_total") > polls
            && histogram_total(&s, "loopscope_poll_duration_seconds") > timed
    });
}

#[test]
fn locations_past_the_cap_count_as_other() {
    let (rt, agent) = multi_thread(2, metrics_agent().metrics_max_locations(1));
    let addr = agent.metrics_addr().unwrap();
    rt.block_on(spawn_stall(&rt, ms(60))).unwrap();
    rt.block_on(spawn_stall(&rt, ms(60))).unwrap();
    rt.block_on(spawn_stall(&rt, ms(60))).unwrap();
    let mut s = scrape(addr);
    wait_until("three stalls counted", || {
        s = scrape(addr);
        counter_sum(&s, "loopscope_stalls_total") >= 3.0
    });
    let mut by_location = std::collections::BTreeMap::<String, f64>::new();
    for x in s.samples.iter().filter(|x| x.metric == "loopscope_stalls_total") {
        let Value::Counter(v) = x.value else { unreachable!() };
        *by_location.entry(x.labels.get("location").unwrap().to_string()).or_default() += v;
    }
    assert_eq!(by_location.len(), 2, "one location of its own, the rest under other: {by_location:?}");
    assert_eq!(by_location.get("other"), Some(&2.0), "{by_location:?}");
}

#[test]
fn bad_requests_get_clear_answers() {
    let (_rt, agent) = current_thread(metrics_agent());
    let addr = agent.metrics_addr().unwrap();
    // Before the runtime's first poll, the exposition is already whole: every histogram has its +Inf.
    let (_, body) = scrape_with(addr, "application/openmetrics-text");
    for h in ["loopscope_poll_duration_seconds", "loopscope_stall_duration_seconds"] {
        assert!(body.contains(&format!("{h}_bucket{{le=\"+Inf\"}} 0")), "{h}: {body}");
    }
    let status = |req: &[u8]| exchange(addr, req).0;
    assert_eq!(status(b"GET /nope HTTP/1.1\r\n\r\n"), 404);
    assert_eq!(status(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 405);
    assert_eq!(status(b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n"), 400);
    assert_eq!(status(b"GET /metrics\r\n\r\n"), 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n\r\n", "j".repeat(20_000));
    assert_eq!(status(huge.as_bytes()), 431);
    let (code, head, body) = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(code == 200 && body.is_empty() && head.contains("Content-Length: "), "{head}");
}

#[test]
fn silent_and_junk_clients_block_neither_the_app_nor_other_scrapes() {
    let (rt, agent) = multi_thread(2, metrics_agent());
    let addr = agent.metrics_addr().unwrap();
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });

    // Connections that send nothing, and one stuck halfway through its request line.
    let mut silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /met").unwrap();
    silent.push(half);
    // A junk client: answered with 400, while the silent ones still hang on.
    assert_eq!(exchange(addr, b"\x00\x01\x02 junk \xff\r\n\r\n").0, 400);

    // Other scrapes are answered at once, and the app runs on.
    let t = Instant::now();
    let s = scrape(addr);
    assert!(s.samples.iter().any(|x| x.metric == "loopscope_task_polls_total"));
    // Behind the silent clients it would wait for their 5 s deadline; a loaded machine may add a little.
    assert!(t.elapsed() < Duration::from_secs(4), "a scrape waited {:?} behind silent clients", t.elapsed());
    let t = Instant::now();
    let n = rt.block_on(async {
        tokio::spawn(async {
            tokio::time::sleep(ms(10)).await;
            42
        })
        .await
        .unwrap()
    });
    assert_eq!(n, 42);
    assert!(t.elapsed() < Duration::from_secs(2), "the app waited {:?}", t.elapsed());

    // A flood past the connection limit is refused at once rather than queued or threaded.
    silent.extend((0..8).map(|_| TcpStream::connect(addr).unwrap()));
    wait_until("a scrape past the connection limit to be refused with 503", || {
        // The refusal doesn't wait for the request; a request that arrives after it may reset the
        // connection before the 503 is read, so a reset is "not seen yet", not a failure.
        try_exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").is_ok_and(|(code, ..)| code == 503)
    });
    // The silent clients get a 408 at their deadline (or leave); scrapes then succeed again.
    drop(silent);
    wait_until("scrapes to be served again once the silent clients left", || {
        exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").0 == 200
    });
}

#[test]
fn a_silent_client_times_out_with_408() {
    let (_rt, agent) = current_thread(metrics_agent());
    let addr = agent.metrics_addr().unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let t = Instant::now();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(t.elapsed() < ms(8000), "the 5 s deadline took {:?}", t.elapsed());
}

#[test]
fn malformed_metrics_addr_names_the_variable() {
    let out = rerun("lifecycle::child_install_with_env", &[("LOOPSCOPE_METRICS_ADDR", "127.0.0.1:ninety")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("LOOPSCOPE_METRICS_ADDR=\"127.0.0.1:ninety\" is not valid"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9464"), "the message should show an accepted form: {stdout}");

    let err = agent().metrics_addr("example.com:9464").install(&mut tokio::runtime::Builder::new_current_thread());
    let err = err.unwrap_err().to_string();
    assert!(err.contains("metrics_addr") && err.contains("example.com:9464"), "{err}");

    // An address that is taken fails `install` and says which.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = agent()
        .metrics_addr(&format!("127.0.0.1:{port}"))
        .install(&mut tokio::runtime::Builder::new_current_thread())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("metrics"), "{err}");
}

#[test]
fn the_port_is_released_when_the_runtime_shuts_down() {
    let (rt, agent) = current_thread(metrics_agent());
    let addr = agent.metrics_addr().unwrap();
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    assert_eq!(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").0, 200);
    drop(rt);
    wait_until("the metrics port to be free again", || std::net::TcpListener::bind(addr).is_ok());
    // And an agent whose runtime never ran releases it when the agent goes.
    let (rt, agent) = current_thread(metrics_agent());
    let addr = agent.metrics_addr().unwrap();
    drop((rt, agent));
    wait_until("the never-started agent's port to be free", || std::net::TcpListener::bind(addr).is_ok());
}

// ---- a real Prometheus server ----

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

/// `<target>/debug`, from this test binary's path (`<target>/debug/deps/integration-<hash>`).
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(std::path::Path::parent).unwrap().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples (run the whole suite, or `cargo build --examples` first)",
        path.display()
    );
    path
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asks Prometheus' HTTP API for an instant query; the `data.result` array.
fn query(prometheus: SocketAddr, promql: &str) -> Vec<serde_json::Value> {
    let req = format!("GET /api/v1/query?query={} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", percent_encode(promql));
    let (code, _, body) = exchange(prometheus, req.as_bytes());
    if code != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(series: &serde_json::Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn a_real_prometheus_scrapes_the_stalls() {
    let Some(prometheus) = on_path("prometheus") else {
        if std::env::var("LOOPSCOPE_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!("LOOPSCOPE_REQUIRE_PROMETHEUS=1 but `prometheus` is not on PATH (apt-get install prometheus)");
        }
        // Straight to stderr, past the test harness' capture, so the skip is seen even when the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED metrics::a_real_prometheus_scrapes_the_stalls: `prometheus` is not on PATH. Install it \
             (Debian: apt-get install prometheus) to run it; .ci/run does, and sets LOOPSCOPE_REQUIRE_PROMETHEUS=1.\n"
        );
        return;
    };
    let app_port = free_port();
    let app = Command::new(example("blocking_sleep"))
        .args(["--seconds", "120", "--sleep-ms", "60"])
        .env("LOOPSCOPE_METRICS_ADDR", format!("127.0.0.1:{app_port}"))
        .env("LOOPSCOPE_ADDR", "off")
        .env("LOOPSCOPE_REPORT", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the blocking_sleep example");
    let _app = Killed(app);

    let dir = std::env::temp_dir().join(format!("loopscope-prometheus-{}-{}", std::process::id(), app_port));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: loopscope\n    static_configs:\n      - targets: ['127.0.0.1:{app_port}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let server = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start prometheus");
    let mut server = Killed(server);
    let prom: SocketAddr = ([127, 0, 0, 1], prom_port).into();
    let deadline = Duration::from_secs(60);

    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until_within(deadline, "Prometheus to scrape the app (up == 1)", || {
            TcpStream::connect(prom).is_ok()
                && query(prom, r#"up{job="loopscope"}"#).first().is_some_and(|s| value(s) == 1.0)
        });
        wait_until_within(deadline, "loopscope_stalls_total > 0 in Prometheus", || {
            query(prom, "sum(loopscope_stalls_total) > 0").first().is_some_and(|s| value(s) > 0.0)
        });
        let stalls = query(prom, "loopscope_stalls_total");
        assert!(
            stalls.iter().any(|s| s["metric"]["location"].as_str().is_some_and(|l| l.contains("blocking_sleep.rs"))
                && s["metric"]["kind"] == "worker_blocked"),
            "{stalls:?}"
        );
        let buckets = query(prom, "loopscope_stall_duration_seconds_bucket");
        let les: BTreeSet<&str> = buckets.iter().filter_map(|b| b["metric"]["le"].as_str()).collect();
        assert!(les.contains("+Inf") && les.len() > 10, "{les:?}");
        assert!(query(prom, r#"loopscope_stall_duration_seconds_bucket{le="+Inf"}"#).iter().any(|b| value(b) > 0.0));
        // The README's alert and panel queries work as written.
        wait_until_within(deadline, "the README's alert expression to fire", || {
            !query(prom, "increase(loopscope_stalls_total[5m]) > 0").is_empty()
        });
        wait_until_within(deadline, "the README's p99 stall duration panel", || {
            query(prom, "histogram_quantile(0.99, sum by (le) (rate(loopscope_stall_duration_seconds_bucket[1m])))")
                .first()
                .is_some_and(|s| value(s) > 0.03 && value(s) < 1.0)
        });
        assert!(!query(prom, "loopscope_poll_duration_seconds_bucket").is_empty());
    }));
    if let Err(e) = ok {
        let _ = server.0.kill();
        let mut log = String::new();
        if let Some(mut err) = server.0.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        eprintln!("prometheus' log:\n{log}");
        let _ = std::fs::remove_dir_all(&dir);
        std::panic::resume_unwind(e);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
