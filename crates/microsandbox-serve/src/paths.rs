//! The host paths a client may name: `load` reads, and `save` writes, only
//! inside the directories the server was started with
//! ([`crate::Config::allow_paths`], `--allow-path DIR`); with none (the
//! default) every request naming a path is refused.
//!
//! Each allowed directory is opened once, at start. A client's path is
//! matched against them by its components (it must be absolute and hold
//! no `..`), and the rest of it is walked one component at a time from
//! the directory's descriptor with `openat(O_PATH|O_NOFOLLOW)`: a symbolic
//! link anywhere below the allowed directory is refused, never followed,
//! so no link and no spelling leads out of it. What the walk ends on is
//! held by its descriptor (an `O_PATH` one, which opens nothing: no FIFO
//! blocks, no device sees an open) and handed to the cache as
//! `/proc/self/fd/N`, which names that very file (or, for a save, that very
//! directory): nothing is looked up by path again, so nothing swapped in
//! after the check can be what is read or written. The cache's messages
//! are told back in the client's own words.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use microsandbox::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::reply::invalid;

/// The directories clients may name paths in.
pub struct Allowed {
    roots: Vec<Root>,
}

struct Root {
    /// The directory as given and as the system resolves it: a client may
    /// name it either way.
    names: Vec<Vec<OsString>>,
    shown: PathBuf,
    fd: OwnedFd,
}

/// A path a client named, resolved beneath an allowed directory and held
/// open.
pub struct Named {
    /// What the walk ended on: the file to load, or the directory to save in.
    fd: OwnedFd,
    /// The file name to save as.
    name: Option<String>,
    /// What the client called `fd`.
    shown: String,
}

fn components(path: &Path) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

const WALK: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

