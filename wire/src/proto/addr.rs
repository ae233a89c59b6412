//! Addresses an agent serves on and clients connect to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// The TCP port an agent listens on by default.
pub const DEFAULT_PORT: u16 = 6670;

/// The address an agent listens on by default: loopback only, so nothing leaves the machine.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6670";

/// Where an agent serves its live stream: a TCP address or a Unix socket.
///
/// Written `127.0.0.1:6670` (or `[::1]:6670`, `localhost:6670`, `:6670`, `6670`) for TCP, and
/// `unix:/path/to.sock` for a Unix socket. See [`ServeAddr::parse`].
///
/// ```
/// use loopscope_wire::proto::ServeAddr;
/// let a: ServeAddr = "unix:/tmp/app.sock".parse().unwrap();
/// assert_eq!(a, ServeAddr::Unix("/tmp/app.sock".into()));
/// assert_eq!(a.to_string(), "unix:/tmp/app.sock");
/// assert_eq!(ServeAddr::default().to_string(), "127.0.0.1:6670");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServeAddr {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl Default for ServeAddr {
    /// `127.0.0.1:6670`.
    fn default() -> Self {
        ServeAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT))
    }
}

/// An address that does not parse. The message says what is accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid loopscope address {input:?}: {reason}; expected HOST:PORT with an IP address (e.g. {DEFAULT_ADDR}), \
         unix:/path/to.sock, or off"
)]
pub struct AddrError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ServeAddr {
    /// Parses an address setting (for example `LOOPSCOPE_SERVE`). `off`, `none`, `false`, `no` and `0` mean
    /// "do not serve" and give `Ok(None)`.
    ///
    /// Host names other than `localhost` are rejected rather than resolved: resolving may block on DNS, and
    /// the agent runs inside the app.
    ///
    /// ```
    /// use loopscope_wire::proto::ServeAddr;
    /// assert_eq!(ServeAddr::parse("off").unwrap(), None);
    /// assert_eq!(ServeAddr::parse("127.0.0.1:6670").unwrap(), Some(ServeAddr::default()));
    /// assert_eq!(ServeAddr::parse(":6670").unwrap(), Some(ServeAddr::default()));
    /// assert!(ServeAddr::parse("unix:").unwrap_err().to_string().contains("empty path"));
    /// assert!(ServeAddr::parse("example.com:80").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Option<ServeAddr>, AddrError> {
        let t = s.trim();
        let err = |reason: &str| AddrError { input: s.to_string(), reason: reason.to_string() };
        match t.to_ascii_lowercase().as_str() {
            "off" | "none" | "false" | "no" | "0" => return Ok(None),
            "" => return Err(err("empty")),
            _ => {}
        }
        if let Some(path) = t.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err("empty path after unix:"));
            }
            return Ok(Some(ServeAddr::Unix(PathBuf::from(path))));
        }
        if let Ok(sa) = SocketAddr::from_str(t) {
            return Ok(Some(ServeAddr::Tcp(sa)));
        }
        let port_only = t.strip_prefix(':').unwrap_or(t);
        if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
            let port = port_only.parse::<u16>().map_err(|_| err("port out of range (1-65535)"))?;
            return Ok(Some(ServeAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))));
        }
        if let Some(port) = t.strip_prefix("localhost:") {
            let port = port.parse::<u16>().map_err(|_| err("bad port after localhost:"))?;
            return Ok(Some(ServeAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))));
        }
        if t.contains('/') {
            return Err(err("looks like a path; write unix:PATH for a Unix socket"));
        }
        if !t.contains(':') {
            return Err(err("missing port"));
        }
        Err(err("not an IP address and port (host names other than localhost are not resolved)"))
    }

    /// Whether only this machine can reach the address: a Unix socket or a loopback IP.
    pub fn is_local(&self) -> bool {
        match self {
            ServeAddr::Tcp(a) => a.ip().is_loopback(),
            ServeAddr::Unix(_) => true,
        }
    }
}

impl FromStr for ServeAddr {
    type Err = AddrError;

    /// Like [`ServeAddr::parse`], but `off` is an error: there is nothing to connect to.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServeAddr::parse(s)?.ok_or_else(|| AddrError { input: s.to_string(), reason: "serving is off".into() })
    }
}

impl fmt::Display for ServeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeAddr::Tcp(a) => write!(f, "{a}"),
            ServeAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (input, shown) in [
            ("127.0.0.1:6670", "127.0.0.1:6670"),
            (" 127.0.0.1:9 ", "127.0.0.1:9"),
            ("[::1]:6670", "[::1]:6670"),
            ("localhost:7000", "127.0.0.1:7000"),
            ("6671", "127.0.0.1:6671"),
            (":0", "127.0.0.1:0"),
            ("0.0.0.0:6670", "0.0.0.0:6670"),
            ("unix:/tmp/a b.sock", "unix:/tmp/a b.sock"),
            ("unix:rel.sock", "unix:rel.sock"),
        ] {
            let a: ServeAddr = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(a.to_string(), shown);
            assert_eq!(a.to_string().parse::<ServeAddr>().unwrap(), a);
        }
        for off in ["off", "OFF", "none", "0", "false"] {
            assert_eq!(ServeAddr::parse(off).unwrap(), None);
            assert!(off.parse::<ServeAddr>().is_err());
        }
        for (bad, why) in [
            ("", "empty"),
            ("unix:", "empty path"),
            ("127.0.0.1", "missing port"),
            ("99999", "out of range"),
            ("/tmp/x.sock", "unix:PATH"),
            ("example.com:80", "not resolved"),
            ("localhost:x", "bad port"),
        ] {
            let e = ServeAddr::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("unix:/path/to.sock"), "{e}");
        }
        assert!(ServeAddr::default().is_local());
        assert!(!"0.0.0.0:1".parse::<ServeAddr>().unwrap().is_local());
    }
}
