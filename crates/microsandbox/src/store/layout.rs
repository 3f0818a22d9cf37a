//! The cache on disk: the home and its directories, opened once without
//! following links and kept open, so every later file operation is
//! relative to them.
//!
//! ```text
//! $MSB_HOME/cache/oci/{oci-layout,index.json,blobs/sha256/<hex>}
//! $MSB_HOME/cache/tmp/        in-flight writes
//! $MSB_HOME/cache/lock        the cache lock
//! $MSB_HOME/leases/<id>.json  pins
//! ```
//!
//! A [`Home`] names a `$MSB_HOME`; [`Home::layout`] hands out its open
//! [`Layout`], making the home (mode 0700, whatever the umask) and its
//! directories on first use, and [`Home::existing`] the same without
//! making anything. Each directory below the home is opened
//! `O_DIRECTORY|O_NOFOLLOW`: one that is a link is refused, never
//! followed. A root process also refuses a home or a directory that
//! another user owns or that group or others may write, and any process
//! refuses one another user owns unless it shares the directory's group
//! and the directory is closed to others (a group-shared cache). The home
//! itself may be a link only if the caller owns the link. Descriptors are
//! kept while the directories they name stay the same; a home removed or
//! replaced behind the backend's back is opened afresh.
//!
//! `cache/vm/` and its three directories hold derived data only, so one
//! that is a link, not a directory, or not to be trusted does not take the
//! cache down: it reads as absent and is recorded as [`VmDamage`], which
//! verify reports and the writer of `cache/vm/` clears
//! ([`crate::store::artifact::clear_damage`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::fs::{identity, kind, Dir, Stat};
use crate::store::index;
use crate::store::lock::{lock_in, LockGuard, Mode as LockKind};

/// Where repairs put corrupt blobs and bad entries: beside the layout,
/// not in it.
pub const QUARANTINE: &str = "quarantine";
/// The largest manifest, index or config blob read into memory.
pub const JSON_BLOB_LIMIT: u64 = 16 << 20;
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The mode of a home the cache makes.
const HOME_MODE: u32 = 0o700;

/// A cache home, opened on first use and kept open.
#[derive(Debug)]
pub struct Home {
    path: PathBuf,
    lock_timeout: Duration,
    open: Mutex<Option<Arc<Layout>>>,
}

impl Home {
    /// The home at `path` (absolute); nothing is opened yet.
    pub fn new(path: PathBuf, lock_timeout: Duration) -> Home {
        Home {
            path,
            lock_timeout,
            open: Mutex::new(None),
        }
    }

    /// `$MSB_HOME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open layout, made if it is not there yet.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] when a directory of the home is a
    /// link or not a directory; `Io` for one another user may write, or
    /// that cannot be made.
    pub fn layout(&self) -> MicrosandboxResult<Arc<Layout>> {
        self.get(true)?
            .ok_or_else(|| MicrosandboxError::corrupt(format!("{} vanished", self.path.display())))
    }

    /// The open layout if the cache exists; `None` (and nothing made) if
    /// not: for operations that only read.
    pub fn existing(&self) -> MicrosandboxResult<Option<Arc<Layout>>> {
        self.get(false)
    }

    fn get(&self, create: bool) -> MicrosandboxResult<Option<Arc<Layout>>> {
        let mut slot = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(layout) = slot.as_ref() {
            // A writer needs every directory; a reader's view may lack some.
            let complete = !create || layout.ids.iter().all(Option::is_some);
            // A damaged cache/vm is looked at afresh each time: a repair
            // elsewhere may have cleared it.
            if complete && layout.vm_damage.is_empty() && layout.still_current() {
                return Ok(Some(layout.clone()));
            }
            *slot = None;
        }
        let Some(layout) = Layout::open(&self.path, self.lock_timeout, create)? else {
            return Ok(None);
        };
        let layout = Arc::new(layout);
        *slot = Some(layout.clone());
        Ok(Some(layout))
    }
}

