//! The one writer of `cache/vm/`: the VM disk artifacts, derived from
//! verified blobs and rebuilt from them byte for byte whenever they go.
//!
//! ```text
//! cache/vm/layers/<diff_id hex>.v<N>.erofs    one per layer, shared by every image that has it
//! cache/vm/fsmeta/<manifest hex>.v<N>.erofs   one per image manifest: the merged tree
//! cache/vm/vmdk/<manifest hex>.v<N>.vmdk      one per image manifest: fsmeta + layers as one disk
//! ```
//!
//! `N` is the writer's format version ([`erofs::FORMAT_VERSION`]): a new
//! writer never mixes its files with an old one's, and prune takes the
//! files of other versions as orphans.
//!
//! An artifact is made like a blob: whoever makes one first *claims* it,
//! an exclusive `flock` on `tmp/vm-<kind>-<hex>` (so two processes make it
//! once, and prune tells a live maker from a dead one), writes that file,
//! fsyncs it, and links it in under a cache lock with no clobbering
//! (shared is enough: prune and repair, which delete artifacts, take the
//! exclusive one), then fsyncs the directory. A reader never sees a
//! partial artifact.

pub mod seal;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{ErrorKind, IoContext, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::store::blob::{move_in, names_file, TmpFile};
use crate::store::fs::{Dir, Stat};
use crate::store::layout::Layout;
use crate::store::lock::{try_flock, ExclusiveGuard, LockGuard, LockMode, Mode};

/// The format version in every artifact's name.
pub const FORMAT: u32 = erofs::FORMAT_VERSION;
/// The prefix of an artifact maker's file in `tmp/`.
pub const CLAIM_PREFIX: &str = "vm-";
/// How often a maker waiting for another one's claim looks again.
const POLL: Duration = Duration::from_millis(50);

/// What an artifact is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// A layer's EROFS image, keyed by the layer's diff_id.
    Layer,
    /// An image's merged metadata-only EROFS, keyed by its manifest.
    Fsmeta,
    /// An image's VMDK descriptor, keyed by its manifest.
    Vmdk,
}

impl ArtifactKind {
    /// Every kind, in the order of [`Layout::vm_dirs`].
    pub const ALL: [ArtifactKind; 3] = [
        ArtifactKind::Layer,
        ArtifactKind::Fsmeta,
        ArtifactKind::Vmdk,
    ];

    /// `layer`, `fsmeta` or `vmdk`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Layer => "layer",
            ArtifactKind::Fsmeta => "fsmeta",
            ArtifactKind::Vmdk => "vmdk",
        }
    }

    /// Its directory under `cache/vm/`.
    pub fn dir(self, layout: &Layout) -> &Dir {
        let dirs = layout.vm_dirs();
        match self {
            ArtifactKind::Layer => &dirs[0],
            ArtifactKind::Fsmeta => &dirs[1],
            ArtifactKind::Vmdk => &dirs[2],
        }
    }

    /// Its rank in a deletion: a VMDK before the fsmeta it names, an
    /// fsmeta before the layer images it names.
    pub fn dependents_first(self) -> u8 {
        match self {
            ArtifactKind::Vmdk => 0,
            ArtifactKind::Fsmeta => 1,
            ArtifactKind::Layer => 2,
        }
    }

    /// Its directory's name under `cache/vm/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            ArtifactKind::Layer => "layers",
            ArtifactKind::Fsmeta => "fsmeta",
            ArtifactKind::Vmdk => "vmdk",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ArtifactKind::Layer | ArtifactKind::Fsmeta => "erofs",
            ArtifactKind::Vmdk => "vmdk",
        }
    }

    /// The file name of the artifact of `key` in its directory.
    pub fn name(self, key: &Digest) -> String {
        format!("{}.v{FORMAT}.{}", key.hex(), self.extension())
    }

    /// The key a file name of this kind's directory stands for, if it is
    /// an artifact of this format version; `None` for anything else
    /// (another version's file, a stray name): an orphan to prune.
    pub fn key_of(self, name: &str) -> Option<Digest> {
        let rest = name.strip_suffix(self.extension())?.strip_suffix('.')?;
        let hex = rest.strip_suffix(&format!(".v{FORMAT}"))?;
        Digest::from_hex(hex).ok()
    }

    fn claim_name(self, key: &Digest) -> String {
        format!("{CLAIM_PREFIX}{}-{}", self.as_str(), key.hex())
    }
}

