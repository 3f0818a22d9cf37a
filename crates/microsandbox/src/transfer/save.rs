//! Saving images into one archive: an OCI archive (the default) or a
//! docker-archive that `docker load` and skopeo read.
//!
//! The archive is deterministic: entries sorted, times 0, owners 0, modes
//! fixed, so the same images give the same bytes. It is written to a
//! temporary file beside `path`, fsynced and renamed into place, so a
//! failed save never leaves half an archive at `path`. Blobs stream from
//! the cache into the archive; none is held in memory. A transfer lease
//! pins them meanwhile, so a prune running alongside deletes none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::Path;

use serde::Serialize;

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{Descriptor, IndexFile, Shape, ANN_REF_NAME, MEDIA_OCI_INDEX};
use crate::oci::reference::Reference;
use crate::store::catalog;
use crate::store::content;
use crate::store::fs::{random_hex, sync_dir, ATOMIC_TMP_MARK};
use crate::store::layout::Layout;
use crate::store::lease::TransferPin;
use crate::store::lock::LockMode;

/// The containerd annotation for a full image name.
const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The kind of archive to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaveFormat {
    /// A tar of an OCI image layout whose index names every reference.
    #[default]
    Oci,
    /// A docker-archive (`manifest.json` with `RepoTags`, `repositories`),
    /// holding an OCI layout as well, as Docker 25 and later write it.
    Docker,
}

/// How to save.
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// The kind of archive.
    pub format: SaveFormat,
}

/// One image to save.
struct Chosen {
    reference: Reference,
    manifest: Descriptor,
    config: Digest,
    layers: Vec<Digest>,
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
/// for an empty list, `Io` when the archive cannot be written; `path` is
/// untouched on any error.
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
    layout.ensure()?;
    let guard = layout.lock(LockMode::Shared)?;
    let index = layout.read_index()?;
    let mut chosen = Vec::new();
    for reference in parsed {
        let at = catalog::positions(&index, &reference);
        let Some(&first) = at.first() else {
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
    // Pin what the archive needs, then write without the lock: a prune may
    // run meanwhile and keeps every pinned blob.
    let blobs: BTreeSet<Digest> = chosen
        .iter()
        .flat_map(|c| [&c.manifest.digest, &c.config].into_iter().chain(&c.layers))
        .cloned()
        .collect();
    let mut pin = TransferPin::take_locked(layout, blobs.into_iter().collect())?;
    drop(guard);
    refuse_inside_home(layout, path)?;
    write_atomically(path, |out| {
        write_archive(layout, &chosen, options.format, out, &mut pin)
    })
}

/// An archive written into the home could replace `index.json`, a blob,
/// a lease or the lock: refused.
fn refuse_inside_home(layout: &Layout, path: &Path) -> MicrosandboxResult<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::env::current_dir().at("find the current directory", path)?,
    };
    let (Ok(dir), Ok(home)) = (dir.canonicalize(), layout.home().canonicalize()) else {
        return Ok(()); // a missing directory fails the write itself
    };
    if dir.starts_with(&home) {
        return Err(MicrosandboxError::invalid_argument(format!(
            "{} is inside the cache home {}; save elsewhere",
            path.display(),
            home.display()
        )));
    }
    Ok(())
}

/// Runs `write` on a temporary file beside `path`, then renames it there.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> MicrosandboxResult<()>,
) -> MicrosandboxResult<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::env::current_dir().at("find the current directory", path)?,
    };
    let name = path.file_name().ok_or_else(|| {
        MicrosandboxError::invalid_argument(format!("{} names no file", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}{ATOMIC_TMP_MARK}{}",
        name.to_string_lossy(),
        random_hex(8)
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at("create", &tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| MicrosandboxError::io("write", &tmp, e.into_error()))?;
        file.sync_all().at("fsync", &tmp)?;
        fs::rename(&tmp, path).at("rename into place", path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir)
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
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut blobs: BTreeSet<&Digest> = BTreeSet::new();
    for c in chosen {
        blobs.insert(&c.manifest.digest);
        blobs.insert(&c.config);
        blobs.extend(c.layers.iter());
    }
    // The OCI index: one descriptor per reference, named in full.
    let mut index = IndexFile::default();
    for c in chosen {
        let mut d = c.manifest.clone();
        let name = c.reference.canonical();
        d.annotations.insert(ANN_REF_NAME.to_owned(), name.clone());
        d.annotations.insert(ANN_CONTAINERD_NAME.to_owned(), name);
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
    let io_err = |e: io::Error| MicrosandboxError::io("write archive", layout.oci_dir(), e);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, tar::EntryType::Directory, 0o755);
        tar.append_data(&mut h, dir, io::empty()).map_err(io_err)?;
    }
    for digest in blobs {
        pin.renew_if_due()?;
        let path = layout.blob_path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                MicrosandboxError::corrupt(format!("blob {digest} is missing from the cache"))
            }
            _ => MicrosandboxError::io("open", &path, e),
        })?;
        let size = file.metadata().at("stat", &path)?.len();
        let mut h = header(size, tar::EntryType::Regular, 0o644);
        tar.append_data(&mut h, blob_name(digest), file)
            .map_err(|e| MicrosandboxError::io("copy into the archive", &path, e))?;
    }
    for (name, bytes) in &files {
        add_bytes(&mut tar, name, bytes).map_err(io_err)?;
    }
    tar.finish().map_err(io_err)
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
        let repo = c.reference.familiar_name();
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