/// The open directories of one cache home.
#[derive(Debug)]
pub struct Layout {
    home_path: PathBuf,
    lock_timeout: Duration,
    home: Dir,
    cache: Dir,
    oci: Dir,
    blobs: Dir,
    tmp: Dir,
    leases: Dir,
    /// `cache/vm/layers`, `cache/vm/fsmeta`, `cache/vm/vmdk`.
    vm: [Dir; 3],
    /// What stands where `cache/vm/` or one of its directories should be.
    vm_damage: Vec<VmDamage>,
    /// `(device, inode)` of each directory above, in that order, as opened
    /// (`None`: it did not exist).
    ids: [Option<(u64, u64)>; 9],
}

/// Something in the place of `cache/vm/` or one of its directories that
/// the cache does not use: a link, a file, a directory it must not trust.
#[derive(Debug)]
pub struct VmDamage {
    /// The directory that holds it (`cache/` or `cache/vm/`).
    pub parent: Dir,
    /// Its name there.
    pub name: String,
    /// Its path below `cache/` (`vm`, `vm/layers`), for reports.
    pub shown: String,
    /// What is wrong with it.
    pub why: String,
}

impl VmDamage {
    /// Whether it still stands there, looked at again: another process may
    /// have cleared it and made the directory (and artifacts in it) since
    /// this layout was opened. Asked under the exclusive lock, so no
    /// artifact is committed between the look and what follows it.
    ///
    /// # Errors
    ///
    /// `Io`.
    pub fn still_there(&self) -> MicrosandboxResult<bool> {
        Ok(match self.parent.open_dir(&self.name, None) {
            Ok(None) => false,
            Ok(Some(d)) => Me::now().check(&d.stat_self()?, d.path()).is_err(),
            Err(e) if e.kind() == crate::ErrorKind::CorruptCache => true,
            Err(e) => return Err(e),
        })
    }
}

/// Who this process is, for the ownership checks.
struct Me {
    euid: u32,
    groups: Vec<u32>,
}

impl Me {
    fn now() -> Me {
        let mut groups: Vec<u32> = rustix::process::getgroups()
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.push(rustix::process::getegid().as_raw());
        Me {
            euid: rustix::process::geteuid().as_raw(),
            groups,
        }
    }

    /// Refuses a directory the cache must not trust: see the module doc.
    fn check(&self, stat: &Stat, path: &Path) -> MicrosandboxResult<()> {
        let mode = stat.st_mode & 0o7777;
        let refuse = |why: String| {
            Err(MicrosandboxError::io(
                &format!("use {why}:"),
                path,
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ))
        };
        if self.euid == 0 {
            if stat.st_uid != 0 {
                return refuse(format!(
                    "(as root) a directory owned by uid {}",
                    stat.st_uid
                ));
            }
            if mode & 0o022 != 0 {
                return refuse(format!(
                    "(as root) a directory that group or others may write (mode {mode:o})"
                ));
            }
            return Ok(());
        }
        if stat.st_uid == self.euid {
            return Ok(());
        }
        if self.groups.contains(&stat.st_gid) && mode & 0o002 == 0 {
            return Ok(());
        }
        refuse(format!(
            "a directory owned by uid {} that is not shared with this user's groups",
            stat.st_uid
        ))
    }
}