/// The path of an artifact, for results and messages.
pub fn path(layout: &Layout, kind: ArtifactKind, key: &Digest) -> PathBuf {
    kind.dir(layout).join(&kind.name(key))
}

/// Opens an artifact for reading; `None` when it is absent.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] for a link or anything but a regular
/// file in its place.
pub fn open(layout: &Layout, kind: ArtifactKind, key: &Digest) -> MicrosandboxResult<Option<File>> {
    kind.dir(layout).open_regular(&kind.name(key))
}

/// What stands under an artifact's name.
enum Look {
    Absent,
    File(File),
    /// Not a regular file (a link, a directory, a FIFO): why.
    Bad(String),
}

fn look(layout: &Layout, kind: ArtifactKind, key: &Digest) -> MicrosandboxResult<Look> {
    match open(layout, kind, key) {
        Ok(Some(file)) => Ok(Look::File(file)),
        Ok(None) => Ok(Look::Absent),
        Err(e) if e.kind() == ErrorKind::CorruptCache => Ok(Look::Bad(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Takes away what stands at `name` in `dir`, never following it: a
/// directory (with whatever it holds) is moved whole into
/// `cache/quarantine/` as `vm-<shown>-<time>`, anything else is unlinked.
/// Whether anything was there.
fn take_away(layout: &Layout, dir: &Dir, name: &str, shown: &str) -> MicrosandboxResult<bool> {
    if let Some(removed) = dir.remove_unless_dir(name)? {
        return Ok(removed);
    }
    let aside = layout.quarantine_dir()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let to = format!(
        "vm-{}-{stamp}-{}",
        shown.replace('/', "-"),
        std::process::id()
    );
    dir.rename(name, &aside, &to)
        .at("move aside", &dir.join(name))?;
    aside.sync()?;
    Ok(true)
}

/// Takes away an entry of an artifact directory that is not a regular
/// file (as found by a claim, verify or a listing), fsyncing the directory.
///
/// # Errors
///
/// `Io`.
pub fn discard(
    layout: &Layout,
    kind: ArtifactKind,
    name: &str,
    _exclusive: &ExclusiveGuard,
) -> MicrosandboxResult<bool> {
    let dir = kind.dir(layout);
    let shown = format!("vm/{}/{name}", kind.dir_name());
    let gone = take_away(layout, dir, name, &shown)?;
    if gone {
        dir.sync()?;
    }
    Ok(gone)
}

/// Takes away what stands under the artifact name of `key` if it is
/// anything but a regular file (looked at again under the lock, so an
/// artifact committed since is never touched), fsyncing the directory.
///
/// # Errors
///
/// `Io`.
pub fn discard_if_bad(
    layout: &Layout,
    kind: ArtifactKind,
    key: &Digest,
    exclusive: &ExclusiveGuard,
) -> MicrosandboxResult<bool> {
    match look(layout, kind, key)? {
        Look::Bad(_) => discard(layout, kind, &kind.name(key), exclusive),
        Look::File(_) | Look::Absent => Ok(false),
    }
}

/// Takes away whatever stands in the place of `cache/vm/` or one of its
/// directories ([`Layout::vm_damage`]); each one taken, as
/// `vm/layers: why`. The layout must be opened again after (its `cache/vm`
/// directories were absent).
///
/// # Errors
///
/// `Io`.
pub fn clear_damage(
    layout: &Layout,
    _exclusive: &ExclusiveGuard,
) -> MicrosandboxResult<Vec<String>> {
    let mut cleared = Vec::new();
    for d in layout.vm_damage() {
        if d.still_there()? && take_away(layout, &d.parent, &d.name, &d.shown)? {
            d.parent.sync()?;
            cleared.push(format!("{}: {}", d.shown, d.why));
        }
    }
    Ok(cleared)
}

/// The stat of an artifact (not following a link); `None` if absent.
pub fn stat(layout: &Layout, kind: ArtifactKind, key: &Digest) -> MicrosandboxResult<Option<Stat>> {
    kind.dir(layout).stat(&kind.name(key))
}

/// Deletes the artifact of `key` if its name still holds `file` (one that
/// failed its check), fsyncing the directory. Under the exclusive lock, as
/// every deletion in `cache/vm/`.
///
/// # Errors
///
/// `Io`.
pub fn remove_if_same(
    layout: &Layout,
    kind: ArtifactKind,
    key: &Digest,
    file: &File,
    _exclusive: &ExclusiveGuard,
) -> MicrosandboxResult<bool> {
    let dir = kind.dir(layout);
    let name = kind.name(key);
    if !names_file(dir, &name, file)? {
        return Ok(false);
    }
    let removed = dir.remove(&name)?;
    if removed {
        dir.sync()?;
    }
    Ok(removed)
}

/// What a claim on an artifact finds.
pub enum Claim {
    /// The artifact is there (made before, or by the maker waited for).
    Present(File),
    /// Ours to make: an empty, locked file in `tmp/`.
    Mine(ArtifactWriter),
    /// Something else is under its name (a link, a directory): why. To be
    /// [`discard`]ed before the artifact can be made.
    Damaged(String),
}

/// Claims the artifact of `key`: waits while another maker holds it,
/// calling `waiting` at each look.
///
/// # Errors
///
/// `Io` when `tmp/` cannot be used; whatever `waiting` returns.
pub fn claim(
    layout: &Layout,
    kind: ArtifactKind,
    key: &Digest,
    mut waiting: impl FnMut() -> MicrosandboxResult<()>,
) -> MicrosandboxResult<Claim> {
    let claimed = claim_with(layout, kind, key, || {
        waiting()?;
        Ok(true)
    })?;
    Ok(claimed.expect("a claim that waits always ends with one"))
}

/// [`claim`] without waiting: `None` when another maker holds it (a
/// transfer that makes layer images on the way never waits for one while
/// it holds a download's claim, so two transfers cannot wait on each
/// other).
///
/// # Errors
///
/// As [`claim`].
pub fn try_claim(
    layout: &Layout,
    kind: ArtifactKind,
    key: &Digest,
) -> MicrosandboxResult<Option<Claim>> {
    claim_with(layout, kind, key, || Ok(false))
}

/// The claim loop; `busy` says whether to go on waiting for another maker.
fn claim_with(
    layout: &Layout,
    kind: ArtifactKind,
    key: &Digest,
    mut busy: impl FnMut() -> MicrosandboxResult<bool>,
) -> MicrosandboxResult<Option<Claim>> {
    let tmp = layout.tmp_dir();
    let name = kind.claim_name(key);
    let path = tmp.join(&name);
    loop {
        match look(layout, kind, key)? {
            Look::File(file) => return Ok(Some(Claim::Present(file))),
            Look::Bad(why) => return Ok(Some(Claim::Damaged(why))),
            Look::Absent => {}
        }
        let file = tmp.open_or_create(&name)?;
        if !try_flock(&file, LockMode::Exclusive).at("lock", &path)? {
            if !busy()? {
                return Ok(None);
            }
            std::thread::sleep(POLL);
            continue;
        }
        // Committed (its name gone from tmp/) or swept since it was
        // opened: look again.
        if !names_file(tmp, &name, &file)? {
            continue;
        }
        let mut tmp_file = TmpFile {
            dir: tmp.clone(),
            name: name.clone(),
            file,
            unlink_on_drop: true,
        };
        match look(layout, kind, key)? {
            Look::File(present) => {
                tmp_file.unlink();
                return Ok(Some(Claim::Present(present)));
            }
            Look::Bad(why) => {
                tmp_file.unlink();
                return Ok(Some(Claim::Damaged(why)));
            }
            Look::Absent => {}
        }
        // A dead maker's bytes are not trusted: start from nothing.
        tmp_file.file.set_len(0).at("truncate", &path)?;
        tmp_file.file.seek(SeekFrom::Start(0)).at("seek", &path)?;
        return Ok(Some(Claim::Mine(ArtifactWriter {
            tmp: tmp_file,
            kind,
            key: key.clone(),
            stream: Default::default(),
        })));
    }
}

/// A claimed artifact being written in `tmp/`; dropped uncommitted, its
/// file goes. Its bytes are written through [`ArtifactWriter::out`], which
/// hashes them on the way for the seal.
pub struct ArtifactWriter {
    tmp: TmpFile,
    kind: ArtifactKind,
    key: Digest,
    stream: Arc<Mutex<seal::Stream>>,
}

/// Where an artifact's maker writes it: positioned writes to the claimed
/// file, each hashed for the seal as it goes ([`seal::Stream`]). A `Write`
/// and `Seek` of its own position.
pub struct ArtifactOut {
    file: File,
    pos: u64,
    stream: Arc<Mutex<seal::Stream>>,
}

impl std::io::Write for ArtifactOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, self.pos)?;
        self.stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wrote(self.pos, buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for ArtifactOut {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.file.metadata()?.len(), d),
        };
        self.pos = base.0.checked_add_signed(base.1).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "a seek before the start")
        })?;
        Ok(self.pos)
    }
}

