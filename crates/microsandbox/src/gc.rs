//! Prune: mark from the roots, sweep `blobs/`, `tmp/` and expired leases.
//!
//! Roots are the references kept and everything an unexpired lease pins.
//! The index is rewritten without the removed references before any blob
//! is deleted, so a crash mid-sweep leaves unreachable blobs for the next
//! prune, never a reference to a deleted blob. The whole run holds the
//! exclusive cache lock: no commit can land between mark and sweep.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::fsutil::{read_bounded, sync_dir, ATOMIC_TMP_MARK};
use crate::handle::ImagePruneReport;
use crate::ingest::stale_tmp_file;
use crate::layout::Layout;
use crate::lease::{self, Pins};
use crate::lock::LockMode;
use crate::model::{ManifestDoc, Shape};
use crate::partial::digest_of_name;
use crate::{content, time};

/// What a blob is, as far as the graph tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Manifest,
    Config,
    Layer,
}

/// The blobs reachable from a set of roots, with their kinds.
#[derive(Debug, Default)]
struct Graph {
    kinds: HashMap<Digest, Kind>,
}

impl Graph {
    /// Walks a manifest or index and everything below it. A missing root is
    /// skipped: it needs nothing. A root that does not parse stops the
    /// prune, since what it needs cannot be known.
    fn walk_manifest(&mut self, layout: &Layout, digest: &Digest) -> MicrosandboxResult<()> {
        if self.kinds.contains_key(digest) {
            return Ok(());
        }
        if !layout.has_blob(digest) {
            return Ok(());
        }
        self.kinds.insert(digest.clone(), Kind::Manifest);
        let doc = content::read_doc(layout, digest)?;
        match doc.shape() {
            Ok(Shape::Index(children)) => {
                for child in children {
                    self.walk_manifest(layout, &child.digest)?;
                }
            }
            Ok(Shape::Image { config, layers }) => {
                self.kinds.insert(config.digest.clone(), Kind::Config);
                for layer in layers {
                    self.kinds
                        .entry(layer.digest.clone())
                        .or_insert(Kind::Layer);
                }
            }
            Err(_) => unreachable!("read_doc checks the shape"),
        }
        Ok(())
    }
}

/// Runs the default prune: every reference no lease pins goes, then every
/// blob nothing kept needs, stale temporaries and expired leases.
pub fn prune(layout: &Layout) -> MicrosandboxResult<ImagePruneReport> {
    layout.ensure()?;
    let _guard = layout.lock(LockMode::Exclusive)?;
    let now = time::now();
    let leases = lease::list(layout)?;
    let pins = Pins::of(&leases, now);
    let mut report = ImagePruneReport::default();

    let mut index = layout.read_index()?;
    let (kept, removed): (Vec<_>, Vec<_>) = index
        .manifests
        .drain(..)
        .partition(|d| pins.manifests.contains(&d.digest));
    index.manifests = kept;

    // Mark before anything changes: a root that cannot be read fails the
    // prune with the cache as it was.
    let mut keep = Graph::default();
    for d in &index.manifests {
        keep.walk_manifest(layout, &d.digest)?;
    }
    for digest in &pins.manifests {
        keep.walk_manifest(layout, digest)?;
    }
    if !removed.is_empty() {
        layout.write_index(&index)?;
    }
    report.image_refs_removed = removed.iter().filter(|d| d.ref_name().is_some()).count() as u64;
    let pinned_blobs: HashSet<&Digest> = pins.blobs.iter().collect();

    // Classify what goes: the removed references' graphs tell most kinds.
    let mut gone = Graph::default();
    for d in &removed {
        // A removed root that does not parse still goes; its children are
        // classified by sniffing below.
        let _ = gone.walk_manifest(layout, &d.digest);
    }

    sweep_blobs(layout, &keep, &pinned_blobs, &gone, &mut report)?;
    sweep_tmp(layout, &pinned_blobs, &mut report)?;
    for l in leases.iter().filter(|l| l.is_expired(now)) {
        if lease::remove(layout, &l.id)? {
            report.expired_leases_removed += 1;
        }
    }
    sweep_atomic_leftovers(layout.oci_dir(), &mut report)?;
    sweep_atomic_leftovers(layout.leases_dir(), &mut report)?;
    Ok(report)
}

