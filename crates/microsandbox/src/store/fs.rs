//! File-system primitives that act relative to an open directory, never
//! through a path string: a [`Dir`] is a directory descriptor, and every
//! open, create, rename and unlink under the home goes through one
//! (`openat`, `renameat`, `unlinkat`), so a link, a FIFO or a renamed
//! directory planted in the home can never send the cache outside it.
//!
//! Cache files are opened `O_NOFOLLOW|O_NONBLOCK` and must be regular
//! files: a symlink is refused instead of followed, and a FIFO or a device
//! is reported instead of waited on. An atomic write goes to a temporary
//! file in the target's own directory (`.<name>.tmp-<random>`), is
//! fsynced, renamed over the target, and the directory is fsynced, so a
//! reader sees the old file or the new one and a crash keeps one of them.
//! A temporary left by a crash carries the [`ATOMIC_TMP_MARK`] and is
//! swept by prune.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags};

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};

pub use rustix::fs::Stat;

/// The part of a name that marks an atomic write's temporary file.
pub const ATOMIC_TMP_MARK: &str = ".tmp-";

/// Random hex for unique names.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a file occupies on disk (allocated blocks, as `du` counts).
pub fn allocated(stat: &Stat) -> u64 {
    (stat.st_blocks as u64).saturating_mul(512)
}

/// The kind of file a stat describes.
pub fn kind(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// `(device, inode)`: what tells two files apart.
pub fn identity(stat: &Stat) -> (u64, u64) {
    (stat.st_dev, stat.st_ino)
}

/// An open directory, and its path for messages. Clones share the one
/// descriptor.
#[derive(Clone, Debug)]
pub struct Dir {
    /// `None` for a directory that does not exist (yet): it reads as
    /// empty, and writing into it fails as a missing directory does.
    fd: Option<Arc<OwnedFd>>,
    path: PathBuf,
}

/// One entry of a directory.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its name (entries whose names are not UTF-8 are never the cache's,
    /// and are left out).
    pub name: String,
    /// What it is, as the directory says (`Unknown` on some file systems).
    pub kind: FileType,
}

const READ: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

