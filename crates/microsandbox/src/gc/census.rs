//! What the cache holds, counted the way the disk counts it: every blob
//! file with the bytes it occupies (allocated blocks, as `du` reports), and
//! every root's graph (a manifest or index and all it needs). Prune plans
//! and disk usage are both computed from one census, so the bytes a dry
//! run promises are the bytes disk usage calls reclaimable.
//!
//! Blobs are never rewritten, so what a census learns about one stays
//! true: a [`CensusCache`] in the backend remembers each blob file's
//! allocated bytes (by inode) and each image manifest's graph. A later
//! census lists `blobs/sha256/` again (the set of files is always read
//! afresh) and stats only the files it has not seen.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rustix::fs::FileType;

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::gc::artifacts::{ArtifactFiles, DiffIdCache, Disks};
use crate::gc::graph::{Graph, Kind};
use crate::gc::sizes::BlobSizes;
use crate::oci::digest::Digest;
use crate::oci::model::{IndexFile, Shape};
use crate::store::content;
use crate::store::fs::{allocated, kind};
use crate::store::layout::Layout;
use crate::store::lease::{self, LeaseRecord, Pins};

/// What stays true about immutable blobs, remembered between censuses.
#[derive(Debug, Default)]
pub struct CensusCache {
    /// The last listing of `blobs/sha256/`: what later listings need not
    /// stat again, and while the directory is as it was then, the answer.
    listing: Mutex<Option<Listing>>,
    /// Image manifest -> its graph (manifest, config, layers).
    graphs: Mutex<HashMap<Digest, Graph>>,
    /// Config -> its diff_ids, for the VM artifacts.
    diff_ids: DiffIdCache,
}

/// A listing of `blobs/sha256/` and the directory's stamp before it.
#[derive(Debug)]
struct Listing {
    stamp: DirStamp,
    /// Whether the stamp can be trusted to tell this listing is current
    /// (the directory's last change was well before it).
    settled: bool,
    sizes: Arc<BlobSizes>,
}

/// A directory's identity and change times: a name added, removed or
/// renamed in it changes its ctime, which no caller can set back.
type DirStamp = (u64, u64, i64, i64, i64, i64);

// The stat fields' types differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn dir_stamp(s: &crate::store::fs::Stat) -> DirStamp {
    (
        s.st_dev as u64,
        s.st_ino as u64,
        s.st_mtime as i64,
        s.st_mtime_nsec as i64,
        s.st_ctime as i64,
        s.st_ctime_nsec as i64,
    )
}

/// How far a directory's ctime must lie before a listing for the listing
/// to be trusted while the stamp holds: file systems take change times
/// from a coarse clock (a few milliseconds per tick), so a change made in
/// the same tick as the listing could leave the stamp as it was.
const RACY_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

impl CensusCache {
    /// Every regular file of `blobs/sha256/` named by a digest, with its
    /// allocated bytes. Other entries are not ours to judge and are left
    /// out. Files seen before (same name, same inode) are not stat'ed again,
    /// and while the directory's stamp is the one of the last listing (and
    /// that listing was not racy), the directory is not listed again.
    pub fn blob_sizes(&self, layout: &Layout) -> MicrosandboxResult<Arc<BlobSizes>> {
        let blobs = layout.blobs_dir();
        let started = std::time::SystemTime::now();
        let before = blobs.stat_self()?;
        let stamp = dir_stamp(&before);
        let known = match &*lock(&self.listing) {
            Some(l) if l.settled && l.stamp == stamp => return Ok(l.sizes.clone()),
            Some(l) => Some(l.sizes.clone()),
            None => None,
        };
        let sizes = Arc::new(list_blob_sizes(layout, known.as_deref())?);
        let changed = crate::util::time::from_parts(stamp.4, stamp.5);
        let settled = changed.is_some_and(|c| c + RACY_WINDOW < started);
        *lock(&self.listing) = Some(Listing {
            stamp,
            settled,
            sizes: sizes.clone(),
        });
        Ok(sizes)
    }

    /// The graphs of many roots, each walked once (image manifests seen
    /// before come from memory), on a few threads. A root that fails keeps
    /// its error; the caller decides whether it matters.
    pub fn walk_all<'a>(
        &self,
        layout: &Layout,
        roots: impl IntoIterator<Item = &'a Digest>,
    ) -> HashMap<Digest, MicrosandboxResult<Graph>> {
        let mut out: HashMap<Digest, MicrosandboxResult<Graph>> = HashMap::new();
        let mut todo: Vec<Digest> = Vec::new();
        {
            let known = lock(&self.graphs);
            for r in roots {
                if out.contains_key(r) {
                    continue;
                }
                match known.get(r) {
                    Some(g) => {
                        out.insert(r.clone(), Ok(g.clone()));
                    }
                    None => {
                        out.insert(r.clone(), Ok(Arc::from(Vec::new())));
                        todo.push(r.clone());
                    }
                }
            }
        }
        let threads = crate::util::par::cores().map_or(2, |n| n.min(8));
        let walked = crate::util::par::queue(&todo, threads, |d| Ok(walk(layout, d)))
            .expect("the walk itself never fails the queue");
        let mut known = lock(&self.graphs);
        for (digest, result) in todo.into_iter().zip(walked) {
            let result = result.map(|(graph, lasting)| {
                if lasting {
                    known.insert(digest.clone(), graph.clone());
                }
                graph
            });
            out.insert(digest, result);
        }
        out
    }
}