fn sweep_blobs(
    layout: &Layout,
    keep: &Graph,
    pinned: &HashSet<&Digest>,
    gone: &Graph,
    report: &mut ImagePruneReport,
) -> MicrosandboxResult<()> {
    let dir = layout.blobs_dir();
    let mut doomed: Vec<(PathBuf, Option<Kind>)> = Vec::new();
    for entry in read_dir(dir)? {
        let name = entry.file_name();
        let Ok(digest) = Digest::from_hex(&name.to_string_lossy()) else {
            continue; // not ours to judge
        };
        if !is_regular(&entry) || keep.kinds.contains_key(&digest) || pinned.contains(&digest) {
            continue;
        }
        doomed.push((entry.path(), gone.kinds.get(&digest).copied()));
    }
    let outcomes = crate::par::in_parallel(&doomed, |(path, kind)| {
        let kind = match kind {
            Some(k) => *k,
            None => sniff(path),
        };
        Ok(delete(path)?.map(|size| (kind, size)))
    })?;
    for (kind, size) in outcomes.into_iter().flatten() {
        report.bytes_reclaimed += size;
        match kind {
            Kind::Manifest => report.manifests_removed += 1,
            Kind::Config => report.configs_removed += 1,
            Kind::Layer => report.layers_removed += 1,
        }
    }
    if !doomed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Guesses the kind of an orphan no graph reaches: small JSON that parses
/// as a manifest is one, JSON with a `rootfs` is a config, the rest
/// (anything not starting with `{`: gzip, zstd, tar) layers.
fn sniff(path: &Path) -> Kind {
    let mut head = [0u8; 1];
    let starts_json = fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .is_ok_and(|n| n == 1 && head[0] == b'{');
    if !starts_json {
        return Kind::Layer;
    }
    let Ok(Some(bytes)) = read_bounded(path, 256 << 10) else {
        return Kind::Layer;
    };
    if ManifestDoc::parse(&bytes).is_ok() {
        return Kind::Manifest;
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if v.get("rootfs").is_some() => Kind::Config,
        _ => Kind::Layer,
    }
}

/// Deletes a file, returning its size; `None` if it was already gone.
fn delete(path: &Path) -> MicrosandboxResult<Option<u64>> {
    let size = match fs::symlink_metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MicrosandboxError::io("stat", path, e)),
    };
    match fs::remove_file(path) {
        Ok(()) => Ok(Some(size)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MicrosandboxError::io("delete", path, e)),
    }
}

fn read_dir(dir: &Path) -> MicrosandboxResult<Vec<fs::DirEntry>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MicrosandboxError::io("read directory", dir, e)),
    };
    entries
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| MicrosandboxError::io("read directory", dir, e))
}

fn is_regular(entry: &fs::DirEntry) -> bool {
    entry.file_type().is_ok_and(|t| t.is_file())
}

/// Deletes every file in `tmp/` whose writer is gone (its lock is free),
/// except the partial downloads of blobs a lease pins: a running pull
/// waits to commit them. Anything but a regular file is left alone.
fn sweep_tmp(
    layout: &Layout,
    pinned: &HashSet<&Digest>,
    report: &mut ImagePruneReport,
) -> MicrosandboxResult<()> {
    for entry in read_dir(layout.tmp_dir())? {
        if !is_regular(&entry) {
            continue;
        }
        let name = entry.file_name();
        if digest_of_name(&name.to_string_lossy()).is_some_and(|d| pinned.contains(&d)) {
            continue;
        }
        let path = entry.path();
        let held = match stale_tmp_file(&path) {
            Ok(Some(lock)) => lock,
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(MicrosandboxError::io("open", &path, e)),
        };
        if let Some(size) = delete(&path)? {
            report.tmp_files_removed += 1;
            report.bytes_reclaimed += size;
        }
        drop(held);
    }
    Ok(())
}

/// Deletes the temporaries of atomic writes a crash left in `dir`. Those
/// writes happen under the cache lock, which prune holds exclusively, so
/// none is live.
fn sweep_atomic_leftovers(dir: &Path, report: &mut ImagePruneReport) -> MicrosandboxResult<()> {
    for entry in read_dir(dir)? {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.contains(ATOMIC_TMP_MARK) && is_regular(&entry)) {
            continue;
        }
        if let Some(size) = delete(&entry.path())? {
            report.tmp_files_removed += 1;
            report.bytes_reclaimed += size;
        }
    }
    Ok(())
}
