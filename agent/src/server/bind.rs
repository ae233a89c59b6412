//! Binding the listening socket: TCP, or a private Unix socket that replaces only a stale file of its own.

use super::conn::Conn;
use super::state::ServeError;
use loopscope_wire::proto::ServeAddr;
use std::io::{self};
use std::net::TcpListener;
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::*};

pub(super) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

impl Listener {
    pub(super) fn accept(&self) -> io::Result<(Conn, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                s.set_nonblocking(false)?;
                // Frames go out whole (one writev each); small ones (pongs, stalls) should not wait for Nagle.
                let _ = s.set_nodelay(true);
                Ok((Conn::Tcp(s), peer.to_string()))
            }
            #[cfg(unix)]
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok((Conn::Unix(s), "unix socket peer".to_string()))
            }
        }
    }
}

pub(super) type Bound = (Listener, ServeAddr, Option<(PathBuf, (u64, u64))>);

pub(super) fn bind(addr: &ServeAddr) -> Result<Bound, ServeError> {
    let bind_err = |source| ServeError::Bind { addr: addr.clone(), source };
    match addr {
        ServeAddr::Tcp(sa) => {
            let l = TcpListener::bind(sa).map_err(bind_err)?;
            l.set_nonblocking(true).map_err(bind_err)?;
            let local = l.local_addr().map_err(bind_err)?;
            Ok((Listener::Tcp(l), ServeAddr::Tcp(local), None))
        }
        #[cfg(unix)]
        ServeAddr::Unix(path) => {
            let (l, id) = bind_unix(path)?;
            l.set_nonblocking(true).map_err(bind_err)?;
            Ok((Listener::Unix(l), addr.clone(), Some((path.clone(), id))))
        }
        #[cfg(not(unix))]
        ServeAddr::Unix(_) => Err(bind_err(io::Error::new(io::ErrorKind::Unsupported, "Unix sockets need a Unix OS"))),
    }
}

/// Binds a Unix socket at `path` that only this user can connect to (mode 0600).
///
/// A socket file left by a dead process is replaced; one that a live process still serves is an error, and
/// so is a path that is not a socket (it is not ours to delete). To leave no moment where the socket exists
/// with looser permissions, it is bound inside a fresh private (0700) directory, restricted to 0600, then
/// renamed into place. Returns the listener and the file's (device, inode), to remove only our own file later.
#[cfg(unix)]
pub(super) fn bind_unix(path: &Path) -> Result<(UnixListener, (u64, u64)), ServeError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    let addr = ServeAddr::Unix(path.to_path_buf());
    let bind_err = |source| ServeError::Bind { addr: addr.clone(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotASocket { path: path.to_path_buf() });
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::SocketInUse { path: path.to_path_buf() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::debug!(target: "loopscope::server", "replacing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Err(e) => return Err(bind_err(e)),
        }
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let private = parent.join(format!(".loopscope-{}-{}", std::process::id(), NEXT.fetch_add(1, Relaxed)));
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(bind_err)?;
    let staged = private.join("s");
    let result = (|| {
        let l = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        let meta = std::fs::metadata(path)?;
        Ok((l, (meta.dev(), meta.ino())))
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result.map_err(bind_err)
}

#[cfg(unix)]
pub(super) fn remove_socket_file(path: &Path, id: (u64, u64)) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && (meta.dev(), meta.ino()) == id
    {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(not(unix))]
pub(super) fn remove_socket_file(_: &Path, _: (u64, u64)) {}
