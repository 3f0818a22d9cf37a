//! Select: which references of the index a prune takes, by its policy.
//!
//! The roots that stay are what is left: the references not selected,
//! what every unexpired lease pins, and the roots other tools recorded
//! (see [`crate::gc::census::foreign_roots`]). A pin record stays exactly
//! while a live lease pins its manifest, whatever the policy.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::error::MicrosandboxResult;
use crate::gc::census::{foreign_roots, graph_of, Snapshot};
use crate::gc::graph::Graph;
use crate::gc::policy::{evict_to_budget, PruneOptions};
use crate::gc::sizes::BlobSizes;
use crate::oci::digest::Digest;
use crate::oci::model::{Descriptor, ANN_CREATED, ANN_LAST_USED};
use crate::store::index::is_pin_record;
use crate::store::layout::Layout;
use crate::util::time;

/// The references a prune takes.
pub struct Selection {
    /// One flag per index entry, in index order: whether it goes.
    pub goes: Vec<bool>,
    /// What the cache still holds past `max_bytes` once the selection is
    /// gone (what pins and other tools' roots keep).
    pub over_budget_bytes: u64,
}

/// When a reference was last used: its last lease, else its entry into
/// the cache, else (an entry another tool wrote) its manifest file's time.
pub fn last_use(layout: &Layout, d: &Descriptor) -> SystemTime {
    let ann = |k: &str| d.annotations.get(k).and_then(time::parse);
    ann(ANN_LAST_USED)
        .or_else(|| ann(ANN_CREATED))
        .or_else(|| {
            let s = layout.blob_stat(&d.digest).ok()??;
            let secs = u64::try_from(s.st_mtime).ok()?;
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        })
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Applies the policy of `options` to the entries of one census.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when a size budget needs the graph
/// of a root that cannot be read.
pub fn select(
    layout: &Layout,
    snapshot: &Snapshot,
    options: &PruneOptions,
    now: SystemTime,
) -> MicrosandboxResult<Selection> {
    let Snapshot {
        pins,
        index,
        graphs,
        ..
    } = snapshot;
    let entries = &index.manifests;
    let pinned = |d: &Descriptor| pins.manifests.contains(&d.digest);

    let mut goes = vec![false; entries.len()];
    let mut over_budget_bytes = 0;
    if options.vm_only {
        // No reference goes: the policy picks VM artifacts (see `vm_keeps`).
        return Ok(Selection {
            goes,
            over_budget_bytes,
        });
    }
    if options.takes_every_unpinned() {
        for (i, d) in entries.iter().enumerate() {
            goes[i] = !pinned(d);
        }
    }
    if let Some(age) = options.unused_for {
        let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        for (i, d) in entries.iter().enumerate() {
            goes[i] = !pinned(d) && last_use(layout, d) < cutoff;
        }
    }
    for (i, d) in entries.iter().enumerate() {
        if is_pin_record(d) {
            goes[i] = !pinned(d);
        }
    }
    if let Some(budget) = options.max_bytes {
        // The budget counts VM artifacts too: each image's graph gains its
        // disk's artifacts as nodes of their own.
        let with_vm = with_artifacts(snapshot);
        let sizes = &with_vm.sizes;
        let graph_of =
            |graphs: &std::collections::HashMap<Digest, MicrosandboxResult<Graph>>,
             root: &Digest| { graph_of(graphs, root).map(|g| with_vm.extend(g)) };
        let mut fixed: Vec<Graph> = Vec::new();
        let mut lru: Vec<(SystemTime, String, usize)> = Vec::new();
        for (i, d) in entries.iter().enumerate() {
            if goes[i] {
                continue;
            }
            if pinned(d) {
                fixed.push(graph_of(graphs, &d.digest)?);
            } else {
                lru.push((
                    last_use(layout, d),
                    d.ref_name().unwrap_or("").to_owned(),
                    i,
                ));
            }
        }
        for digest in pins.manifests.iter().chain(&foreign_roots(index)) {
            fixed.push(graph_of(graphs, digest)?);
        }
        lru.sort();
        let candidates = lru
            .iter()
            .map(|(_, _, i)| graph_of(graphs, &entries[*i].digest))
            .collect::<MicrosandboxResult<Vec<Graph>>>()?;
        let loose: HashSet<Digest> = pins.blobs.iter().cloned().collect();
        let eviction = evict_to_budget(budget, sizes, &fixed, &loose, &candidates);
        for k in eviction.evicted {
            goes[lru[k].2] = true;
        }
        over_budget_bytes = eviction.bytes_after.saturating_sub(budget);
    }
    Ok(Selection {
        goes,
        over_budget_bytes,
    })
}

/// For a `vm_only` prune: the image manifests whose VM artifacts stay:
/// those a lease pins, and of the others those the policy keeps (used
/// within `unused_for`; the most recently used while everything fits
/// `max_bytes`; none without either).
pub fn vm_keeps<'a>(
    layout: &Layout,
    snapshot: &'a Snapshot,
    options: &PruneOptions,
    pinned: &HashSet<&'a Digest>,
    now: SystemTime,
) -> (HashSet<&'a Digest>, u64) {
    let Snapshot {
        index,
        sizes,
        disks,
        artifacts,
        ..
    } = snapshot;
    let mut keep: HashSet<&Digest> = pinned.clone();
    let mut candidates: Vec<(SystemTime, &Digest)> = index
        .manifests
        .iter()
        .filter(|d| !pinned.contains(&d.digest))
        .map(|d| (last_use(layout, d), &d.digest))
        .collect();
    if let Some(age) = options.unused_for {
        let cutoff = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        keep.extend(
            candidates
                .iter()
                .filter(|(t, _)| *t >= cutoff)
                .map(|(_, d)| *d),
        );
        candidates.retain(|(t, _)| *t < cutoff);
    }
    let Some(budget) = options.max_bytes else {
        return (keep, 0);
    };
    // Least recently used first: each goes (its artifacts no kept image
    // shares) while the cache is over the budget.
    candidates.sort();
    let disk_of = |m: &Digest| -> Vec<crate::gc::artifacts::ArtifactId> {
        let resolved = snapshot
            .graphs
            .get(m)
            .and_then(|g| g.as_ref().ok())
            .map(|g| {
                g.iter()
                    .filter(|(_, k)| *k == crate::gc::graph::Kind::Manifest)
                    .map(|(d, _)| d)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        resolved
            .into_iter()
            .filter_map(|d| disks.get(d).cloned().flatten())
            .flat_map(|d| d.iter().cloned().collect::<Vec<_>>())
            .collect()
    };
    let mut users: std::collections::HashMap<crate::gc::artifacts::ArtifactId, u32> =
        std::collections::HashMap::new();
    for m in keep
        .iter()
        .copied()
        .chain(candidates.iter().map(|(_, d)| *d))
    {
        for id in disk_of(m) {
            *users.entry(id).or_default() += 1;
        }
    }
    let mut total =
        sizes.total() + artifacts.bytes() - artifacts.strays.iter().map(|s| s.2).sum::<u64>();
    let mut kept_candidates: Vec<&Digest> = Vec::new();
    for (_, m) in &candidates {
        if total <= budget {
            kept_candidates.push(m);
            continue;
        }
        for id in disk_of(m) {
            let n = users.get_mut(&id).expect("counted above");
            *n -= 1;
            if *n == 0 {
                total -= artifacts.present.get(&id).copied().unwrap_or(0);
            }
        }
    }
    keep.extend(kept_candidates);
    (keep, total.saturating_sub(budget))
}

/// The sizes and graphs of a census with the VM artifacts in them, for a
/// size budget: each artifact present becomes a node named by a digest of
/// its kind and key (no blob can share it), in the graph of every image
/// whose disk it belongs to.
struct WithArtifacts<'a> {
    sizes: std::borrow::Cow<'a, BlobSizes>,
    disks: &'a crate::gc::artifacts::Disks,
    present: &'a std::collections::HashMap<crate::gc::artifacts::ArtifactId, u64>,
}

fn node(id: &crate::gc::artifacts::ArtifactId) -> Digest {
    Digest::of(format!("vm-artifact {} {}", id.0.as_str(), id.1).as_bytes())
}

fn with_artifacts(snapshot: &Snapshot) -> WithArtifacts<'_> {
    let present = &snapshot.artifacts.present;
    let sizes = if present.is_empty() {
        std::borrow::Cow::Borrowed(&*snapshot.sizes)
    } else {
        let mut sizes = (*snapshot.sizes).clone();
        for (id, bytes) in present {
            sizes.insert(node(id), *bytes);
        }
        std::borrow::Cow::Owned(sizes)
    };
    WithArtifacts {
        sizes,
        disks: &snapshot.disks,
        present,
    }
}

impl WithArtifacts<'_> {
    fn extend(&self, g: Graph) -> Graph {
        if self.present.is_empty() {
            return g;
        }
        let mut out: Vec<(Digest, crate::gc::graph::Kind)> = g.iter().cloned().collect();
        for (m, _) in g
            .iter()
            .filter(|(_, k)| *k == crate::gc::graph::Kind::Manifest)
        {
            let Some(Some(disk)) = self.disks.get(m) else {
                continue;
            };
            out.extend(
                disk.iter()
                    .filter(|id| self.present.contains_key(*id))
                    .map(|id| (node(id), crate::gc::graph::Kind::Layer)),
            );
        }
        out.into()
    }
}
