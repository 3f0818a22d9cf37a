//! Saving images into one archive: a docker-archive (the default) that
//! `docker load` and skopeo read, an OCI archive, or MiniBox's archive
//! (`meta.json` and `blobs/sha256/<hex>`, one image).
//!
//! The archive is deterministic: entries sorted, times 0, owners 0, modes
//! fixed, so the same images give the same bytes. It is written to a
//! temporary file beside `path`, fsynced and renamed into place, so a
//! failed save never leaves half an archive at `path`. An existing file at
//! `path` is replaced only when asked ([`SaveOptions::overwrite`]): without
//! it the rename refuses to replace anything (`RENAME_NOREPLACE`), so a
//! file that appears meanwhile is kept too. A link, a directory or
//! anything but a regular file at `path` is never replaced, and writes
//! never go through a link: the archive is a new file renamed over the
//! name, never an open of the old one. Blobs stream from
//! the cache into the archive; none is held in memory. A transfer lease
//! pins them meanwhile, so a prune running alongside deletes none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use serde::Serialize;

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{
    Descriptor, IndexFile, Shape, ANN_CONTAINERD_NAME, ANN_REF_NAME, MEDIA_OCI_INDEX,
};
use crate::oci::reference::Reference;
use crate::store::content;
use crate::store::fs::{identity, random_hex, Dir, ATOMIC_TMP_MARK};
use crate::store::index;
use crate::store::layout::Layout;
use crate::store::lease::TransferPin;
use crate::store::lock::Shared;

/// The kind of archive to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaveFormat {
    /// A tar of an OCI image layout whose index names every reference.
    Oci,
    /// A docker-archive (`manifest.json` with `RepoTags`, `repositories`),
    /// holding an OCI layout as well, as Docker 25 and later write it: what
    /// `docker load`, `podman load`, skopeo and this cache all read, so the
    /// default (as in microsandbox's SDK).
    #[default]
    Docker,
    /// MiniBox's archive of one image: `meta.json` (`{"image",
    /// "manifest_digest"}`, the digest as bare hex, as MiniBox's own save
    /// writes it and its load reads it) and the manifest, config and layer
    /// blobs under `blobs/sha256/`.
    Minibox,
}

impl SaveFormat {
    /// `"docker"`, `"oci"` or `"minibox"`.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidArgument`] for anything else.
    pub fn parse(text: &str) -> MicrosandboxResult<SaveFormat> {
        match text {
            "docker" => Ok(SaveFormat::Docker),
            "oci" => Ok(SaveFormat::Oci),
            "minibox" => Ok(SaveFormat::Minibox),
            other => Err(MicrosandboxError::invalid_argument(format!(
                "format must be 'docker', 'oci' or 'minibox', got {other:?}"
            ))),
        }
    }
}

/// How to save.
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// The kind of archive.
    pub format: SaveFormat,
    /// Replace a regular file already at the path (never a link or
    /// anything else). Off unless set: an existing file is refused with
    /// [`crate::ErrorKind::InvalidArgument`] and left as it was.
    pub overwrite: bool,
}