impl Layout {
    /// Opens (and with `create`, makes) the layout under `path`.
    fn open(
        path: &Path,
        lock_timeout: Duration,
        create: bool,
    ) -> MicrosandboxResult<Option<Layout>> {
        let me = Me::now();
        let Some(home) = open_home(path, create, &me)? else {
            return Ok(None);
        };
        let home_stat = home.stat_self()?;
        // Directories below take the home's mode: a group-shared home
        // stays group-shared all the way down.
        let sub_mode = create.then_some(home_stat.st_mode & 0o7777);
        let checked = |dir: Option<Dir>| -> MicrosandboxResult<Option<Dir>> {
            match dir {
                Some(d) => {
                    me.check(&d.stat_self()?, d.path())?;
                    Ok(Some(d))
                }
                None => Ok(None),
            }
        };
        // The cache exists when `cache/oci/` does; a reader makes nothing
        // before that.
        let Some(cache) = checked(home.open_dir("cache", sub_mode)?)? else {
            return Ok(None);
        };
        let Some(oci) = checked(cache.open_dir("oci", sub_mode)?)? else {
            return Ok(None);
        };
        // An `oci/` without its index is a creation a crash cut short:
        // finished by whoever comes next, a reader too.
        let initialized = oci.stat(index::INDEX)?.is_some();
        let create = create || !initialized;
        // A reader leaves a missing directory missing: it reads as empty.
        let sub_mode = create.then_some(home_stat.st_mode & 0o7777);
        let below = |dir: &Dir, name: &str| -> MicrosandboxResult<Dir> {
            let sub = checked(dir.open_dir(name, sub_mode)?)?;
            Ok(sub.unwrap_or_else(|| Dir::absent(dir.join(name))))
        };
        let blobs = below(&below(&oci, "blobs")?, "sha256")?;
        let tmp = below(&cache, "tmp")?;
        let leases = below(&home, "leases")?;
        // Derived data: a bad directory here is damage to report and
        // clear, never a reason to refuse the cache.
        let mut vm_damage = Vec::new();
        let mut vm_below = |dir: &Dir, name: &str, shown: &str| -> MicrosandboxResult<Dir> {
            let path = dir.join(name);
            if !dir.exists() {
                return Ok(Dir::absent(path));
            }
            let why = match dir.open_dir(name, sub_mode) {
                Ok(None) => return Ok(Dir::absent(path)),
                Ok(Some(d)) => match me.check(&d.stat_self()?, d.path()) {
                    Ok(()) => return Ok(d),
                    Err(e) => e.to_string(),
                },
                Err(e) if e.kind() == crate::ErrorKind::CorruptCache => e.to_string(),
                Err(e) => return Err(e),
            };
            vm_damage.push(VmDamage {
                parent: dir.clone(),
                name: name.to_owned(),
                shown: shown.to_owned(),
                why,
            });
            Ok(Dir::absent(path))
        };
        let vm_root = vm_below(&cache, "vm", "vm")?;
        let vm = [
            vm_below(&vm_root, "layers", "vm/layers")?,
            vm_below(&vm_root, "fsmeta", "vm/fsmeta")?,
            vm_below(&vm_root, "vmdk", "vm/vmdk")?,
        ];
        let id = |d: &Dir| -> MicrosandboxResult<Option<(u64, u64)>> {
            Ok(match d.exists() {
                true => Some(identity(&d.stat_self()?)),
                false => None,
            })
        };
        let ids = [
            Some(identity(&home_stat)),
            id(&cache)?,
            id(&oci)?,
            id(&blobs)?,
            id(&tmp)?,
            id(&leases)?,
            id(&vm[0])?,
            id(&vm[1])?,
            id(&vm[2])?,
        ];
        let layout = Layout {
            home_path: path.to_owned(),
            lock_timeout,
            home,
            cache,
            oci,
            blobs,
            tmp,
            leases,
            vm,
            vm_damage,
            ids,
        };
        if !initialized {
            layout.initialize()?;
        }
        Ok(Some(layout))
    }

    fn has_index(&self) -> MicrosandboxResult<bool> {
        Ok(self.oci.stat("index.json")?.is_some())
    }

    /// Writes `oci-layout` and an empty `index.json`, under the lock.
    fn initialize(&self) -> MicrosandboxResult<()> {
        let guard = self.lock::<crate::store::lock::Exclusive>()?;
        if self.oci.stat("oci-layout")?.is_none() {
            self.oci.write_atomic("oci-layout", OCI_LAYOUT)?;
        }
        if !self.has_index()? {
            index::write(self, &guard, &Default::default())?;
        }
        Ok(())
    }

    /// Whether every directory is still the one opened: a cheap look
    /// (one stat each) made by every operation.
    fn still_current(&self) -> bool {
        let at = |dir: &Dir, name: &str| dir.stat(name).ok().flatten().map(|s| identity(&s));
        let home_now = rfs::stat(&self.home_path).ok().map(|s| identity(&s));
        let blobs_parent = self
            .oci
            .open_dir("blobs", None)
            .ok()
            .flatten()
            .and_then(|d| at(&d, "sha256"));
        let vm_root = self.cache.open_dir("vm", None).ok().flatten();
        let vm_at = |name: &str| vm_root.as_ref().and_then(|d| at(d, name));
        let now = [
            home_now,
            at(&self.home, "cache"),
            at(&self.cache, "oci"),
            blobs_parent,
            at(&self.cache, "tmp"),
            at(&self.home, "leases"),
            vm_at("layers"),
            vm_at("fsmeta"),
            vm_at("vmdk"),
        ];
        now == self.ids
    }

