//! The `/metrics` HTTP responder: an acceptor thread (`loopscope-metrics`) on a std `TcpListener`, and one
//! short-lived thread per scrape, at most [`MAX_CONNECTIONS`] at once.
//!
//! Why not a crate: hyper (and everything built on it) needs a tokio runtime, and this one must never run
//! on the app's; a second runtime for one GET is a lot of threads and code. tiny_http, the small blocking
//! candidate, restarts its idle timeout at every byte read and does not let us bound a request's total
//! time, so a client trickling bytes could hold one of its threads for as long as it likes. What a scraper
//! needs is small: one GET, answered and closed. So this serves exactly that, with every resource bounded:
//!
//! * a request must arrive whole within [`REQUEST_DEADLINE`] (else `408`) and its head within
//!   [`MAX_REQUEST_HEAD`] bytes (else `431`); writes time out after [`WRITE_TIMEOUT`];
//! * a request line that isn't HTTP gets `400`, a method other than GET/HEAD `405`, a path other than
//!   `/metrics` `404`; past [`MAX_CONNECTIONS`] concurrent scrapes, `503` at once;
//! * each scrape encodes the exposition the agent thread last published (an `Arc` clone under a lock held
//!   for nanoseconds), so no scrape, however slow, reaches the agent thread, the hooks or the app.
//!
//! It knows nothing of the agent: it serves [`Exposition`]s.

use super::{Exposition, Format, render};
use crate::sync::lock;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Scrapes served at once; more get `503` without a thread. Prometheus scrapes one target at a time.
pub(crate) const MAX_CONNECTIONS: usize = 8;
/// A request head's largest size. A scraper's GET is a few hundred bytes.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client has to send its whole request head, however it trickles it.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long one write may wait for a client that does not read.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape's thread waits, after answering, for the client to close (see `linger`).
const LINGER: Duration = Duration::from_secs(1);
/// How long the acceptor backs off after a failed accept (out of file descriptors, or the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Inner {
    latest: Mutex<Arc<Exposition>>,
    stopping: AtomicBool,
    active: AtomicUsize,
}