/// One image to save.
struct Chosen {
    reference: Reference,
    manifest: Descriptor,
    config: Digest,
    layers: Vec<Digest>,
    /// The declared size of each blob above.
    sizes: Vec<(Digest, u64)>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerItem {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Writes the images `references` name into one archive at `path`.
///
/// # Errors
///
/// `ImageNotFound` or `InvalidReference` for a reference, `InvalidArgument`
/// for an empty list, for a path inside the home, or for something already
/// at `path` (anything but a regular file, or one without
/// [`SaveOptions::overwrite`]); `Io` when the archive cannot be written;
/// `path` is untouched on any error.
pub fn save(
    layout: &Layout,
    references: &[String],
    path: &Path,
    options: &SaveOptions,
) -> MicrosandboxResult<()> {
    if references.is_empty() {
        return Err(MicrosandboxError::invalid_argument(
            "save needs at least one reference",
        ));
    }
    let parsed = references
        .iter()
        .map(|r| Reference::parse(r))
        .collect::<MicrosandboxResult<Vec<_>>>()?;
    let guard = layout.lock::<Shared>()?;
    let index = index::read(layout)?;
    let mut chosen = Vec::new();
    for reference in parsed {
        let Some(first) = index::resolve(&index, &reference) else {
            return Err(MicrosandboxError::not_found(&reference.familiar()));
        };
        let (manifest, doc) = content::resolve_image(layout, &index.manifests[first])?;
        let Ok(Shape::Image { config, layers }) = doc.shape() else {
            return Err(MicrosandboxError::corrupt(format!(
                "manifest {} is not an image manifest",
                manifest.digest
            )));
        };
        chosen.push(Chosen {
            reference,
            config: config.digest.clone(),
            layers: layers.iter().map(|l| l.digest.clone()).collect(),
            sizes: [&manifest, config]
                .into_iter()
                .chain(layers)
                .map(|d| (d.digest.clone(), d.size))
                .collect(),
            manifest: Descriptor {
                platform: index.manifests[first].platform.clone(),
                annotations: Default::default(),
                ..manifest
            },
        });
    }
    // The same images in any order, or named twice, give the same archive.
    chosen.sort_by_key(|c| c.reference.canonical());
    chosen.dedup_by_key(|c| c.reference.canonical());
    if options.format == SaveFormat::Minibox && chosen.len() > 1 {
        return Err(MicrosandboxError::invalid_argument(format!(
            "a MiniBox archive holds one image, not {}: save them one at a time",
            chosen.len()
        )));
    }
    // Pin what the archive needs, then write without the lock: a prune may
    // run meanwhile and keeps every pinned blob.
    let blobs: BTreeSet<Digest> = chosen
        .iter()
        .flat_map(|c| [&c.manifest.digest, &c.config].into_iter().chain(&c.layers))
        .cloned()
        .collect();
    let mut pin = TransferPin::take_locked(layout, blobs.into_iter().collect())?;
    drop(guard);
    let (dir, name) = destination(path)?;
    refuse_inside_home(layout, &dir, path)?;
    write_atomically(layout, &dir, &name, options.overwrite, |out| {
        write_archive(layout, &chosen, options.format, out, &mut pin)
    })
}

/// The directory of `path` (open) and the file name in it.
fn destination(path: &Path) -> MicrosandboxResult<(Dir, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "." && *n != "..")
        .ok_or_else(|| {
            MicrosandboxError::invalid_argument(format!("{} names no file", path.display()))
        })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::env::current_dir().at("find the current directory", path)?,
    };
    Ok((Dir::open_path(&dir)?, name.to_owned()))
}

/// An archive written into the home could replace `index.json`, a blob,
/// a lease or the lock: refused. The directory the archive goes to is
/// walked up (`..` by `..`, through descriptors) and compared with the
/// home by device and inode, so no spelling of the path and no link can
/// hide the home.
fn refuse_inside_home(layout: &Layout, dir: &Dir, path: &Path) -> MicrosandboxResult<()> {
    let home = identity(&layout.home_dir().stat_self()?);
    let mut at = dir.clone();
    for _ in 0..4096 {
        let here = identity(&at.stat_self()?);
        if here == home {
            return Err(MicrosandboxError::invalid_argument(format!(
                "{} is inside the cache home {}; save elsewhere",
                path.display(),
                layout.home().display()
            )));
        }
        let Some(up) = at.open_dir("..", None)? else {
            return Ok(());
        };
        if identity(&up.stat_self()?) == here {
            return Ok(()); // the root
        }
        at = up;
    }
    Err(MicrosandboxError::invalid_argument(format!(
        "{}: the directory is nested too deep to tell whether it is inside the cache home",
        path.display()
    )))
}

fn exists(dir: &Dir, name: &str) -> MicrosandboxError {
    MicrosandboxError::invalid_argument(format!(
        "{} exists; save elsewhere, or pass overwrite to replace it",
        dir.join(name).display()
    ))
}

/// The mode of a new archive: an existing file (replaced only with
/// `overwrite`) keeps its own; a new one is private when the home is (0600
/// under a 0700 home), else the usual 0666 less the umask.
fn archive_mode(
    layout: &Layout,
    dir: &Dir,
    name: &str,
    overwrite: bool,
) -> MicrosandboxResult<Option<u32>> {
    if let Some(existing) = dir.stat(name)? {
        // Only a regular file is replaced: a link (to the home, say) or a
        // directory in the way is the caller's mistake, never overwritten.
        if crate::store::fs::kind(&existing) != rustix::fs::FileType::RegularFile {
            return Err(MicrosandboxError::invalid_argument(format!(
                "{} exists and is not a regular file ({:?}); name a file",
                dir.join(name).display(),
                crate::store::fs::kind(&existing)
            )));
        }
        if !overwrite {
            return Err(exists(dir, name));
        }
        return Ok(Some(existing.st_mode & 0o7777));
    }
    let home = layout.home_dir().stat_self()?.st_mode;
    Ok((home & 0o077 == 0).then_some(0o600))
}