    /// `$MSB_HOME`.
    pub fn home(&self) -> &Path {
        &self.home_path
    }

    /// `$MSB_HOME` itself, open.
    pub fn home_dir(&self) -> &Dir {
        &self.home
    }

    /// `$MSB_HOME/cache`: the layout, `tmp/`, the lock.
    pub fn cache_dir(&self) -> &Dir {
        &self.cache
    }

    /// The OCI image layout directory.
    pub fn oci_dir(&self) -> &Dir {
        &self.oci
    }

    /// `blobs/sha256/`.
    pub fn blobs_dir(&self) -> &Dir {
        &self.blobs
    }

    /// `tmp/`, for in-flight writes.
    pub fn tmp_dir(&self) -> &Dir {
        &self.tmp
    }

    /// `leases/`.
    pub fn leases_dir(&self) -> &Dir {
        &self.leases
    }

    /// What stands where `cache/vm/` or one of its directories should be
    /// (they read as absent meanwhile).
    pub fn vm_damage(&self) -> &[VmDamage] {
        &self.vm_damage
    }

    /// Whether `cache/vm/` and its three directories are there, as
    /// directories the cache uses, so artifacts can be committed.
    pub fn vm_ready(&self) -> bool {
        self.vm.iter().all(Dir::exists)
    }

    /// `cache/quarantine/`, made if missing: where repairs put aside what
    /// they take out of the cache and cannot simply delete.
    ///
    /// # Errors
    ///
    /// `Io`; `CorruptCache` for a link in its place.
    pub fn quarantine_dir(&self) -> MicrosandboxResult<Dir> {
        self.cache
            .open_dir(QUARANTINE, Some(0o700))?
            .ok_or_else(|| {
                MicrosandboxError::corrupt(format!(
                    "{} vanished",
                    self.cache.join(QUARANTINE).display()
                ))
            })
    }

    /// `cache/vm/layers/`, `cache/vm/fsmeta/` and `cache/vm/vmdk/`, in
    /// the order of [`crate::store::artifact::ArtifactKind::ALL`].
    pub fn vm_dirs(&self) -> &[Dir; 3] {
        &self.vm
    }

    /// The path of a blob, for messages.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Takes the cache lock, waiting at most the backend's bound.
    pub fn lock<M: LockKind>(&self) -> MicrosandboxResult<LockGuard<M>> {
        lock_in(&self.cache, "lock", self.lock_timeout)
    }

    /// How long a lock is waited for before `Busy`.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// Opens a blob for reading; `None` when it is absent.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] for a blob that is a link or not a
    /// regular file.
    pub fn open_blob(&self, digest: &Digest) -> MicrosandboxResult<Option<std::fs::File>> {
        self.blobs.open_regular(digest.hex())
    }

    /// The stat of a blob file (not following a link); `None` if absent.
    pub fn blob_stat(&self, digest: &Digest) -> MicrosandboxResult<Option<Stat>> {
        self.blobs.stat(digest.hex())
    }

    /// Whether the blob is present as a regular file.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        matches!(self.blob_stat(digest), Ok(Some(s)) if kind(&s) == FileType::RegularFile)
    }

    /// Reads a JSON blob (manifest, index, config) of the cache and checks
    /// it is what its name says: it hashes to its digest, and has `size`
    /// bytes when a descriptor declares one. The disk is not trusted: a
    /// blob swapped behind the cache's back is an error, never an answer.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] naming the blob when it is
    /// missing, not a regular file, over the size limit, of another size
    /// or another digest.
    pub fn read_json_blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> MicrosandboxResult<Vec<u8>> {
        let bytes = self
            .blobs
            .read_bounded(digest.hex(), JSON_BLOB_LIMIT)?
            .ok_or_else(|| {
                MicrosandboxError::corrupt(format!("blob {digest} is missing from the cache"))
            })?;
        if let Some(size) = size.filter(|s| *s != bytes.len() as u64) {
            return Err(MicrosandboxError::corrupt(format!(
                "blob {digest} has {} bytes where its descriptor says {size}: \
                 the cache was changed behind its back (verify --repair)",
                bytes.len()
            )));
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(MicrosandboxError::corrupt(format!(
                "blob {digest} hashes to {actual}: the cache was changed behind its back \
                 (verify --repair)"
            )));
        }
        Ok(bytes)
    }
}