impl Dir {
    /// Opens a directory by path, following links: for directories the
    /// caller names (a save's destination), never for the home's own.
    pub fn open_path(path: &Path) -> MicrosandboxResult<Dir> {
        let fd = rfs::open(path, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(io_err)
            .at("open directory", path)?;
        Ok(Dir {
            fd: Some(Arc::new(fd)),
            path: path.to_owned(),
        })
    }

    /// Wraps a descriptor opened elsewhere.
    pub(crate) fn from_fd(fd: OwnedFd, path: PathBuf) -> Dir {
        Dir {
            fd: Some(Arc::new(fd)),
            path,
        }
    }

    /// The path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an entry, for messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's own stat.
    pub fn stat_self(&self) -> MicrosandboxResult<Stat> {
        self.fd()
            .and_then(rfs::fstat)
            .map_err(io_err)
            .at("stat", &self.path)
    }

    /// Opens the subdirectory `name` without following a link; with
    /// `create`, makes it first (with that mode, whatever the umask).
    /// `None` when it does not exist and is not to be made.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] when `name` is a link or not a
    /// directory; `Io` otherwise.
    pub fn open_dir(&self, name: &str, create: Option<u32>) -> MicrosandboxResult<Option<Dir>> {
        let path = self.join(name);
        if let Some(mode) = create {
            match self
                .fd()
                .and_then(|fd| rfs::mkdirat(fd, name, Mode::from_raw_mode(mode)))
            {
                Ok(()) => {
                    let dir = self.open_dir(name, None)?.ok_or_else(|| {
                        MicrosandboxError::corrupt(format!("{} vanished", path.display()))
                    })?;
                    dir.fd()
                        .and_then(|fd| rfs::fchmod(fd, Mode::from_raw_mode(mode)))
                        .map_err(io_err)
                        .at("set the mode of", &path)?;
                    return Ok(Some(dir));
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(MicrosandboxError::io("create directory", &path, e.into())),
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match self
            .fd()
            .and_then(|fd| rfs::openat(fd, name, flags, Mode::empty()))
        {
            Ok(fd) => Ok(Some(Dir {
                fd: Some(Arc::new(fd)),
                path,
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            // O_NOFOLLOW with O_DIRECTORY answers ENOTDIR for a link.
            Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
                let link = self
                    .stat(name)?
                    .is_some_and(|s| kind(&s) == FileType::Symlink);
                Err(MicrosandboxError::corrupt(if link {
                    format!(
                        "{} is a symbolic link; the cache never follows one",
                        path.display()
                    )
                } else {
                    format!("{} is not a directory", path.display())
                }))
            }
            Err(e) => Err(MicrosandboxError::io("open directory", &path, e.into())),
        }
    }

    /// Checks that an opened file is a regular one.
    fn regular(&self, name: &str, fd: OwnedFd) -> MicrosandboxResult<File> {
        let path = self.join(name);
        let stat = rfs::fstat(&fd).map_err(io_err).at("stat", &path)?;
        if kind(&stat) != FileType::RegularFile {
            return Err(MicrosandboxError::corrupt(format!(
                "{} is not a regular file ({:?})",
                path.display(),
                kind(&stat)
            )));
        }
        Ok(File::from(fd))
    }

    fn open_with(&self, name: &str, flags: OFlags, mode: u32) -> MicrosandboxResult<Option<File>> {
        let path = self.join(name);
        match self
            .fd()
            .and_then(|fd| rfs::openat(fd, name, flags, Mode::from_raw_mode(mode)))
        {
            Ok(fd) => self.regular(name, fd).map(Some),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(rustix::io::Errno::LOOP) => Err(MicrosandboxError::corrupt(format!(
                "{} is a symbolic link; the cache never follows one",
                path.display()
            ))),
            Err(e) => Err(MicrosandboxError::io("open", &path, e.into())),
        }
    }

    /// Opens a regular file for reading; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] for a link, a FIFO, a device or a
    /// directory (never followed, never waited on); `Io` otherwise.
    pub fn open_regular(&self, name: &str) -> MicrosandboxResult<Option<File>> {
        self.open_with(name, READ, 0)
    }

    /// Opens a regular file for reading and writing, creating it if
    /// missing: lock files and partial downloads. A file with another name
    /// too (a hard link planted from outside the home) is refused: writing
    /// or locking it would act on a file that is not the cache's.
    pub fn open_or_create(&self, name: &str) -> MicrosandboxResult<File> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = self.open_with(name, flags, 0o666)?.ok_or_else(|| {
            MicrosandboxError::io(
                "create",
                &self.join(name),
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        refuse_links(&file, &self.join(name))?;
        Ok(file)
    }

    /// Creates a new file (refusing an existing name), for writing (and
    /// reading back through the same descriptor).
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        self.fd()
            .and_then(|fd| rfs::openat(fd, name, flags, Mode::from_raw_mode(0o666)))
            .map(File::from)
            .map_err(io_err)
    }

    /// Reads a whole regular file, refusing files larger than `limit`
    /// bytes; `None` when the file does not exist.
    pub fn read_bounded(&self, name: &str, limit: u64) -> MicrosandboxResult<Option<Vec<u8>>> {
        let Some(file) = self.open_regular(name)? else {
            return Ok(None);
        };
        read_file_bounded(file, limit, &self.join(name)).map(Some)
    }

    /// The stat of an entry, not following a link; `None` if absent.
    pub fn stat(&self, name: &str) -> MicrosandboxResult<Option<Stat>> {
        match self
            .fd()
            .and_then(|fd| rfs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW))
        {
            Ok(s) => Ok(Some(s)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(MicrosandboxError::io("stat", &self.join(name), e.into())),
        }
    }

    /// Unlinks a file (never a directory); false when it was already gone.
    pub fn remove(&self, name: &str) -> MicrosandboxResult<bool> {
        match self
            .fd()
            .and_then(|fd| rfs::unlinkat(fd, name, AtFlags::empty()))
        {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(MicrosandboxError::io("delete", &self.join(name), e.into())),
        }
    }

    /// Deletes `name` unless it is a directory (never following a link):
    /// `Some(true)` deleted, `Some(false)` absent, `None` a directory, left
    /// in place.
    pub fn remove_unless_dir(&self, name: &str) -> MicrosandboxResult<Option<bool>> {
        match self
            .fd()
            .and_then(|fd| rfs::unlinkat(fd, name, AtFlags::empty()))
        {
            Ok(()) => Ok(Some(true)),
            Err(rustix::io::Errno::NOENT) => Ok(Some(false)),
            Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {
                match self.stat(name)? {
                    Some(s) if kind(&s) == FileType::Directory => Ok(None),
                    _ => Err(MicrosandboxError::io(
                        "delete",
                        &self.join(name),
                        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                    )),
                }
            }
            Err(e) => Err(MicrosandboxError::io("delete", &self.join(name), e.into())),
        }
    }

    /// Renames `name` to `to_name` in `to`, replacing what is there.
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        self.fd()
            .and_then(|fd| {
                to.fd()
                    .and_then(|to_fd| rfs::renameat(fd, name, to_fd, to_name))
            })
            .map_err(io_err)
    }

    /// Renames `name` to `to_name` in `to` unless that name exists:
    /// `Ok(false)` then, and nothing moved.
    pub fn rename_noreplace(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<bool> {
        match self.fd().and_then(|fd| {
            to.fd().and_then(|to_fd| {
                rfs::renameat_with(fd, name, to_fd, to_name, RenameFlags::NOREPLACE)
            })
        }) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            // A file system without RENAME_NOREPLACE: a hard link cannot
            // replace either, then the old name goes.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                match self.fd().and_then(|fd| {
                    to.fd()
                        .and_then(|to_fd| rfs::linkat(fd, name, to_fd, to_name, AtFlags::empty()))
                }) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::EXIST) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
                self.fd()
                    .and_then(|fd| rfs::unlinkat(fd, name, AtFlags::empty()))
                    .map_err(io_err)?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Links the open `file` as `to_name` in this directory unless that
    /// name exists (`Ok(false)` then): the file itself, by its descriptor,
    /// whatever name it had, so a name swapped after the file was checked
    /// can never be what lands here. `Err(Unsupported)` where the system
    /// offers no way to name a descriptor (`/proc` absent).
    pub fn link_open_file(&self, file: &File, to_name: &str) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
        let linked = self.fd().and_then(|fd| {
            rfs::linkat(
                rfs::CWD,
                by_fd.as_str(),
                fd,
                to_name,
                AtFlags::SYMLINK_FOLLOW,
            )
        });
        match linked {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
                Err(io::Error::from(io::ErrorKind::Unsupported))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every entry but `.` and `..`, in no particular order.
    pub fn entries(&self) -> MicrosandboxResult<Vec<Entry>> {
        let mut out = Vec::new();
        self.each_entry(|name, _, kind| {
            out.push(Entry {
                name: name.to_owned(),
                kind,
            })
        })?;
        Ok(out)
    }

    /// Calls `f` with the name, inode and type of every entry but `.` and
    /// `..`, in no particular order, without collecting the names (a
    /// census reads 30,000 of them).
    pub fn each_entry(&self, mut f: impl FnMut(&str, u64, FileType)) -> MicrosandboxResult<()> {
        if self.fd.is_none() {
            return Ok(());
        }
        let reader = self
            .fd()
            .and_then(rfs::Dir::read_from)
            .map_err(io_err)
            .at("read directory", &self.path)?;
        for entry in reader {
            let entry = entry.map_err(io_err).at("read directory", &self.path)?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            f(name, entry.ino(), entry.file_type());
        }
        Ok(())
    }

    /// Fsyncs the directory so renames and unlinks in it are durable.
    pub fn sync(&self) -> MicrosandboxResult<()> {
        self.fd()
            .and_then(rfs::fsync)
            .map_err(io_err)
            .at("fsync directory", &self.path)
    }

    /// Replaces `name` with `bytes` atomically and durably.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> MicrosandboxResult<()> {
        self.write_atomic_unsynced(name, bytes)?;
        crate::util::fault::point("atomic-after-rename");
        self.sync()
    }

    /// Replaces `name` with `bytes` atomically (the file is fsynced before
    /// its rename); the caller fsyncs the directory, once for a batch.
    pub fn write_atomic_unsynced(&self, name: &str, bytes: &[u8]) -> MicrosandboxResult<()> {
        let tmp = format!(".{name}{ATOMIC_TMP_MARK}{}", random_hex(8));
        let tmp_path = self.join(&tmp);
        let result = (|| {
            let mut file = self.create_new(&tmp).at("create", &tmp_path)?;
            file.write_all(bytes).at("write", &tmp_path)?;
            file.sync_all().at("fsync", &tmp_path)?;
            crate::util::fault::point("atomic-before-rename");
            self.rename(&tmp, self, name)
                .at("rename into place", &self.join(name))
        })();
        if result.is_err() {
            let _ = self.remove(&tmp);
        }
        result
    }
}

impl Dir {
    /// The descriptor; `ENOENT` for a directory that does not exist.
    fn fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, rustix::io::Errno> {
        match &self.fd {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(rustix::io::Errno::NOENT),
        }
    }

    /// A directory that does not exist: it reads as empty.
    pub(crate) fn absent(path: PathBuf) -> Dir {
        Dir { fd: None, path }
    }

    /// Sets the directory's own mode, exactly (no umask).
    pub fn set_mode(&self, mode: u32) -> MicrosandboxResult<()> {
        self.fd()
            .and_then(|fd| rfs::fchmod(fd, Mode::from_raw_mode(mode)))
            .map_err(io_err)
            .at("set the mode of", &self.path)
    }

    /// Whether the directory exists (was opened).
    pub fn exists(&self) -> bool {
        self.fd.is_some()
    }
}

/// Refuses an open file that has more than one name: a hard link into the
/// home from a file elsewhere.
pub fn refuse_links(file: &File, path: &Path) -> MicrosandboxResult<()> {
    let stat = rfs::fstat(file).map_err(io_err).at("stat", path)?;
    if stat.st_nlink != 1 {
        return Err(MicrosandboxError::corrupt(format!(
            "{} has {} names (a hard link): the cache never writes or locks a file shared \
             with another name",
            path.display(),
            stat.st_nlink
        )));
    }
    Ok(())
}

/// Reads what is left of an open file, refusing more than `limit` bytes.
pub fn read_file_bounded(file: File, limit: u64, path: &Path) -> MicrosandboxResult<Vec<u8>> {
    // Sized from the file, so a small file takes one read (and one more
    // that finds its end) rather than a series of growing ones.
    let hint = file.metadata().map_or(0, |m| m.len()).min(limit) as usize;
    let mut buf = Vec::with_capacity(hint + 1);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .at("read", path)?;
    if buf.len() as u64 > limit {
        return Err(MicrosandboxError::io(
            &format!("read (larger than the {limit}-byte limit)"),
            path,
            io::Error::from(io::ErrorKind::InvalidData),
        ));
    }
    Ok(buf)
}

/// Reads a whole file outside the home (a docker config, a settings file
/// the caller names) without blocking on a FIFO: `None` when absent.
pub fn read_outside_bounded(path: &Path, limit: u64) -> MicrosandboxResult<Option<Vec<u8>>> {
    use std::os::unix::fs::OpenOptionsExt;
    // A device is not even opened (opening some has effects); what is
    // opened is checked again through its descriptor.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(MicrosandboxError::io(
                "read (not a regular file)",
                path,
                io::Error::from(io::ErrorKind::InvalidInput),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MicrosandboxError::io("stat", path, e)),
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MicrosandboxError::io("open", path, e)),
    };
    if !file.metadata().at("stat", path)?.is_file() {
        return Err(MicrosandboxError::io(
            "read (not a regular file)",
            path,
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    read_file_bounded(file, limit, path).map(Some)
}

/// Reads from `reader` until `buf` is full or the input ends, retrying
/// interrupted reads: the one read loop of the crate.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_path(t.path()).unwrap();
        (t, d)
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let (t, dir) = temp();
        dir.write_atomic("index.json", b"one").unwrap();
        dir.write_atomic("index.json", b"two").unwrap();
        assert_eq!(std::fs::read(t.path().join("index.json")).unwrap(), b"two");
        assert_eq!(dir.entries().unwrap().len(), 1);
    }

    #[test]
    fn failed_atomic_write_keeps_the_old_file() {
        let (t, dir) = temp();
        dir.write_atomic("index.json", b"old").unwrap();
        // A directory in the way of the rename makes it fail.
        std::fs::create_dir(t.path().join("blocked")).unwrap();
        std::fs::write(t.path().join("blocked/x"), b"").unwrap();
        assert!(dir.write_atomic("blocked", b"new").is_err());
        assert_eq!(std::fs::read(t.path().join("index.json")).unwrap(), b"old");
        assert_eq!(dir.entries().unwrap().len(), 2);
    }

    #[test]
    fn links_and_fifos_are_refused_not_followed_or_waited_on() {
        let (t, dir) = temp();
        std::fs::write(t.path().join("target"), b"outside").unwrap();
        std::os::unix::fs::symlink(t.path().join("target"), t.path().join("link")).unwrap();
        let err = dir.open_regular("link").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::CorruptCache);
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let fifo = t.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = dir.read_bounded("fifo", 10).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = dir.open_or_create("fifo").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(dir.open_dir("link", None).is_err());
        assert!(dir.read_bounded("missing", 1).unwrap().is_none());
    }

    #[test]
    fn rename_without_replacing_keeps_the_existing_file() {
        let (t, dir) = temp();
        std::fs::write(t.path().join("a"), b"a").unwrap();
        std::fs::write(t.path().join("b"), b"b").unwrap();
        assert!(!dir.rename_noreplace("a", &dir, "b").unwrap());
        assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"b");
        assert!(dir.rename_noreplace("a", &dir, "c").unwrap());
        assert!(!t.path().join("a").exists());
    }

    #[test]
    fn bounded_reads_refuse_large_files() {
        let (t, dir) = temp();
        std::fs::write(t.path().join("f"), vec![b'x'; 100]).unwrap();
        assert!(dir.read_bounded("f", 99).is_err());
        assert_eq!(dir.read_bounded("f", 100).unwrap().unwrap().len(), 100);
    }
}
