//! Archives (tar, optionally gzip-compressed) staged in one pass.
//!
//! An archive is read once, in order, without seeking: a JSON entry of up
//! to 1 MiB stays in memory, anything else (layers, whatever their size)
//! streams into a locked temporary in `tmp/` and is hashed on the way. An entry under
//! `blobs/sha256/<hex>` must hash to its name. Symlinks and hardlinks are
//! never created on disk: they are recorded as aliases inside the archive
//! and refused when they point outside it. Paths with `..`, absolute paths,
//! devices, FIFOs, and two entries of one name with different content are
//! refused. Nothing staged is visible in the cache until the caller
//! commits it; whatever it does not take is deleted when the stage drops.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Component, Path};
use std::sync::Arc;

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::Descriptor;
use crate::store::blob::{BlobWriter, VerifiedBlob};
use crate::store::layout::Layout;
use crate::transfer::layer::Compression;

const MEMORY_ENTRY_LIMIT: u64 = 1 << 20;
/// What the tar reader may buffer between two entries (headers, GNU long
/// names, PAX records).
const METADATA_LIMIT: u64 = 1 << 20;
/// The longest entry name or link target.
const NAME_MAX: usize = 4096;
/// How many entries staged in `tmp/` one archive may hold.
const MAX_FILE_ENTRIES: usize = 10_000;
const MEMORY_TOTAL_LIMIT: u64 = 256 << 20;
const MAX_ENTRIES: usize = 1_000_000;
const MAX_LINK_HOPS: usize = 16;

enum Data {
    Memory(Arc<[u8]>),
    /// `None` once the commit took it.
    File(Option<VerifiedBlob>),
    /// In the cache already (hashed on the way, never written to `tmp/`).
    Cached,
}

struct Staged {
    digest: Digest,
    size: u64,
    data: Data,
}

/// The regular files and links of an archive, staged.
pub struct TarStage {
    /// The cache's blobs, for entries it holds already.
    cache: crate::store::fs::Dir,
    label: String,
    files: std::sync::Mutex<HashMap<String, Staged>>,
    links: HashMap<String, String>,
    by_digest: HashMap<Digest, String>,
}

fn invalid(label: &str, what: impl std::fmt::Display) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::InvalidArchive, format!("{label}: {what}"))
}

/// What went wrong reading a tar, never quoting its bytes: the tar
/// reader's own messages quote header fields and names (`numeric field
/// was not a number: <bytes> when getting cksum for <bytes>`), so a file
/// that is no archive (`/etc/shadow`) would be echoed into the error.
/// Only the limits' messages (`InvalidData`, made here) and the system's
/// own errors are told as they are.
fn unreadable(e: &io::Error) -> String {
    if e.raw_os_error().is_some() || e.kind() == io::ErrorKind::InvalidData {
        return e.to_string();
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "it ends midway".to_owned(),
        _ => "not a tar archive, or a damaged one (a header or compressed block does not parse)"
            .to_owned(),
    }
}