impl std::fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactWriter({})", self.tmp.name)
    }
}

impl ArtifactWriter {
    /// Where to write the artifact, from its start (every write through it
    /// is hashed for the seal; nothing else writes the file).
    ///
    /// # Errors
    ///
    /// `Io` when the file cannot be reopened.
    pub fn out(&self) -> MicrosandboxResult<ArtifactOut> {
        Ok(ArtifactOut {
            file: self.tmp.file.try_clone().at("reopen", &self.path())?,
            pos: 0,
            stream: self.stream.clone(),
        })
    }

    /// The bytes written so far (the file's size).
    ///
    /// # Errors
    ///
    /// `Io`.
    pub fn len(&self) -> MicrosandboxResult<u64> {
        Ok(self.tmp.file.metadata().at("stat", &self.path())?.len())
    }

    /// The file's path in `tmp/`, for messages.
    pub fn path(&self) -> PathBuf {
        self.tmp.path()
    }

    /// Seals the finished file ([`seal::seal`], with what its writes
    /// hashed) and fsyncs it; only a sealed artifact can be committed.
    /// Made before any cache lock is taken: it may read the whole file.
    ///
    /// # Errors
    ///
    /// `Io`.
    pub fn seal(self) -> MicrosandboxResult<SealedArtifact> {
        let path = self.tmp.path();
        let stream = std::mem::take(&mut *self.stream.lock().unwrap_or_else(|e| e.into_inner()));
        seal::seal(&self.tmp.file, &path, Some(stream))?;
        self.tmp.file.sync_all().at("fsync", &path)?;
        Ok(SealedArtifact(self))
    }
}

