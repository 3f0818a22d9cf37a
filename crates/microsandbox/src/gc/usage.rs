//! Disk usage: what the cache takes, each blob counted once, and each
//! reference's shared and unique part, from one census under the shared
//! lock. `reclaimable_bytes` is the default prune's dry run, so the two
//! can never disagree.

use std::collections::HashMap;

use rustix::fs::FileType;

use crate::error::MicrosandboxResult;
use crate::gc;
use crate::gc::artifacts::ArtifactId;
use crate::gc::census::{graph_of, CensusCache, Snapshot};
use crate::gc::graph::{Graph, Kind};
use crate::gc::policy::PruneOptions;
use crate::oci::digest::Digest;
use crate::oci::model::Descriptor;
use crate::oci::model::{ANN_CREATED, ANN_LAST_USED};
use crate::store::catalog::CatalogCache;
use crate::store::fs::{allocated, kind, Dir};
use crate::store::index::{is_pin_record, shown_name};
use crate::store::layout::Layout;
use crate::store::lock::Shared;
use crate::util::time;
use crate::values::{DiskUsage, ImageUsage};

/// Measures the cache.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when a reference's manifest cannot
/// be read; `Busy`; `Io`.
pub fn disk_usage(
    layout: &Layout,
    census: &CensusCache,
    catalog: &CatalogCache,
) -> MicrosandboxResult<DiskUsage> {
    let _guard = layout.lock::<Shared>()?;
    let now = time::now();
    let snapshot = census.snapshot(layout, catalog.index(layout)?, now)?;
    let Snapshot {
        pins,
        index,
        sizes,
        graphs,
        artifacts,
        disks,
        ..
    } = &snapshot;
    // The VM artifacts present of the disk of each manifest a graph holds.
    let vm_of = |g: &Graph| -> Vec<ArtifactId> {
        if artifacts.present.is_empty() {
            return Vec::new();
        }
        g.iter()
            .filter(|(_, k)| *k == Kind::Manifest)
            .filter_map(|(m, _)| disks.get(m).cloned().flatten())
            .flat_map(|d| d.iter().cloned().collect::<Vec<_>>())
            .filter(|id| artifacts.present.contains_key(id))
            .collect()
    };
    // An image whose manifest cannot be read is shown with what can be
    // known (nothing); the others are measured as usual.
    // Pin records are leases' doing, counted with the leases below.
    let entries: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| !is_pin_record(d))
        .collect();
    let per_ref: Vec<Graph> = entries
        .iter()
        .map(|d| graph_of(graphs, &d.digest).unwrap_or_else(|_| Graph::from(Vec::new())))
        .collect();
    // How many references and pins need each blob and artifact.
    let mut users: HashMap<&Digest, u32> = HashMap::new();
    let mut vm_users: HashMap<ArtifactId, u32> = HashMap::new();
    for d in pins.blobs.iter() {
        *users.entry(d).or_default() += 1;
    }
    for digest in pins.manifests.iter() {
        if let Some(Ok(g)) = graphs.get(digest) {
            for (b, _) in g.iter() {
                *users.entry(b).or_default() += 1;
            }
            for id in vm_of(g) {
                *vm_users.entry(id).or_default() += 1;
            }
        }
    }
    for g in &per_ref {
        for (b, _) in g.iter() {
            *users.entry(b).or_default() += 1;
        }
        for id in vm_of(g) {
            *vm_users.entry(id).or_default() += 1;
        }
    }
    let mut measured: HashMap<&Digest, (u64, u64)> = HashMap::new();
    let mut images: Vec<(Option<std::time::SystemTime>, ImageUsage)> = entries
        .iter()
        .zip(&per_ref)
        .map(|(d, g)| {
            // References on one manifest share all of it: worked out once.
            let (size, unique) = *measured.entry(&d.digest).or_insert_with(|| {
                let (mut size, mut unique) = (0, 0);
                for (b, _) in g.iter() {
                    let bytes = sizes.get(b).unwrap_or(0);
                    size += bytes;
                    // Needed by this reference alone (a lease on the same
                    // manifest counts as another user).
                    if users.get(b) == Some(&1) {
                        unique += bytes;
                    }
                }
                for id in vm_of(g) {
                    let bytes = artifacts.present.get(&id).copied().unwrap_or(0);
                    size += bytes;
                    if vm_users.get(&id) == Some(&1) {
                        unique += bytes;
                    }
                }
                (size, unique)
            });
            let ann = |k: &str| d.annotations.get(k).and_then(time::parse);
            (
                ann(ANN_CREATED),
                ImageUsage {
                    reference: shown_name(d),
                    manifest_digest: d.digest.to_string(),
                    size_bytes: size,
                    shared_bytes: size - unique,
                    unique_bytes: unique,
                    in_use: pins.manifests.contains(&d.digest),
                    last_used_at: ann(ANN_LAST_USED).map(time::utc),
                },
            )
        })
        .collect();
    images.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.reference.cmp(&b.1.reference))
    });

    let blobs_bytes: u64 = sizes.total();
    let tmp_bytes = files_bytes(layout.tmp_dir())?;
    let other = files_bytes(layout.oci_dir())?
        + files_bytes(layout.cache_dir())?
        + files_bytes(layout.leases_dir())?;
    let dry = PruneOptions {
        dry_run: true,
        ..Default::default()
    };
    // A prune refuses to run while a root it keeps cannot be read; until
    // that is repaired, nothing is reclaimable.
    let reclaimable_bytes = gc::plan_with(layout, &snapshot, &dry, now, gc::Detail::Totals)
        .map_or(0, |p| p.report.bytes_reclaimed.unwrap_or(0));
    let vm_bytes = artifacts.bytes();
    Ok(DiskUsage {
        total_bytes: blobs_bytes + vm_bytes + tmp_bytes + other,
        blobs_bytes,
        vm_bytes,
        tmp_bytes,
        reclaimable_bytes,
        images: images.into_iter().map(|(_, i)| i).collect(),
    })
}

/// The allocated bytes of the regular files directly in `dir`.
fn files_bytes(dir: &Dir) -> MicrosandboxResult<u64> {
    let mut total = 0;
    for entry in dir.entries()? {
        if let Some(s) = dir.stat(&entry.name)? {
            if kind(&s) == FileType::RegularFile {
                total += allocated(&s);
            }
        }
    }
    Ok(total)
}