/// `a/./b/` → `a/b`; `None` for an absolute path or one that climbs out.
fn normalize(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

fn entry_name(raw: &[u8]) -> Option<&Path> {
    let s = std::str::from_utf8(raw).ok()?;
    if s.contains('\0') {
        return None;
    }
    Some(Path::new(s))
}

impl TarStage {
    /// Reads the whole archive from `reader` (already decompressed).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArchive`] naming the entry for anything hostile
    /// or truncated; [`ErrorKind::DigestMismatch`] for a blob that does not
    /// hash to its name.
    pub fn from_reader(
        layout: &Layout,
        reader: impl Read,
        label: &str,
        max_total: u64,
    ) -> MicrosandboxResult<TarStage> {
        let budget = Budget::default();
        let mut archive = tar::Archive::new(Metered {
            inner: reader,
            budget: budget.clone(),
            max_total,
        });
        let mut stage = TarStage {
            cache: layout.blobs_dir().clone(),
            label: label.to_owned(),
            files: std::sync::Mutex::default(),
            links: HashMap::new(),
            by_digest: HashMap::new(),
        };
        let mut in_memory = 0u64;
        let mut on_disk = 0usize;
        let broken =
            |e: io::Error| invalid(label, format!("unreadable archive: {}", unreadable(&e)));
        let mut entries = archive.entries().map_err(broken)?;
        let mut n = 0usize;
        loop {
            // What the tar reader may consume to find the next entry: the
            // rest of the last one, and headers, long names and PAX records
            // up to a bound; it buffers those whole, so they are bounded.
            budget.allow_more(METADATA_LIMIT);
            let Some(entry) = entries.next() else { break };
            n += 1;
            if n > MAX_ENTRIES {
                return Err(invalid(label, format!("more than {MAX_ENTRIES} entries")));
            }
            let mut entry = entry.map_err(broken)?;
            let size = entry.size();
            budget.allow_more(size.saturating_add(512));
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind == tar::EntryType::XGlobalHeader {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
            if raw.len() > NAME_MAX {
                return Err(invalid(label, format!("entry {shown:?}…: name too long")));
            }
            in_memory += raw.len() as u64;
            let name = entry_name(&raw)
                .and_then(normalize)
                .ok_or_else(|| invalid(label, format!("entry {shown:?}: unsafe path")))?;
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| t.len() <= NAME_MAX)
                    .and_then(|t| entry_name(&t).map(Path::to_owned))
                    .ok_or_else(|| invalid(label, format!("entry {shown:?}: bad link")))?;
                let resolved = if kind.is_symlink() && !target.is_absolute() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&target)
                } else {
                    target.clone()
                };
                let resolved = normalize(&resolved).ok_or_else(|| {
                    invalid(
                        label,
                        format!("entry {shown:?}: link to {target:?} points outside the archive"),
                    )
                })?;
                in_memory += resolved.len() as u64;
                stage.add_link(name, resolved, &shown)?;
                continue;
            }
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                return Err(invalid(
                    label,
                    format!("entry {shown:?}: {kind:?} entries are not allowed"),
                ));
            }
            let staged = if size <= MEMORY_ENTRY_LIMIT {
                let mut bytes = Vec::with_capacity(size as usize);
                (&mut entry)
                    .take(MEMORY_ENTRY_LIMIT + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| {
                        invalid(
                            label,
                            format!(
                                "entry {shown:?}: truncated or unreadable: {}",
                                unreadable(&e)
                            ),
                        )
                    })?;
                if bytes.len() as u64 != size {
                    return Err(invalid(
                        label,
                        format!(
                            "entry {shown:?}: truncated: {} of {size} bytes",
                            bytes.len()
                        ),
                    ));
                }
                if looks_like_json(&bytes) {
                    // Manifests, configs, indexes: read again while planning.
                    in_memory += size;
                    if in_memory > MEMORY_TOTAL_LIMIT {
                        return Err(invalid(label, "too much JSON"));
                    }
                    Staged {
                        digest: Digest::of(&bytes),
                        size,
                        data: Data::Memory(bytes.into()),
                    }
                } else {
                    // A small layer: to tmp/ like a large one.
                    let blob = stage_file(layout, &mut on_disk, &bytes[..], size, label, &shown)?;
                    stage.staged_file(blob, size)
                }
            } else if let Some(digest) = cached_blob(layout, &name, size) {
                // A blob the cache holds: hashed to prove the entry is what
                // its name says, never written again.
                skip_verified(entry, &digest, size, label, &shown)?;
                Staged {
                    digest,
                    size,
                    data: Data::Cached,
                }
            } else {
                let blob = stage_file(layout, &mut on_disk, entry, size, label, &shown)?;
                stage.staged_file(blob, size)
            };
            if in_memory > MEMORY_TOTAL_LIMIT {
                return Err(invalid(label, "too many or too long names"));
            }
            stage.add_file(name, staged, &shown)?;
        }
        stage.resolve_links()?;
        Ok(stage)
    }

    /// A blob streamed to `tmp/`; the same content under another name is
    /// kept once, every use going through the digest to the first name.
    fn staged_file(&self, blob: VerifiedBlob, size: u64) -> Staged {
        let digest = blob.digest().clone();
        let data = if self.by_digest.contains_key(&digest) {
            Data::File(None)
        } else {
            Data::File(Some(blob))
        };
        Staged { digest, size, data }
    }

    fn add_file(&mut self, name: String, staged: Staged, shown: &str) -> MicrosandboxResult<()> {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if Digest::from_hex(hex).ok().as_ref() != Some(&staged.digest) {
                return Err(MicrosandboxError::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "{}: entry {shown:?} hashes to {}",
                        self.label, staged.digest
                    ),
                ));
            }
        }
        if self.links.contains_key(&name) {
            return Err(invalid(
                &self.label,
                format!("entry {shown:?} is both a link and a file"),
            ));
        }
        let files = self.files.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = files.get(&name) {
            if previous.digest != staged.digest {
                return Err(invalid(
                    &self.label,
                    format!("entry {shown:?} appears twice with different content"),
                ));
            }
            return Ok(());
        }
        self.by_digest
            .entry(staged.digest.clone())
            .or_insert_with(|| name.clone());
        files.insert(name, staged);
        Ok(())
    }

    fn add_link(&mut self, name: String, target: String, shown: &str) -> MicrosandboxResult<()> {
        let clash = self
            .files
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&name)
            || self.links.get(&name).is_some_and(|t| *t != target);
        if clash {
            return Err(invalid(
                &self.label,
                format!("entry {shown:?} appears twice"),
            ));
        }
        self.links.insert(name, target);
        Ok(())
    }

    /// Every link must end at a staged regular file within a few hops.
    fn resolve_links(&self) -> MicrosandboxResult<()> {
        for name in self.links.keys() {
            if self.resolve(name).is_none() {
                return Err(invalid(
                    &self.label,
                    format!("link {name:?} does not lead to a file of the archive"),
                ));
            }
        }
        Ok(())
    }

    fn resolve(&self, name: &str) -> Option<String> {
        let mut at = name.to_owned();
        for _ in 0..=MAX_LINK_HOPS {
            if self
                .files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&at)
            {
                return Some(at);
            }
            at = self.links.get(&at)?.clone();
        }
        None
    }

    /// The digest and size of the file at `path`, through links.
    pub fn entry(&self, path: &str) -> Option<(Digest, u64)> {
        let name = normalize(Path::new(path))?;
        let name = self.resolve(&name)?;
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let f = files.get(&name)?;
        Some((f.digest.clone(), f.size))
    }

    /// A top-level file, at most `limit + 1` bytes of it; `None` if absent.
    pub fn top(&self, name: &str, limit: u64) -> MicrosandboxResult<Option<Vec<u8>>> {
        match self.entry(name) {
            None => Ok(None),
            Some((digest, _)) => self.read(&digest, limit, name).map(Some),
        }
    }

    /// At most `limit + 1` bytes of the content of `digest`.
    pub fn read(&self, digest: &Digest, limit: u64, what: &str) -> MicrosandboxResult<Vec<u8>> {
        let missing = || invalid(&self.label, format!("{what}: blob {digest} is missing"));
        let name = self.by_digest.get(digest).ok_or_else(missing)?;
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let staged = files.get(name).ok_or_else(missing)?;
        match &staged.data {
            Data::Memory(bytes) => {
                Ok(bytes[..bytes.len().min(limit.saturating_add(1) as usize)].to_vec())
            }
            Data::File(Some(blob)) => {
                let mut bytes = Vec::new();
                blob.reader()
                    .take(limit.saturating_add(1))
                    .read_to_end(&mut bytes)
                    .map_err(|e| MicrosandboxError::io("read", &blob.path(), e))?;
                Ok(bytes)
            }
            Data::File(None) => Err(missing()),
            Data::Cached => {
                let mut bytes = Vec::new();
                self.cache
                    .open_regular(digest.hex())?
                    .ok_or_else(missing)?
                    .take(limit.saturating_add(1))
                    .read_to_end(&mut bytes)
                    .map_err(|e| {
                        MicrosandboxError::io("read", &self.cache.join(digest.hex()), e)
                    })?;
                Ok(bytes)
            }
        }
    }

    /// The staged content of a descriptor as a verified temporary: taken
    /// from the stage, or written from memory.
    pub fn stage(
        &self,
        layout: &Layout,
        d: &Descriptor,
        what: &str,
    ) -> MicrosandboxResult<VerifiedBlob> {
        let missing = || invalid(&self.label, format!("{what}: blob {} is missing", d.digest));
        let name = self.by_digest.get(&d.digest).ok_or_else(missing)?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let staged = files.get_mut(name).ok_or_else(missing)?;
        if staged.size != d.size {
            return Err(MicrosandboxError::new(
                ErrorKind::DigestMismatch,
                format!(
                    "{}: {what}: {} is declared with {} bytes, the archive holds {}",
                    self.label, d.digest, d.size, staged.size
                ),
            ));
        }
        match &mut staged.data {
            Data::Memory(bytes) => {
                let mut w = BlobWriter::create(layout)?.expecting(&d.digest, d.size);
                w.write(bytes, what)?;
                w.finish(what).map(|(blob, ())| blob)
            }
            Data::File(slot) => slot.take().ok_or_else(missing),
            // Asked for only when the cache lost it since the archive was
            // read: a prune ran meanwhile.
            Data::Cached => Err(MicrosandboxError::new(
                ErrorKind::Busy,
                format!(
                    "{}: {what}: blob {} was pruned while the load ran; load again",
                    self.label, d.digest
                ),
            )),
        }
    }

    /// The compression the content of `digest` is in, told by its magic.
    pub fn compression(&self, digest: &Digest) -> Option<Compression> {
        // `read` gives one byte past its limit: the four a magic takes.
        self.read(digest, 3, "layer")
            .ok()
            .and_then(|head| Compression::sniff(&head))
    }
}

