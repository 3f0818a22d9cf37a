//! What the cache holds, counted the way the disk counts it: every blob
//! file with the bytes it occupies (allocated blocks, as `du` reports), and
//! every root's graph (a manifest or index and all it needs). Prune plans
//! and disk usage are both computed from one census, so the bytes a dry
//! run promises are the bytes disk usage calls reclaimable.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::content;
use crate::digest::Digest;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::layout::Layout;
use crate::model::Shape;

/// What a blob is, as far as the graph tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A manifest or an index.
    Manifest,
    /// An image config.
    Config,
    /// A layer.
    Layer,
}

/// The blobs one root needs, itself first.
pub type Graph = Arc<[(Digest, Kind)]>;

/// The bytes a file occupies on disk.
pub fn allocated(meta: &fs::Metadata) -> u64 {
    meta.blocks() * 512
}

/// Every regular file of `blobs/sha256/` named by a digest, with its
/// allocated bytes. Other entries are not ours to judge and are left out.
pub fn blob_sizes(layout: &Layout) -> MicrosandboxResult<HashMap<Digest, u64>> {
    let dir = layout.blobs_dir();
    let mut sizes = HashMap::new();
    for entry in read_dir(dir)? {
        let name = entry.file_name();
        let Ok(digest) = Digest::from_hex(&name.to_string_lossy()) else {
            continue;
        };
        match entry.metadata() {
            Ok(m) if m.is_file() => {
                sizes.insert(digest, allocated(&m));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(MicrosandboxError::io("stat", &entry.path(), e)),
        }
    }
    Ok(sizes)
}

/// The entries of a directory; none if it is missing.
pub fn read_dir(dir: &Path) -> MicrosandboxResult<Vec<fs::DirEntry>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MicrosandboxError::io("read directory", dir, e)),
    };
    entries
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| MicrosandboxError::io("read directory", dir, e))
}

/// Walks one root: a manifest or an index and everything below it. A
/// missing root needs nothing; missing children of an index are skipped
/// (another tool may have stored one platform of several).
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when a manifest present does not parse.
pub fn walk(layout: &Layout, root: &Digest) -> MicrosandboxResult<Graph> {
    let mut out: Vec<(Digest, Kind)> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut stack = vec![root.clone()];
    while let Some(digest) = stack.pop() {
        if !seen.insert(digest.clone()) || !layout.has_blob(&digest) {
            continue;
        }
        let doc = content::read_doc(layout, &digest)?;
        out.push((digest, Kind::Manifest));
        match doc.shape() {
            Ok(Shape::Index(children)) => {
                stack.extend(children.iter().rev().map(|c| c.digest.clone()));
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
    Ok(out.into())
}

/// The graphs of many roots, each walked once, on a few threads. A root
/// that fails keeps its error; the caller decides whether it matters.
pub fn walk_all<'a>(
    layout: &Layout,
    roots: impl IntoIterator<Item = &'a Digest>,
) -> HashMap<Digest, MicrosandboxResult<Graph>> {
    let mut distinct: Vec<Digest> = Vec::new();
    let mut seen = HashSet::new();
    for r in roots {
        if seen.insert(r) {
            distinct.push(r.clone());
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let results = crate::par::queue(&distinct, threads, |d| Ok(walk(layout, d)))
        .expect("the walk itself never fails the queue");
    distinct.into_iter().zip(results).collect()
}

/// The graph of a root from [`walk_all`]'s results, its error copied.
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