/// [`CensusCache::blob_sizes`] from a fresh listing, stat'ing only the
/// files `known` does not hold with the same inode.
fn list_blob_sizes(layout: &Layout, known: Option<&BlobSizes>) -> MicrosandboxResult<BlobSizes> {
    let blobs = layout.blobs_dir();
    let mut current = BlobSizes::with_capacity(known.map_or(0, BlobSizes::len));
    let mut todo: Vec<Digest> = Vec::new();
    blobs.each_entry(|name, ino, _| {
        let Ok(digest) = Digest::from_hex(name) else {
            return;
        };
        match known.and_then(|k| k.seen(&digest, ino)) {
            Some(bytes) => current.insert_file(digest, ino, bytes),
            None => todo.push(digest),
        }
    })?;
    let stats = crate::util::par::in_parallel(&todo, |digest| {
        Ok(blobs
            .stat(digest.hex())?
            .filter(|s| kind(s) == FileType::RegularFile)
            .map(|s| (s.st_ino, allocated(&s))))
    })?;
    for (digest, stat) in todo.into_iter().zip(stats) {
        if let Some((ino, bytes)) = stat {
            current.insert_file(digest, ino, bytes);
        }
    }
    Ok(current)
}

/// One look at the cache, taken under a cache lock: its leases, its
/// index, every blob's allocated bytes and every root's graph.
pub struct Snapshot {
    /// Every lease file.
    pub leases: Vec<LeaseRecord>,
    /// What the unexpired ones pin.
    pub pins: Pins,
    /// `index.json`.
    pub index: Arc<IndexFile>,
    /// Every blob file and its allocated bytes.
    pub sizes: Arc<BlobSizes>,
    /// The graph of every reference and pinned manifest.
    pub graphs: HashMap<Digest, MicrosandboxResult<Graph>>,
    /// What `cache/vm/` holds.
    pub artifacts: ArtifactFiles,
    /// The artifacts of each image manifest's disk (empty when
    /// `cache/vm/` is).
    pub disks: Disks,
}

impl CensusCache {
    /// Takes a [`Snapshot`] around `index` (the current `index.json`);
    /// leases expire as of `now`.
    pub fn snapshot(
        &self,
        layout: &Layout,
        index: Arc<IndexFile>,
        now: std::time::SystemTime,
    ) -> MicrosandboxResult<Snapshot> {
        let leases = lease::list(layout)?;
        let pins = Pins::of(&leases, now);
        let sizes = self.blob_sizes(layout)?;
        let foreign = foreign_roots(&index);
        let graphs = self.walk_all(
            layout,
            index
                .manifests
                .iter()
                .map(|d| &d.digest)
                .chain(pins.manifests.iter())
                .chain(foreign.iter()),
        );
        let artifacts = ArtifactFiles::list(layout)?;
        let disks = if artifacts.is_empty() {
            Disks::new()
        } else {
            self.diff_ids
                .disks(layout, graphs.values().filter_map(|g| g.as_ref().ok()))
        };
        Ok(Snapshot {
            leases,
            pins,
            index,
            sizes,
            graphs,
            artifacts,
            disks,
        })
    }
}

/// The blobs entries of `index.json` that this crate cannot parse still
/// name: they stay roots (kept, with what they need) as long as the entries
/// stay.
pub fn foreign_roots(index: &IndexFile) -> Vec<Digest> {
    index
        .manifests
        .unreadable
        .iter()
        .filter_map(|u| u.digest())
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Walks one root: a manifest or an index and everything below it. A
/// missing root needs nothing; missing children of an index are skipped
/// (another tool may have stored one platform of several). Also tells
/// whether the graph lasts: an image manifest's does (its content fixes
/// it); a missing root's or an index's may change as blobs come and go.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when a manifest present does not
/// parse or is not what its name (and its index's descriptor) says.
pub fn walk(layout: &Layout, root: &Digest) -> MicrosandboxResult<(Graph, bool)> {
    let mut out: Vec<(Digest, Kind)> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut stack = vec![(root.clone(), None)];
    let mut lasting = true;
    while let Some((digest, size)) = stack.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let doc = match content::read_doc(layout, &digest, size) {
            Ok(doc) => doc,
            Err(_) if !layout.has_blob(&digest) => {
                lasting = false;
                continue;
            }
            Err(e) => return Err(e),
        };
        out.push((digest, Kind::Manifest));
        match doc.shape() {
            Ok(Shape::Index(children)) => {
                lasting = false;
                stack.extend(
                    children
                        .iter()
                        .rev()
                        .map(|c| (c.digest.clone(), Some(c.size))),
                );
            }
            Ok(Shape::Image { config, layers }) => {
                if seen.insert(config.digest.clone()) {
                    out.push((config.digest.clone(), Kind::Config));
                }
                for layer in layers {
                    if seen.insert(layer.digest.clone()) {
                        out.push((layer.digest.clone(), Kind::Layer));
                    }
                }
            }
            Err(_) => unreachable!("read_doc checks the shape"),
        }
    }
    Ok((out.into(), lasting))
}

/// The graph of a root from [`CensusCache::walk_all`]'s results, its
/// error copied.
pub fn graph_of(
    graphs: &HashMap<Digest, MicrosandboxResult<Graph>>,
    root: &Digest,
) -> MicrosandboxResult<Graph> {
    match graphs.get(root) {
        Some(Ok(g)) => Ok(g.clone()),
        Some(Err(e)) => Err(MicrosandboxError::new(e.kind(), e.to_string())),
        None => Ok(Arc::from(Vec::new())),
    }
}
