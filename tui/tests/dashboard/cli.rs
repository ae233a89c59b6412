//! The real `loopscope` binary: bad input gives one clear line and a non-zero exit; the dashboard, in a
//! pseudo-terminal against a real app, shows a stall as it happens, survives the app restarting, and
//! restores the terminal when it quits.

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_loopscope");

/// Runs the binary to completion; returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_one_clear_line(code: i32, stderr: &str, expected: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line, not a panic or a backtrace: {stderr}");
    assert!(stderr.starts_with("loopscope: "), "{stderr}");
    assert!(stderr.contains(expected), "expected {expected:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unreachable_address_is_one_line_and_exit_1() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let (code, err) = run(&["top", "--no-wait", &format!("127.0.0.1:{port}")]);
    assert_one_clear_line(code, &err, "nothing is listening there");
    assert_eq!(code, 1);
}

#[test]
fn record_needs_its_file_and_keeps_an_existing_one() {
    // The address alone used to be taken for the file name.
    let out = Command::new(BIN).args(["record", "127.0.0.1:7702"]).output().expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--output <FILE>"), "{err}");
    assert!(!std::path::Path::new("127.0.0.1:7702").exists(), "a file named after the address was created");

    let app = App::start("127.0.0.1:0");
    let dir = std::env::temp_dir().join(format!("loopscope-record-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let existing = dir.join("incident.lsrec");
    std::fs::write(&existing, b"the only copy").expect("write");
    let (code, err) = run(&["record", &app.addr, "-o", existing.to_str().expect("utf-8"), "--duration", "1s"]);
    assert_one_clear_line(code, &err, "already exists; pass --force to overwrite it");
    assert_eq!(std::fs::read(&existing).expect("read"), b"the only copy", "the existing file was touched");
    let (code, err) = run(&["record", &app.addr, "-o", dir.to_str().expect("utf-8")]);
    assert_one_clear_line(code, &err, "is a directory");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_are_one_line_without_repeated_clauses() {
    let (code, err) = run(&["replay", "/nonexistent/loopscope.lsrec"]);
    assert_one_clear_line(code, &err, "cannot replay /nonexistent/loopscope.lsrec");
    assert_eq!(err.matches("I/O error").count(), 1, "a clause printed twice: {err}");
    assert_eq!(err.matches("No such file").count(), 1, "a clause printed twice: {err}");

    // A bad agent setting names the variable and its value, in words (not Rust's Debug syntax).
    let out = Command::new(BIN)
        .args(["demo", "--no-ui", "--seconds", "1"])
        .env("LOOPSCOPE_STALL_THRESHOLD", "banana")
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_one_clear_line(out.status.code().unwrap_or(-1), &err, "LOOPSCOPE_STALL_THRESHOLD=\"banana\" is not valid");
    assert!(!err.contains("InvalidEnv"), "{err}");
}

#[test]
fn a_recording_cut_after_its_header_is_described_as_cut() {
    let fixture = std::fs::read(super::fixture()).expect("fixture");
    let dir = std::env::temp_dir().join(format!("loopscope-cut-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    // The header alone: the reader reads it whole and then finds no record.
    let header_len = (1..fixture.len())
        .find(|&n| {
            let r = loopscope_wire::record::RecordingReader::new(&fixture[..n]);
            r.is_ok()
        })
        .expect("a header length");
    let cut = dir.join("header-only.lsrec");
    std::fs::write(&cut, &fixture[..header_len]).expect("write");
    let (code, err) = run(&["replay", cut.to_str().expect("utf-8 path")]);
    assert_one_clear_line(code, &err, "ends after its header");
    assert!(err.contains("cut short"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_speaking_another_protocol_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let (code, err) = run(&["top", &addr.to_string()]);
    assert_one_clear_line(code, &err, "is not a loopscope agent: it answered like an HTTP server");
    let _ = server.join();
}

#[test]
fn refresh_is_checked() {
    let (code, err) = run(&["replay", "--refresh", "10ms", "x.lsrec"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("10ms is outside 100ms..60s"), "{err}");
}

#[test]
fn a_bad_address_and_a_non_recording_are_one_line() {
    let (code, err) = run(&["top", "example.com:80"]);
    assert_one_clear_line(code, &err, "invalid loopscope address");
    let (code, err) = run(&["replay", "Cargo.toml"]);
    assert_one_clear_line(code, &err, "not a loopscope recording");
}

#[test]
fn a_truncated_recording_is_refused_with_where_it_breaks() {
    let fixture = std::fs::read(super::fixture()).expect("fixture");
    let dir = std::env::temp_dir().join(format!("loopscope-tui-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let cut = dir.join("truncated.lsrec");
    std::fs::write(&cut, &fixture[..fixture.len() * 2 / 3]).expect("write");
    let (code, err) = run(&["replay", cut.to_str().expect("utf-8 path")]);
    assert_one_clear_line(code, &err, "the recording is truncated in record");
    assert!(err.contains("--allow-damaged"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_without_a_terminal_prints_each_stall_with_its_culprit() {
    use std::io::BufRead as _;
    let mut child = Command::new(BIN)
        .args(["demo", "--no-ui", "--seconds", "120"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The demo's handlers block now and then (about one stall every two or three seconds); a stall whose
    // report names the handler's own function must arrive well within this deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let named = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains("in loopscope_tui::demo::");
                lines.push(line.clone());
                if found {
                    break Some(line);
                }
            }
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("app serving on 127.0.0.1:"), "the banner names the addresses: {stderr}");
    let named = named.unwrap_or_else(|| panic!("no stall named its culprit within 60s; stdout: {lines:#?}"));
    for line in &lines {
        assert!(line.contains(" stall #"), "every stdout line is a stall report: {line}");
        assert!(line.contains("spawned at tui/src/demo.rs:"), "with the handler's spawn location: {line}");
    }
    assert!(
        ["CPU-bound", "blocked in syscall", "waiting on a lock"].iter().any(|c| named.contains(c)),
        "the report classifies the stall: {named}"
    );
}

/// A real app in this process: the agent serving on `addr`, and a task that blocks its worker with
/// `std::thread::sleep` every half second.
struct App {
    runtime: Option<tokio::runtime::Runtime>,
    addr: String,
}

#[inline(never)]
fn e2e_blocking_sleep() {
    std::thread::sleep(Duration::from_millis(400));
}

impl App {
    fn start(addr: &str) -> App {
        App::try_start(addr).expect("agent installs")
    }

    /// Starts the app again on `addr`, as soon as the previous one's listener has let go of the port (its
    /// server thread closes it shortly after the runtime shuts down).
    fn restart(addr: &str) -> App {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match App::try_start(addr) {
                Ok(app) => return app,
                Err(e) if Instant::now() < deadline => {
                    assert!(e.to_string().contains("in use"), "{e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("the app could not restart on {addr}: {e}"),
            }
        }
    }

    fn try_start(addr: &str) -> Result<App, loopscope::Error> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2).enable_all();
        let agent = loopscope::Agent::builder()
            .serve(addr)
            .ignore_env()
            .sample_interval(Duration::from_millis(100))
            .install(&mut builder)?;
        let runtime = builder.build().expect("runtime");
        let addr = agent.serve_addr().expect("agent serves").to_string();
        runtime.spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = tokio::spawn(async { e2e_blocking_sleep() }).await;
            }
        });
        Ok(App { runtime: Some(runtime), addr })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// The dashboard in a pseudo-terminal, its screen parsed by a terminal emulator.
struct Dashboard {
    screen: Arc<Mutex<vt100::Parser>>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Option<Box<dyn Write + Send>>,
    /// Asks the reader thread to close its end of the terminal (the pty master) after its next read.
    hang_up: Arc<AtomicBool>,
    /// The reader thread, which owns the pty master; when it ends, the master is closed.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Dashboard {
    fn start(args: &[&str], cols: u16, rows: u16) -> Dashboard {
        Dashboard::start_with(args, cols, rows, true)
    }

    /// `controlling`: whether the pty becomes the process's controlling terminal, so that closing it sends
    /// SIGHUP as a real terminal does; without it, closing it only makes every read return end-of-file.
    fn start_with(args: &[&str], cols: u16, rows: u16, controlling: bool) -> Dashboard {
        let pty = native_pty_system()
            .openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(BIN);
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        cmd.set_controlling_tty(controlling);
        let child = pty.slave.spawn_command(cmd).expect("spawn the dashboard");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("reader");
        let writer = pty.master.take_writer().expect("writer");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let feed = screen.clone();
        let hang_up = Arc::new(AtomicBool::new(false));
        let closing = hang_up.clone();
        let reader = std::thread::spawn(move || {
            // Keep the master alive as long as we read from it; returning closes both of its descriptors.
            let _master = pty.master;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                // The dashboard writes at least every 200 ms (each frame hides the cursor), so this read
                // returns soon after a hang-up is asked for.
                if n == 0 || closing.load(Ordering::Relaxed) {
                    break;
                }
                feed.lock().expect("parser").process(&buf[..n]);
            }
        });
        Dashboard { screen, child, writer: Some(writer), hang_up, reader: Some(reader) }
    }

    fn text(&self) -> String {
        self.screen.lock().expect("parser").screen().contents()
    }

    /// Waits until the screen contains `needle`, failing with the screen after `within`.
    fn wait_for(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "{needle:?} did not appear within {within:?}; screen:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn keys(&mut self, keys: &str) {
        let w = self.writer.as_mut().expect("the terminal is open");
        w.write_all(keys.as_bytes()).expect("type");
        w.flush().expect("flush");
    }

    /// Closes the terminal, as closing its window does: every descriptor of the pty master is closed.
    fn close_terminal(&mut self) {
        self.hang_up.store(true, Ordering::Relaxed);
        self.writer = None;
        let reader = self.reader.take().expect("not closed yet");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !reader.is_finished() {
            assert!(Instant::now() < deadline, "the pty reader did not let go of the terminal");
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = reader.join();
    }

    /// Waits until everything the process wrote has reached the screen: the reader ends when the process
    /// has exited and the terminal's other end is closed.
    fn wait_for_output_end(&mut self) {
        let reader = self.reader.take().expect("still reading");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !reader.is_finished() {
            assert!(Instant::now() < deadline, "the terminal output did not end after the process exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = reader.join();
    }

    /// Waits for the process to exit; fails if it is still running after `within`.
    fn exits_within(&mut self, within: Duration, what: &str) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: the process was still running after {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn the_dashboard_shows_a_stall_live_reconnects_and_restores_the_terminal() {
    let app = App::start("127.0.0.1:0");
    let addr = app.addr.clone();
    let mut ui = Dashboard::start(&["top", &addr], 100, 30);
    let screen = ui.wait_for("STALLED", Duration::from_secs(15));
    assert!(screen.contains("Workers"), "{screen}");

    // The stall log names the blocking task's spawn location (this file).
    ui.keys("3");
    ui.wait_for("cli.rs", Duration::from_secs(10));

    // The app goes away: the dashboard says so and keeps the last data.
    drop(app);
    let screen = ui.wait_for("disconnected", Duration::from_secs(10));
    assert!(screen.contains("cli.rs"), "the last data stays on screen:\n{screen}");

    // The app comes back on the same address: the dashboard reconnects by itself.
    let _again = App::restart(&addr);
    ui.wait_for("● live", Duration::from_secs(10));

    // Quit restores the terminal: the alternate screen is left and the process exits cleanly.
    ui.keys("q");
    let status = ui.exits_within(Duration::from_secs(5), "q");
    assert!(status.success(), "{status:?}");
    ui.wait_for_output_end();
    let parser = ui.screen.lock().expect("parser");
    assert!(!parser.screen().alternate_screen(), "the terminal was left on the alternate screen");
    assert!(!parser.screen().hide_cursor(), "the cursor was left hidden");
}

/// Closing the terminal ends the dashboard within a second, whether the kernel also sends SIGHUP (the pty is
/// the controlling terminal) or only makes every read return end-of-file (it is not, as after `nohup`).
#[test]
fn closing_the_terminal_ends_replay_and_top_within_a_second() {
    let fixture = super::fixture();
    let args = ["replay", "--refresh", "2s", fixture.to_str().expect("utf-8 path")];
    let mut replay = Dashboard::start_with(&args, 100, 30, false);
    replay.wait_for("Workers", Duration::from_secs(10));
    replay.wait_for("rates: 2s avg", Duration::from_secs(5));
    replay.close_terminal();
    replay.exits_within(Duration::from_secs(1), "replay, terminal closed (end-of-file, no SIGHUP)");

    let app = App::start("127.0.0.1:0");
    let mut top = Dashboard::start(&["top", &app.addr], 100, 30);
    top.wait_for("● live", Duration::from_secs(10));
    top.close_terminal();
    top.exits_within(Duration::from_secs(1), "top, terminal closed (SIGHUP and end-of-file)");
}

/// An orphaned demo does not keep its server and load generator running: they live in the process, and the
/// process is gone within a second of its terminal, after which the demo's agent port refuses connections.
#[test]
fn closing_the_terminal_stops_the_demo_within_a_second() {
    let mut demo = Dashboard::start(&["demo"], 120, 30);
    let screen = demo.wait_for("● live", Duration::from_secs(20));
    let addr = screen
        .split("demo agent ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the tab bar names the demo's agent address:\n{screen}"));
    demo.close_terminal();
    demo.exits_within(Duration::from_secs(1), "demo, terminal closed");
    let refused = std::net::TcpStream::connect_timeout(&addr.parse().expect("an address"), Duration::from_secs(1));
    assert!(refused.is_err(), "the demo's agent still serves on {addr} after the demo exited");
}

/// SIGTERM and SIGINT end the dashboard (it restores the terminal on the way out).
#[test]
fn sigterm_and_sigint_end_the_dashboard() {
    let fixture = super::fixture();
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut ui = Dashboard::start(&["replay", fixture.to_str().expect("utf-8 path")], 100, 30);
        ui.wait_for("Workers", Duration::from_secs(10));
        let pid = ui.child.process_id().expect("a pid");
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid fits")).expect("non-zero pid");
        rustix::process::kill_process(pid, sig).expect("signal sent");
        ui.exits_within(Duration::from_secs(1), &format!("{sig:?}"));
        ui.wait_for_output_end();
        let parser = ui.screen.lock().expect("parser");
        assert!(!parser.screen().alternate_screen(), "{sig:?}: the terminal was left on the alternate screen");
    }
}

/// `top` started before the app waits for it, as tokio-console does, and shows the app once it is up.
#[test]
fn top_waits_for_the_app_to_start() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let mut ui = Dashboard::start(&["top", &addr], 100, 30);
    ui.wait_for("Waiting for the app at", Duration::from_secs(10));
    let _app = App::restart(&addr);
    ui.wait_for("● live", Duration::from_secs(10));
    ui.wait_for("Workers", Duration::from_secs(10));
    ui.keys("q");
    assert!(ui.exits_within(Duration::from_secs(5), "q").success());
}