impl Allowed {
    /// Opens every directory in `dirs`.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a path that is not absolute, holds `..`, or is
    /// not a directory; `Io` when one cannot be opened.
    pub fn open(dirs: &[PathBuf]) -> MicrosandboxResult<Allowed> {
        let mut roots = Vec::new();
        for dir in dirs {
            let bad = |why: &str| invalid(format!("allowed path {}: {why}", dir.display()));
            if !dir.is_absolute() {
                return Err(bad("give an absolute path"));
            }
            let given = components(dir).ok_or_else(|| bad("give it without `..`"))?;
            // The operator names the directory: a link to it is followed,
            // once, here.
            let fd = rfs::open(
                dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::NOENT | Errno::NOTDIR => bad("no such directory"),
                e => MicrosandboxError::io("open the allowed directory", dir, e.into()),
            })?;
            let mut names = vec![given];
            if let Some(real) = std::fs::canonicalize(dir).ok().and_then(|p| components(&p)) {
                if !names.contains(&real) {
                    names.push(real);
                }
            }
            roots.push(Root {
                names,
                shown: dir.clone(),
                fd,
            });
        }
        Ok(Allowed { roots })
    }

    /// The allowed directory `path` is in, and the components below it.
    fn place<'a>(&'a self, path: &str) -> MicrosandboxResult<(&'a Root, Vec<OsString>)> {
        if self.roots.is_empty() {
            return Err(invalid(format!(
                "path {path:?}: this server takes no host paths; start it with --allow-path DIR \
                 (allowPaths in serve()) to let clients load and save there"
            )));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(invalid(format!(
                "path {path:?}: give an absolute path on the server's host"
            )));
        }
        let parts = components(p)
            .ok_or_else(|| invalid(format!("path {path:?}: `..` is not allowed in a path")))?;
        let best = self
            .roots
            .iter()
            .flat_map(|r| r.names.iter().map(move |n| (r, n)))
            .filter(|(_, n)| parts.starts_with(n))
            .max_by_key(|(_, n)| n.len());
        match best {
            Some((root, name)) => Ok((root, parts[name.len()..].to_vec())),
            None => {
                let list: Vec<String> = self
                    .roots
                    .iter()
                    .map(|r| r.shown.display().to_string())
                    .collect();
                Err(invalid(format!(
                    "path {path:?} is not inside a directory this server allows ({})",
                    list.join(", ")
                )))
            }
        }
    }

    /// Walks `parts` down from `root`, refusing links: the descriptor of
    /// what the last one names.
    fn walk(root: &Root, parts: &[OsString], path: &str) -> MicrosandboxResult<OwnedFd> {
        let mut at = rfs::openat(&root.fd, ".", WALK | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| MicrosandboxError::io("open", Path::new(path), e.into()))?;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let flags = if last { WALK } else { WALK | OFlags::DIRECTORY };
            let next = rfs::openat(&at, part.as_os_str(), flags, Mode::empty());
            let next = match next {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    return Err(MicrosandboxError::new(
                        if last {
                            ErrorKind::InvalidArchive
                        } else {
                            ErrorKind::InvalidArgument
                        },
                        format!("{path}: no such file or directory"),
                    ))
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(invalid(format!(
                        "path {path:?}: {} is a symbolic link or not a directory; links are \
                         never followed below an allowed directory",
                        part.to_string_lossy()
                    )))
                }
                Err(e) => return Err(MicrosandboxError::io("open", Path::new(path), e.into())),
            };
            // O_PATH|O_NOFOLLOW on a link gives the link itself.
            let kind = FileType::from_raw_mode(
                rfs::fstat(&next)
                    .map_err(|e| MicrosandboxError::io("stat", Path::new(path), e.into()))?
                    .st_mode,
            );
            if kind == FileType::Symlink {
                return Err(invalid(format!(
                    "path {path:?}: {} is a symbolic link; links are never followed below an \
                     allowed directory",
                    part.to_string_lossy()
                )));
            }
            at = next;
        }
        Ok(at)
    }

    /// The file or layout directory `path` names, for a load.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a path outside the allowed directories, through
    /// a link, or naming something but a regular file or a directory;
    /// `InvalidArchive` when it does not exist.
    pub fn for_load(&self, path: &str) -> MicrosandboxResult<Named> {
        let (root, parts) = self.place(path)?;
        let fd = Self::walk(root, &parts, path)?;
        let stat = rfs::fstat(&fd)
            .map_err(|e| MicrosandboxError::io("stat", Path::new(path), e.into()))?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind != FileType::RegularFile && kind != FileType::Directory {
            return Err(invalid(format!(
                "path {path:?} is not a regular file or a directory ({kind:?})"
            )));
        }
        Ok(Named {
            fd,
            name: None,
            shown: path.to_owned(),
        })
    }

    /// The directory to save `path` in, and the name in it, for a save (the
    /// cache then refuses a link or anything but a regular file at that
    /// name, and an existing file unless told to replace it).
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a path outside the allowed directories, through
    /// a link, or naming no file.
    pub fn for_save(&self, path: &str) -> MicrosandboxResult<Named> {
        let (root, parts) = self.place(path)?;
        let Some((name, dir)) = parts.split_last() else {
            return Err(invalid(format!(
                "path {path:?} names an allowed directory, not a file in it"
            )));
        };
        let name = name
            .to_str()
            .ok_or_else(|| invalid(format!("path {path:?}: the file name is not UTF-8")))?
            .to_owned();
        let fd = Self::walk(root, dir, path)?;
        let kind = FileType::from_raw_mode(
            rfs::fstat(&fd)
                .map_err(|e| MicrosandboxError::io("stat", Path::new(path), e.into()))?
                .st_mode,
        );
        if kind != FileType::Directory {
            return Err(invalid(format!(
                "path {path:?}: its directory is not a directory"
            )));
        }
        let shown = Path::new(path)
            .parent()
            .map_or_else(String::new, |p| p.display().to_string());
        Ok(Named {
            fd,
            name: Some(name),
            shown,
        })
    }
}

