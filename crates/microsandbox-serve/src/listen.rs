//! Where the server listens: a unix socket (the default,
//! `$MSB_HOME/serve.sock`, mode 0600) or a TCP address.
//!
//! A socket is never made where others could reach it before its mode is
//! set, and nothing is unlinked by a name that was only looked at: the
//! socket is bound inside a fresh private directory (0700) beside its
//! place, made 0600 there, then renamed over its name through the parent
//! directory's descriptor (a rename never follows a link, and replaces a
//! stale socket in one step), and the private directory is removed. At
//! stop the socket is unlinked only while the name still holds the inode
//! the server bound.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use microsandbox::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// A TCP address (`127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`).
    Tcp(SocketAddr),
}

impl Listen {
    /// `unix:PATH` or `HOST:PORT` (an IP address and a port; port 0 picks
    /// a free one).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] naming the text.
    pub fn parse(text: &str) -> MicrosandboxResult<Listen> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid(format!("{text:?}: unix: needs a path")));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            invalid(format!(
                "listen address {text:?}: give unix:PATH or HOST:PORT with an IP address \
                 (127.0.0.1:8080, [::1]:8080)"
            ))
        })
    }

    /// The default: `serve.sock` in the home.
    pub fn default_for(home: &Path) -> Listen {
        Listen::Unix(home.join("serve.sock"))
    }
}

fn invalid(message: String) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::InvalidArgument, message)
}

fn io_err(action: &str, path: &Path, e: impl Into<std::io::Error>) -> MicrosandboxError {
    MicrosandboxError::io(action, path, e.into())
}

/// A bound listener, not yet in a runtime.
pub enum Bound {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A unix socket, and how to take its name away at stop.
    Unix(std::os::unix::net::UnixListener, SocketName),
}

/// The name a socket was bound under: its directory (open) and the
/// inode, so that stop removes this socket and nothing put there since.
pub struct SocketName {
    dir: std::os::fd::OwnedFd,
    name: String,
    path: PathBuf,
    inode: (u64, u64),
}

impl Bound {
    /// The address a client uses: `unix:PATH` or `IP:PORT`.
    pub fn address(&self) -> String {
        match self {
            Bound::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Bound::Unix(_, n) => format!("unix:{}", n.path.display()),
        }
    }
}

/// Binds `listen`.
///
/// # Errors
///
/// `Io` naming the address when it cannot be bound; `InvalidArgument` for
/// a socket path without a file name.
pub fn bind(listen: &Listen) -> MicrosandboxResult<Bound> {
    match listen {
        Listen::Tcp(addr) => std::net::TcpListener::bind(addr)
            .map(Bound::Tcp)
            .map_err(|e| io_err("listen on", Path::new(&addr.to_string()), e)),
        Listen::Unix(path) => bind_unix(path),
    }
}

#[allow(clippy::unnecessary_cast)]
fn identity(s: &rfs::Stat) -> (u64, u64) {
    (s.st_dev as u64, s.st_ino as u64)
}

fn bind_unix(path: &Path) -> MicrosandboxResult<Bound> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "." && *n != "..")
        .ok_or_else(|| invalid(format!("{}: names no socket file", path.display())))?
        .to_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let dir = rfs::open(
        &parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open directory", &parent, e))?;
    let private = format!(".{name}.bind-{}", std::process::id());
    let _ = rfs::unlinkat(&dir, format!("{private}/s"), AtFlags::empty());
    let _ = rfs::unlinkat(&dir, &private, AtFlags::REMOVEDIR);
    rfs::mkdirat(&dir, &private, Mode::from_raw_mode(0o700))
        .map_err(|e| io_err("create directory", &parent.join(&private), e))?;
    let result = (|| {
        // The private directory's mode, exactly (mkdir went through the umask).
        let pdir = rfs::openat(
            &dir,
            &private,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open directory", &parent.join(&private), e))?;
        rfs::fchmod(&pdir, Mode::from_raw_mode(0o700))
            .map_err(|e| io_err("chmod", &parent.join(&private), e))?;
        // Bound through the descriptor, so no link on the way is followed.
        let fd_path = format!(
            "/proc/self/fd/{}/s",
            std::os::fd::AsRawFd::as_raw_fd(&pdir.as_fd())
        );
        let listener = std::os::unix::net::UnixListener::bind(&fd_path)
            .map_err(|e| io_err("listen on", path, e))?;
        rfs::chmodat(&pdir, "s", Mode::from_raw_mode(0o600), AtFlags::empty())
            .map_err(|e| io_err("chmod", path, e))?;
        let stat = rfs::statat(&pdir, "s", AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err("stat", path, e))?;
        rfs::renameat(&pdir, "s", &dir, &name).map_err(|e| io_err("rename into place", path, e))?;
        Ok((listener, identity(&stat)))
    })();
    let _ = rfs::unlinkat(&dir, format!("{private}/s"), AtFlags::empty());
    let _ = rfs::unlinkat(&dir, &private, AtFlags::REMOVEDIR);
    let (listener, inode) = result?;
    Ok(Bound::Unix(
        listener,
        SocketName {
            dir,
            name,
            path: path.to_owned(),
            inode,
        },
    ))
}

impl SocketName {
    /// Unlinks the socket if its name still holds the inode bound.
    pub fn remove(&self) {
        let same = rfs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| identity(&s) == self.inode)
            .unwrap_or(false);
        if same {
            let _ = rfs::unlinkat(&self.dir, &self.name, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn addresses_parse() {
        assert_eq!(
            Listen::parse("unix:/run/msb.sock").unwrap(),
            Listen::Unix("/run/msb.sock".into())
        );
        assert_eq!(
            Listen::parse("127.0.0.1:8080").unwrap(),
            Listen::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        assert!(matches!(Listen::parse("[::1]:0").unwrap(), Listen::Tcp(_)));
        for bad in ["unix:", "localhost:8080", "8080", "127.0.0.1", "http://x:1"] {
            let e = Listen::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn a_socket_is_0600_replaces_a_stale_one_and_leaves_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.sock");
        let first = bind(&Listen::Unix(path.clone())).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A second server takes the name over; the first one's stop then
        // leaves the second's socket in place.
        let second = bind(&Listen::Unix(path.clone())).unwrap();
        if let Bound::Unix(_, n) = &first {
            n.remove();
        }
        assert!(path.exists(), "the newer socket stays");
        if let Bound::Unix(_, n) = &second {
            n.remove();
        }
        assert!(!path.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "no private directory is left: {left:?}");
    }
}
