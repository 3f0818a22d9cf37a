//! Select: which references of the index a prune takes, by its policy.
//!
//! The roots that stay are what is left: the references not selected,
//! what every unexpired lease pins, and the roots other tools recorded
//! (see [`crate::gc::census::foreign_roots`]). A pin record stays exactly
//! while a live lease pins its manifest, whatever the policy.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::error::MicrosandboxResult;
use crate::gc::census::{foreign_roots, graph_of, Graph, Snapshot};
use crate::gc::policy::{evict_to_budget, PruneOptions};
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
    let ann = |k: &str| d.annotations.get(k).and_then(|t| time::parse(t));
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
        sizes,
        graphs,
        ..
    } = snapshot;
    let entries = &index.manifests;
    let pinned = |d: &Descriptor| pins.manifests.contains(&d.digest);

    let mut goes = vec![false; entries.len()];
    let mut over_budget_bytes = 0;
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