/// Runs `write` on a temporary file beside the archive, then renames it
/// into place, all through the directory's descriptor: over what is there
/// with `overwrite` (a regular file, checked first; a rename replaces the
/// name, whatever it has become, and never writes through it), else only
/// if nothing is.
fn write_atomically(
    layout: &Layout,
    dir: &Dir,
    name: &str,
    overwrite: bool,
    write: impl FnOnce(&mut BufWriter<File>) -> MicrosandboxResult<()>,
) -> MicrosandboxResult<()> {
    let tmp = format!(".{name}{ATOMIC_TMP_MARK}{}", random_hex(8));
    let tmp_path = dir.join(&tmp);
    let mode = archive_mode(layout, dir, name, overwrite)?;
    let result = (|| {
        let file = dir.create_new(&tmp).at("create", &tmp_path)?;
        if let Some(mode) = mode {
            rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(mode))
                .map_err(io::Error::from)
                .at("set the mode of", &tmp_path)?;
        }
        let mut out = BufWriter::with_capacity(1 << 20, file);
        write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| MicrosandboxError::io("write", &tmp_path, e.into_error()))?;
        file.sync_all().at("fsync", &tmp_path)?;
        if overwrite {
            dir.rename(&tmp, dir, name)
                .at("rename into place", &dir.join(name))
        } else if dir
            .rename_noreplace(&tmp, dir, name)
            .at("rename into place", &dir.join(name))?
        {
            Ok(())
        } else {
            Err(exists(dir, name))
        }
    })();
    if result.is_err() {
        let _ = dir.remove(&tmp);
    }
    result?;
    dir.sync()
}

fn header(size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn add_bytes(
    tar: &mut tar::Builder<&mut BufWriter<File>>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut h = header(bytes.len() as u64, tar::EntryType::Regular, 0o644);
    tar.append_data(&mut h, name, bytes)
}

fn write_archive(
    layout: &Layout,
    chosen: &[Chosen],
    format: SaveFormat,
    out: &mut BufWriter<File>,
    pin: &mut TransferPin,
) -> MicrosandboxResult<()> {
    if format == SaveFormat::Minibox {
        return write_minibox(layout, &chosen[0], out, pin);
    }
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let blobs: BTreeMap<&Digest, u64> = chosen
        .iter()
        .flat_map(|c| c.sizes.iter().map(|(d, s)| (d, *s)))
        .collect();
    // The OCI index: one descriptor per reference, named in full.
    let mut index = IndexFile::default();
    for c in chosen {
        let mut d = c.manifest.clone();
        let name = c.reference.canonical();
        d.annotations.insert(ANN_REF_NAME, &name);
        d.annotations.insert(ANN_CONTAINERD_NAME, name);
        index.manifests.push(d);
    }
    index.media_type = Some(MEDIA_OCI_INDEX.to_owned());
    files.insert(
        "index.json".into(),
        serde_json::to_vec(&index).expect("an index always serializes"),
    );
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    if format == SaveFormat::Docker {
        let (manifest, repositories) = docker_files(chosen);
        files.insert("manifest.json".into(), manifest);
        files.insert("repositories".into(), repositories);
    }

    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let io_err = |e: io::Error| MicrosandboxError::io("write archive", layout.oci_dir().path(), e);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, tar::EntryType::Directory, 0o755);
        tar.append_data(&mut h, dir, io::empty()).map_err(io_err)?;
    }
    for (digest, declared) in blobs {
        copy_blob(layout, &mut tar, digest, declared, pin)?;
    }
    for (name, bytes) in &files {
        add_bytes(&mut tar, name, bytes).map_err(io_err)?;
    }
    tar.finish().map_err(io_err)
}