/// The running responder. Dropping it stops the acceptor (scrapes in progress finish on their own threads).
#[derive(Debug)]
pub(crate) struct MetricsServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and starts the acceptor thread. Fails when the address can't be bound or the thread
    /// can't start.
    pub(crate) fn start(addr: SocketAddr, first: Exposition) -> io::Result<MetricsServer> {
        // A blocking accept: no wake-ups while nobody scrapes, and no polling delay when someone does. The
        // stop wakes it with a connection of its own (`shutdown`).
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            latest: Mutex::new(Arc::new(first)),
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        let me = inner.clone();
        std::thread::Builder::new().name("loopscope-metrics".into()).spawn(move || accept_loop(&me, &listener))?;
        Ok(MetricsServer { inner, addr })
    }

    /// The bound address (with the real port when bound to port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces what scrapes see. Called by the agent thread.
    pub(crate) fn publish(&self, e: Exposition) {
        *lock(&self.inner.latest) = Arc::new(e);
    }

    /// Stops accepting and releases the port: the acceptor, blocked in `accept`, is woken by a connection
    /// to itself. (Should that connection fail, it stops at the next scrape instead.)
    pub(crate) fn shutdown(&self) {
        if self.inner.stopping.swap(true, AcqRel) {
            return;
        }
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        // Loopback: this connects at once or is refused at once; the bound is for a full backlog (a flood), so
        // that a drop on an app thread never waits long.
        if let Err(e) = TcpStream::connect_timeout(&wake, Duration::from_millis(100)) {
            tracing::debug!(target: "loopscope::metrics", "could not wake the metrics acceptor at {wake}: {e}");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        if inner.stopping.load(Acquire) {
            return;
        }
        match accepted {
            Ok((conn, _)) => {
                if inner.active.load(Acquire) >= MAX_CONNECTIONS {
                    // A flood must not become a thread flood. A fresh socket's send buffer is empty, so this
                    // short answer doesn't wait on the client.
                    let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
                    let _ =
                        respond(&conn, 503, "Service Unavailable", "text/plain", b"too many scrapes at once\n", false);
                    // No waiting here for the request to finish arriving: discard what already has (see
                    // `linger`), and close.
                    if conn.set_nonblocking(true).is_ok() {
                        drain(&conn, MAX_REQUEST_HEAD, None);
                    }
                    continue;
                }
                inner.active.fetch_add(1, AcqRel);
                let me = inner.clone();
                let spawned = std::thread::Builder::new().name("loopscope-metrics-scrape".into()).spawn(move || {
                    // Counted out even if the scrape panics, so that a bug costs one answer, not a slot.
                    struct Active(Arc<Inner>);
                    impl Drop for Active {
                        fn drop(&mut self) {
                            self.0.active.fetch_sub(1, AcqRel);
                        }
                    }
                    let active = Active(me);
                    serve(&active.0, conn);
                });
                if let Err(e) = spawned {
                    inner.active.fetch_sub(1, AcqRel);
                    tracing::debug!(target: "loopscope::metrics", "could not start a scrape thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors, or the like: back off rather than spin.
                tracing::debug!(target: "loopscope::metrics", "accept failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// What a request head asked for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    head_only: bool,
    path: String,
    accept: Option<String>,
}

/// Why a request head was refused: the status to answer with, or no answer (the client went away).
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Status(u16, &'static str, &'static str),
    Gone,
}

fn serve(inner: &Inner, mut conn: TcpStream) {
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    answer(inner, &mut conn);
    linger(&conn);
}

/// After the answer: reads and discards what the client still sends, until it closes (it does once it has
/// read a `Connection: close` answer) or briefly. Closing a socket with unread input sends a reset, and a
/// reset can destroy the answer before the client reads it — a `400` or `431` for a request we stopped
/// reading halfway would then never arrive.
fn linger(conn: &TcpStream) {
    drain(conn, 64 * 1024, Some(Instant::now() + LINGER));
}

/// Reads and discards up to `limit` bytes, until end of input, an error, or `deadline` however the client
/// trickles its bytes. Without a deadline the socket must be non-blocking: what is already there is read.
fn drain(mut conn: &TcpStream, limit: usize, deadline: Option<Instant>) {
    let mut scratch = [0u8; 4096];
    let mut total = 0;
    while total < limit {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
                return;
            }
        }
        match conn.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

fn answer(inner: &Inner, conn: &mut TcpStream) {
    let request = read_head(conn).and_then(|head| parse(&head));
    let (req, fmt) = match request {
        Ok(req) => {
            let fmt = Format::negotiate(req.accept.as_deref());
            (req, fmt)
        }
        Err(Refusal::Gone) => return,
        Err(Refusal::Status(code, reason, why)) => {
            let _ = respond(conn, code, reason, "text/plain; charset=utf-8", why.as_bytes(), false);
            return;
        }
    };
    if req.path != "/metrics" {
        let body = b"not found: loopscope serves its metrics at /metrics\n";
        let _ = respond(conn, 404, "Not Found", "text/plain; charset=utf-8", body, req.head_only);
        return;
    }
    let latest = lock(&inner.latest).clone();
    match render(latest, fmt) {
        Ok(body) => {
            let _ = respond(conn, 200, "OK", fmt.content_type(), body.as_bytes(), req.head_only);
        }
        Err(_) => {
            let _ = respond(conn, 500, "Internal Server Error", "text/plain", b"could not encode the metrics\n", false);
        }
    }
}

/// Reads until the blank line that ends a request head, within the deadline and the size bound.
fn read_head(conn: &mut TcpStream) -> Result<Vec<u8>, Refusal> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Status(408, "Request Timeout", "the request did not arrive in time\n"));
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut chunk) {
            Ok(0) => return Err(Refusal::Gone),
            Ok(n) => {
                // Only the new bytes (and the three before them) can complete the terminator.
                let from = head.len().saturating_sub(3);
                head.extend_from_slice(&chunk[..n]);
                if let Some(end) = find_end(&head[from..]) {
                    head.truncate(from + end);
                    return Ok(head);
                }
                if head.len() > MAX_REQUEST_HEAD {
                    return Err(Refusal::Status(
                        431,
                        "Request Header Fields Too Large",
                        "the request head is larger than 8 KiB\n",
                    ));
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Refusal::Status(408, "Request Timeout", "the request did not arrive in time\n"));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Refusal::Gone),
        }
    }
}

/// Where the head ends (after `\r\n\r\n`, or `\n\n` from lenient clients).
fn find_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fn parse(head: &[u8]) -> Result<Request, Refusal> {
    let bad = |why: &'static str| Refusal::Status(400, "Bad Request", why);
    let text = std::str::from_utf8(head).map_err(|_| bad("the request is not text\n"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected a request line such as `GET /metrics HTTP/1.1`\n"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(bad("expected a request line such as `GET /metrics HTTP/1.1`\n"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Refusal::Status(405, "Method Not Allowed", "only GET and HEAD are served\n")),
    };
    let mut accept = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("a header line has no colon\n"));
        };
        if name.trim().eq_ignore_ascii_case("accept") {
            accept = Some(value.trim().to_string());
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p).to_string();
    Ok(Request { head_only, path, accept })
}

fn respond(
    mut conn: &TcpStream,
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    conn.write_all(&bytes)?;
    conn.flush()?;
    // Tell the client we're done; it closes its end after reading.
    conn.shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_scrape() {
        let r = parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Request { head_only: false, path: "/metrics".into(), accept: Some("application/openmetrics-text".into()) }
        );
        assert!(parse(b"HEAD / HTTP/1.0\r\n\r\n").unwrap().head_only);
    }

    #[test]
    fn refuses_what_is_not_a_get() {
        let status = |head: &[u8]| match parse(head) {
            Err(Refusal::Status(code, ..)) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"\x16\x03\x01garbage\r\n\r\n"), 400);
        assert_eq!(status(b"GET /metrics\r\n\r\n"), 400);
        assert_eq!(status(b"GET /metrics SMTP/1.0\r\n\r\n"), 400);
        assert_eq!(status(b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n"), 400);
        assert_eq!(status(b"POST /metrics HTTP/1.1\r\n\r\n"), 405);
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