impl Named {
    fn by_fd(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_fd().as_raw_fd())
    }

    /// The path the cache is given: the held file (or directory, and the
    /// name in it) by its descriptor.
    pub fn path(&self) -> PathBuf {
        let at = PathBuf::from(self.by_fd());
        match &self.name {
            Some(name) => at.join(name),
            None => at,
        }
    }

    /// `e` told with the client's path where the cache said the
    /// descriptor's.
    pub fn tell(&self, e: MicrosandboxError) -> MicrosandboxError {
        let by_fd = self.by_fd();
        let message = e.message();
        if !message.contains(&by_fd) {
            return e;
        }
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(i) = rest.find(&by_fd) {
            let after = &rest[i + by_fd.len()..];
            out.push_str(&rest[..i]);
            // `/proc/self/fd/7` is not the start of `/proc/self/fd/71`.
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                out.push_str(&by_fd);
            } else {
                out.push_str(&self.shown);
            }
            rest = after;
        }
        out.push_str(rest);
        MicrosandboxError::new(e.kind(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(dir: &Path) -> Allowed {
        Allowed::open(&[dir.to_owned()]).unwrap()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = Allowed::open(&[]).unwrap();
        let e = none.for_load("/etc/shadow").err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("--allow-path"), "{e}");
        assert!(none.for_save("/tmp/x.tar").is_err());
    }

    #[test]
    fn allowed_directories_are_absolute_existing_directories() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        for bad in [
            PathBuf::from("relative"),
            d.path().join("absent"),
            d.path().join("f"),
            d.path().join("..").join("x"),
        ] {
            let e = Allowed::open(std::slice::from_ref(&bad)).err().unwrap();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidArgument,
                "{}: {e}",
                bad.display()
            );
        }
    }

    #[test]
    fn paths_resolve_beneath_the_allowed_directory_without_links() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("allowed");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.tar"), b"archive").unwrap();
        std::fs::write(top.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(top.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(top.path(), root.join("up")).unwrap();
        let a = allowed(&root);
        let ok = a
            .for_load(&format!("{}/sub/a.tar", root.display()))
            .unwrap();
        assert_eq!(std::fs::read(ok.path()).unwrap(), b"archive");
        let refused = [
            format!("{}/secret", top.path().display()),
            format!("{}/sub/../../secret", root.display()),
            format!("{}/link", root.display()),
            format!("{}/up/secret", root.display()),
            "relative/a.tar".to_owned(),
            format!("{}-other/a.tar", root.display()),
        ];
        for p in &refused {
            let e = a.for_load(p).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{p}: {e}");
            assert!(!e.message().contains("secret\n"), "{e}");
        }
        let e = a
            .for_save(&format!("{}/up/new.tar", root.display()))
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let e = a.for_save(&root.display().to_string()).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let e = a
            .for_load(&format!("{}/absent", root.display()))
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArchive, "{e}");
        // A save names the held directory and the file name in it.
        let s = a
            .for_save(&format!("{}/sub/new.tar", root.display()))
            .unwrap();
        std::fs::write(s.path(), b"new").unwrap();
        assert_eq!(std::fs::read(root.join("sub/new.tar")).unwrap(), b"new");
    }

    #[test]
    fn messages_are_told_with_the_clients_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.tar"), b"x").unwrap();
        let a = allowed(d.path());
        let client = format!("{}/a.tar", d.path().display());
        let n = a.for_load(&client).unwrap();
        let by_fd = n.by_fd();
        let e = MicrosandboxError::new(
            ErrorKind::InvalidArchive,
            format!("{by_fd}: bad; {by_fd}/x; {by_fd}1"),
        );
        let told = n.tell(e);
        assert_eq!(told.kind(), ErrorKind::InvalidArchive);
        assert_eq!(
            told.message(),
            format!("{client}: bad; {client}/x; {by_fd}1")
        );
    }
}