/// Whether a small entry is JSON (a manifest, a config, an index): its
/// first byte that is not white space opens an object or an array.
fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{') | Some(b'[')
    )
}

/// The digest an entry named `blobs/sha256/<hex>` stands for, when the
/// cache holds that blob at that size.
fn cached_blob(layout: &Layout, name: &str, size: u64) -> Option<Digest> {
    let digest = Digest::from_hex(name.strip_prefix("blobs/sha256/")?).ok()?;
    let stat = layout.blob_stat(&digest).ok()??;
    (stat.st_size as u64 == size && layout.has_blob(&digest)).then_some(digest)
}

/// Reads an entry to its end, hashing it, and checks it hashes to `digest`.
fn skip_verified(
    mut entry: impl Read,
    digest: &Digest,
    size: u64,
    label: &str,
    shown: &str,
) -> MicrosandboxResult<()> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = crate::store::fs::read_full(&mut entry, &mut buf).map_err(|e| {
            invalid(
                label,
                format!(
                    "entry {shown:?}: truncated or unreadable: {}",
                    unreadable(&e)
                ),
            )
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != size {
        return Err(invalid(
            label,
            format!("entry {shown:?}: truncated: {total} of {size} bytes"),
        ));
    }
    let actual = Digest::from_hasher(hasher);
    if &actual != digest {
        return Err(MicrosandboxError::new(
            ErrorKind::DigestMismatch,
            format!("{label}: entry {shown:?} hashes to {actual}"),
        ));
    }
    Ok(())
}

fn stage_file(
    layout: &Layout,
    on_disk: &mut usize,
    reader: impl Read,
    size: u64,
    label: &str,
    shown: &str,
) -> MicrosandboxResult<VerifiedBlob> {
    *on_disk += 1;
    if *on_disk > MAX_FILE_ENTRIES {
        return Err(invalid(
            label,
            format!("more than {MAX_FILE_ENTRIES} layer-like entries"),
        ));
    }
    stream_to_tmp(layout, reader, size, label, shown)
}

/// How far into the decompressed stream the tar reader may go.
#[derive(Clone, Default)]
struct Budget(std::rc::Rc<std::cell::Cell<(u64, u64)>>);

impl Budget {
    /// Allows `more` bytes past what has been read so far.
    fn allow_more(&self, more: u64) {
        let (read, _) = self.0.get();
        self.0.set((read, read.saturating_add(more)));
    }
}

/// A reader that refuses to go past its budget, so no tar metadata record
/// (a long name, a PAX header) can make the tar reader buffer gigabytes.
struct Metered<R> {
    inner: R,
    budget: Budget,
    /// The most bytes the whole (decompressed) archive may hold: a gzip
    /// archive that inflates past it is a bomb.
    max_total: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (read, limit) = self.budget.0.get();
        let room = limit.saturating_sub(read);
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a tar header record is larger than 1 MiB",
            ));
        }
        let take = buf.len().min(room.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..take])?;
        if read + n as u64 > self.max_total {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the archive holds more than {} bytes (maxLayerBytes), a decompression bomb",
                    self.max_total
                ),
            ));
        }
        self.budget.0.set((read + n as u64, limit));
        Ok(n)
    }
}

fn stream_to_tmp(
    layout: &Layout,
    entry: impl Read,
    size: u64,
    label: &str,
    shown: &str,
) -> MicrosandboxResult<VerifiedBlob> {
    let what = format!("{label}: entry {shown:?}");
    let mut w = BlobWriter::create(layout)?;
    w.write_from(entry, &what, |e| {
        invalid(
            label,
            format!(
                "entry {shown:?}: truncated or unreadable: {}",
                unreadable(&e)
            ),
        )
    })?;
    if w.written() != size {
        return Err(invalid(
            label,
            format!(
                "entry {shown:?}: truncated: {} of {size} bytes",
                w.written()
            ),
        ));
    }
    w.finish_unnamed(size, &what).map(|(blob, ())| blob)
}