/// Opens the home, making it (0700) if asked. The path up to the home is
/// the caller's to choose; the home itself may be a link only if this
/// user owns the link.
fn open_home(path: &Path, create: bool, me: &Me) -> MicrosandboxResult<Option<Dir>> {
    let link = match rfs::lstat(path) {
        Ok(s) => Some(s),
        Err(rustix::io::Errno::NOENT) => None,
        Err(e) => return Err(MicrosandboxError::io("stat", path, e.into())),
    };
    let made = match link {
        Some(_) => false,
        None if !create => return Ok(None),
        None => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).at("create directory", parent)?;
            }
            match rfs::mkdir(path, Mode::from_raw_mode(HOME_MODE)) {
                Ok(()) => true,
                Err(rustix::io::Errno::EXIST) => false,
                Err(e) => return Err(MicrosandboxError::io("create directory", path, e.into())),
            }
        }
    };
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let lstat = rfs::lstat(path)
        .map_err(std::io::Error::from)
        .at("stat", path)?;
    if kind(&lstat) == FileType::Symlink {
        if lstat.st_uid != me.euid {
            return Err(MicrosandboxError::corrupt(format!(
                "{} is a symbolic link owned by uid {}, not by this user: refusing to follow it",
                path.display(),
                lstat.st_uid
            )));
        }
    } else {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = match rfs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOTDIR) => {
            return Err(MicrosandboxError::corrupt(format!(
                "{} is not a directory",
                path.display()
            )))
        }
        Err(e) => return Err(MicrosandboxError::io("open directory", path, e.into())),
    };
    let home = Dir::from_fd(fd, path.to_owned());
    if made {
        // The mode asked of mkdir went through the umask: set it exactly.
        home.set_mode(HOME_MODE)?;
    }
    me.check(&home.stat_self()?, path)?;
    Ok(Some(home))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh, ready layout in a temporary home (1 s lock waits).
    pub(crate) fn temp() -> (tempfile::TempDir, Arc<Layout>) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"), Duration::from_secs(1));
        let layout = home.layout().unwrap();
        (dir, layout)
    }

    #[test]
    fn a_new_home_is_a_valid_empty_layout_made_0700() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, layout) = temp();
        let home = dir.path().join("home");
        let oci = home.join("cache/oci");
        assert_eq!(std::fs::read(oci.join("oci-layout")).unwrap(), OCI_LAYOUT);
        let index = index::read(&layout).unwrap();
        assert!(index.manifests.is_empty());
        assert_eq!(index.schema_version, 2);
        assert!(home.join("cache/tmp").is_dir());
        assert!(home.join("leases").is_dir());
        let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_missing_home_is_not_made_by_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("absent"), Duration::from_secs(1));
        assert!(home.existing().unwrap().is_none());
        assert!(!dir.path().join("absent").exists());
    }

    #[test]
    fn a_replaced_home_is_opened_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home");
        let home = Home::new(path.clone(), Duration::from_secs(1));
        let first = home.layout().unwrap();
        std::fs::remove_dir_all(&path).unwrap();
        assert!(home.existing().unwrap().is_none());
        let second = home.layout().unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(path.join("cache/oci/index.json").is_file());
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let path = dir.path().join("home");
        std::fs::create_dir_all(path.join("cache")).unwrap();
        std::os::unix::fs::symlink(outside.path(), path.join("cache/tmp")).unwrap();
        let home = Home::new(path, Duration::from_secs(1));
        let err = home.layout().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::CorruptCache);
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