/// MiniBox's archive of one image: `meta.json`, then the manifest, the
/// config and the layers, in that order, as MiniBox writes them.
fn write_minibox(
    layout: &Layout,
    chosen: &Chosen,
    out: &mut BufWriter<File>,
    pin: &mut TransferPin,
) -> MicrosandboxResult<()> {
    #[derive(Serialize)]
    struct Meta<'a> {
        image: String,
        manifest_digest: &'a str,
    }
    let meta = Meta {
        image: chosen.reference.familiar(),
        manifest_digest: chosen.manifest.digest.hex(),
    };
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let io_err = |e: io::Error| MicrosandboxError::io("write archive", layout.oci_dir().path(), e);
    let meta = serde_json::to_vec(&meta).expect("meta.json always serializes");
    add_bytes(&mut tar, "meta.json", &meta).map_err(io_err)?;
    let mut done = BTreeSet::new();
    for (digest, declared) in &chosen.sizes {
        if done.insert(digest) {
            copy_blob(layout, &mut tar, digest, *declared, pin)?;
        }
    }
    tar.finish().map_err(io_err)
}

/// Copies one blob of the cache into the archive as `blobs/sha256/<hex>`.
/// The disk is not trusted: a blob of the wrong length is refused before
/// a byte is copied, one of the wrong content after its last byte, and the
/// archive (a temporary) never appears.
fn copy_blob(
    layout: &Layout,
    tar: &mut tar::Builder<&mut BufWriter<File>>,
    digest: &Digest,
    declared: u64,
    pin: &mut TransferPin,
) -> MicrosandboxResult<()> {
    pin.renew_if_due()?;
    let path = layout.blob_path(digest);
    let file = layout.open_blob(digest)?.ok_or_else(|| {
        MicrosandboxError::corrupt(format!("blob {digest} is missing from the cache"))
    })?;
    let size = file.metadata().at("stat", &path)?.len();
    if size != declared {
        return Err(MicrosandboxError::corrupt(format!(
            "blob {digest} has {size} bytes where its descriptor says {declared}: \
             the cache was changed behind its back (verify --repair)"
        )));
    }
    let mut hashing = Hashing::new(io::Read::take(file, size));
    let mut h = header(size, tar::EntryType::Regular, 0o644);
    tar.append_data(&mut h, blob_name(digest), &mut hashing)
        .map_err(|e| MicrosandboxError::io("copy into the archive", &path, e))?;
    // A blob that shrank midway gave fewer bytes than its header says.
    if hashing.count != size {
        return Err(MicrosandboxError::corrupt(format!(
            "blob {digest} changed while it was saved ({} of {size} bytes)",
            hashing.count
        )));
    }
    let actual = hashing.digest();
    if &actual != digest {
        return Err(MicrosandboxError::corrupt(format!(
            "blob {digest} hashes to {actual}: the cache was changed behind its back \
             (verify --repair)"
        )));
    }
    Ok(())
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R: io::Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: sha2::Digest::new(),
            count: 0,
        }
    }

    fn digest(self) -> Digest {
        Digest::from_hasher(self.hasher)
    }
}

impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `manifest.json` and `repositories` of a docker-archive.
fn docker_files(chosen: &[Chosen]) -> (Vec<u8>, Vec<u8>) {
    // One item per image; every tag of it in RepoTags.
    let mut items: Vec<(Digest, DockerItem)> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for c in chosen {
        let at = match items.iter().position(|(d, _)| *d == c.manifest.digest) {
            Some(i) => i,
            None => {
                items.push((
                    c.manifest.digest.clone(),
                    DockerItem {
                        config: blob_name(&c.config),
                        repo_tags: Vec::new(),
                        layers: c.layers.iter().map(blob_name).collect(),
                    },
                ));
                items.len() - 1
            }
        };
        // A digest-only reference has no tag to give.
        let Some(tag) = c.reference.tag() else {
            continue;
        };
        // Fully qualified, as skopeo writes them: podman reads a bare
        // `deb:1` as `localhost/deb:1`.
        let repo = c.reference.repository();
        let repo_tag = format!("{repo}:{tag}");
        if !items[at].1.repo_tags.contains(&repo_tag) {
            items[at].1.repo_tags.push(repo_tag);
        }
        let top = c
            .layers
            .last()
            .map(|d| d.hex().to_owned())
            .unwrap_or_default();
        repositories
            .entry(repo)
            .or_default()
            .insert(tag.to_owned(), top);
    }
    let items: Vec<DockerItem> = items.into_iter().map(|(_, i)| i).collect();
    (
        serde_json::to_vec(&items).expect("a manifest always serializes"),
        serde_json::to_vec(&repositories).expect("repositories always serialize"),
    )
}