/// A finished artifact with its seal, ready to commit.
#[derive(Debug)]
pub struct SealedArtifact(ArtifactWriter);

impl SealedArtifact {
    /// Fsyncs the file and links it into its directory (unless an artifact
    /// is there already), fsyncs the directory, and opens what is there.
    ///
    /// # Errors
    ///
    /// `Io`; `CorruptCache` when the temporary was removed or replaced.
    pub fn commit<M: Mode>(
        self,
        layout: &Layout,
        _lock: &LockGuard<M>,
    ) -> MicrosandboxResult<File> {
        let SealedArtifact(mut this) = self;
        let dir = this.kind.dir(layout);
        let name = this.kind.name(&this.key);
        if move_in(&this.tmp, dir, &name, "artifact-before-rename")? {
            this.tmp.unlink_on_drop = false;
            dir.sync()?;
        } else {
            this.tmp.unlink();
        }
        open(layout, this.kind, &this.key)?.ok_or_else(|| {
            crate::error::MicrosandboxError::corrupt(format!(
                "{} vanished as it was committed",
                dir.join(&name).display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::tests::temp as layout;
    use crate::store::lock::Shared;
    use std::io::Write;

    #[test]
    fn names_carry_the_format_version_and_parse_back() {
        let key = Digest::of(b"layer");
        for kind in ArtifactKind::ALL {
            let name = kind.name(&key);
            assert!(name.contains(&format!(".v{FORMAT}.")), "{name}");
            assert_eq!(kind.key_of(&name), Some(key.clone()));
        }
        let other = format!("{}.v{}.erofs", key.hex(), FORMAT + 1);
        assert_eq!(ArtifactKind::Layer.key_of(&other), None);
        assert_eq!(ArtifactKind::Layer.key_of("junk.erofs"), None);
        assert_eq!(
            ArtifactKind::Vmdk.key_of(&ArtifactKind::Layer.name(&key)),
            None
        );
    }

    #[test]
    fn a_claim_is_made_once_and_then_present() {
        let (_home, layout) = layout();
        let key = Digest::of(b"x");
        let Claim::Mine(w) = claim(&layout, ArtifactKind::Layer, &key, || Ok(())).unwrap() else {
            panic!("nothing was there");
        };
        // A second maker sees the first one's claim and waits.
        let mut looks = 0;
        let err = claim(&layout, ArtifactKind::Layer, &key, || {
            looks += 1;
            Err(crate::error::MicrosandboxError::invalid_argument("stop"))
        })
        .err()
        .unwrap();
        assert_eq!(err.to_string(), "stop");
        assert_eq!(looks, 1);
        w.out().unwrap().write_all(b"image").unwrap();
        let guard = layout.lock::<Shared>().unwrap();
        let committed = w.seal().unwrap().commit(&layout, &guard).unwrap();
        assert_eq!(committed.metadata().unwrap().len(), 5);
        drop(guard);
        assert!(matches!(
            claim(&layout, ArtifactKind::Layer, &key, || Ok(())).unwrap(),
            Claim::Present(_)
        ));
        let tmp_names: Vec<String> = layout
            .tmp_dir()
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(tmp_names.is_empty(), "{tmp_names:?}");
    }

    #[test]
    fn damage_another_process_cleared_first_is_left_alone() {
        let (dir, _layout) = layout();
        let path = dir.path().join("home");
        let vm = path.join("cache/vm");
        std::fs::remove_dir_all(&vm).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &vm).unwrap();
        let home = crate::store::layout::Home::new(path, std::time::Duration::from_secs(1));
        let damaged = home.layout().unwrap();
        assert_eq!(damaged.vm_damage().len(), 1);
        // Another process clears it, makes the directories and an artifact.
        std::fs::remove_file(&vm).unwrap();
        std::fs::create_dir_all(vm.join("layers")).unwrap();
        std::fs::write(vm.join("layers/kept"), b"x").unwrap();
        let guard = damaged.lock::<crate::store::lock::Exclusive>().unwrap();
        assert!(clear_damage(&damaged, &guard).unwrap().is_empty());
        assert!(vm.join("layers/kept").is_file());
        assert!(!path_exists(&dir.path().join("home/cache/quarantine")));
    }

    fn path_exists(p: &std::path::Path) -> bool {
        std::fs::symlink_metadata(p).is_ok()
    }

    #[test]
    fn a_dropped_writer_leaves_nothing() {
        let (_home, layout) = layout();
        let key = Digest::of(b"y");
        let Claim::Mine(w) = claim(&layout, ArtifactKind::Fsmeta, &key, || Ok(())).unwrap() else {
            panic!();
        };
        drop(w);
        assert!(layout.tmp_dir().entries().unwrap().is_empty());
        assert!(open(&layout, ArtifactKind::Fsmeta, &key).unwrap().is_none());
    }
}
