//! Prune in three steps: [select](crate::gc::select) the references that go (by the policy
//! of [`crate::gc::policy`]), [mark](crate::gc::mark) from the roots that stay (a generic
//! walk), [sweep](crate::gc::sweep) `blobs/`, `tmp/` and expired leases.
//!
//! Roots are the references kept and everything an unexpired lease pins.
//! A prune is planned first, from one census of the cache, and a dry run
//! returns that plan's report; a real prune then carries the same plan out
//! under the exclusive lock, so with nothing changing in between it removes
//! exactly what the dry run listed. The index is rewritten without the
//! removed references before any blob is deleted, so a crash mid-sweep
//! leaves unreachable blobs for the next prune, never a reference to a
//! deleted blob. No commit can land between mark and sweep.

pub mod artifacts;
pub mod census;
pub mod graph;
pub mod mark;
pub mod orphans;
pub mod policy;
pub mod purge;
pub mod select;
pub mod sizes;
pub mod sweep;
pub mod usage;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::gc::artifacts::Needed;
use crate::gc::census::{foreign_roots, CensusCache, Snapshot};
use crate::gc::graph::Kind;
use crate::gc::mark::mark;
use crate::gc::policy::PruneOptions;
use crate::gc::select::{select, vm_keeps, Selection};
use crate::gc::sizes::BlobSizes;
use crate::gc::sweep::{atomic_leftovers, execute, stale_tmp, Leftover};
use crate::oci::digest::Digest;
use crate::oci::model::{IndexFile, ManifestDoc};
use crate::store::artifact::ArtifactKind;
use crate::store::catalog::CatalogCache;
use crate::store::fs::allocated;
use crate::store::index::{is_pin_record, shown_name};
use crate::store::layout::Layout;
use crate::store::lease::LeaseRecord;
use crate::store::lock::{Exclusive, ExclusiveGuard, Shared};
use crate::util::time;
use crate::values::{ImagePruneReport, RemovedImage};

/// Runs a prune: planned under the shared lock for a dry run, planned and
/// carried out under the exclusive lock otherwise.
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidArgument`] for contradictory options;
/// [`crate::ErrorKind::CorruptCache`] when a root that stays cannot be
/// read (what it needs cannot be known); `Busy`; `Io`.
pub fn prune(
    layout: &Layout,
    census: &CensusCache,
    catalog: &CatalogCache,
    options: &PruneOptions,
) -> MicrosandboxResult<ImagePruneReport> {
    options.check()?;
    let now = time::now();
    if options.dry_run {
        let _shared = layout.lock::<Shared>()?;
        let snapshot = census.snapshot(layout, catalog.index(layout)?, now)?;
        return Ok(plan(layout, &snapshot, options, now)?.report);
    }
    let exclusive = layout.lock::<Exclusive>()?;
    prune_locked(layout, &exclusive, census, catalog, options)
}

/// [`prune`], for a caller that holds the exclusive lock (purge).
pub(crate) fn prune_locked(
    layout: &Layout,
    exclusive: &ExclusiveGuard,
    census: &CensusCache,
    catalog: &CatalogCache,
    options: &PruneOptions,
) -> MicrosandboxResult<ImagePruneReport> {
    let now = time::now();
    let snapshot = census.snapshot(layout, catalog.index(layout)?, now)?;
    let plan = plan(layout, &snapshot, options, now)?;
    execute(layout, exclusive, plan)
}

/// What a prune will do.
pub struct Plan {
    /// The index without the references that go.
    pub(crate) index: IndexFile,
    /// Whether any reference goes.
    pub(crate) index_changes: bool,
    /// Blobs to delete, with their kinds.
    pub(crate) blobs: Vec<(Digest, Kind)>,
    /// Files of dead writers in `tmp/`.
    pub(crate) tmp: Vec<String>,
    /// Expired leases.
    pub(crate) leases: Vec<LeaseRecord>,
    /// Leftovers of interrupted atomic writes, in `oci/` and `leases/`.
    pub(crate) leftovers: Vec<(Leftover, String)>,
    /// VM artifacts (and stray files of `cache/vm/`) to delete.
    pub(crate) vm: Vec<(ArtifactKind, String)>,
    /// The report, as it will be if nothing changes meanwhile.
    pub report: ImagePruneReport,
}

/// Plans a prune from one census of the cache: select the references
/// that go, mark from the roots that stay, and list what the sweep takes.
/// The caller holds a cache lock (shared for a dry run).
///
/// # Errors
///
/// As [`prune`].
pub fn plan(
    layout: &Layout,
    snapshot: &Snapshot,
    options: &PruneOptions,
    now: SystemTime,
) -> MicrosandboxResult<Plan> {
    plan_with(layout, snapshot, options, now, Detail::Images)
}

/// How much of the report a plan works out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Everything, each removed image with its bytes (a prune's report).
    Images,
    /// The counts and bytes alone, `removed` and the plan's index left
    /// empty (what disk usage needs of a dry run): a report, never a plan
    /// to carry out.
    Totals,
}

/// [`plan`], working out the report to `detail`.
pub(crate) fn plan_with(
    layout: &Layout,
    snapshot: &Snapshot,
    options: &PruneOptions,
    now: SystemTime,
    detail: Detail,
) -> MicrosandboxResult<Plan> {
    let Snapshot {
        leases,
        pins,
        index,
        sizes,
        graphs,
        artifacts,
        disks,
    } = snapshot;
    let entries = &index.manifests;
    let Selection {
        goes,
        over_budget_bytes,
    } = select(layout, snapshot, options, now)?;

    // Mark before anything changes: a root that stays and cannot be read
    // fails the prune with the cache as it was. A graph is a root's whole
    // closure, so only roots have edges.
    let graph_ref = |digest: &Digest| -> MicrosandboxResult<&[(Digest, Kind)]> {
        match graphs.get(digest) {
            Some(Ok(g)) => Ok(&g[..]),
            Some(Err(e)) => Err(MicrosandboxError::new(e.kind(), e.to_string())),
            None => Ok(&[]),
        }
    };
    let foreign = foreign_roots(index);
    let roots: Vec<&Digest> = entries
        .iter()
        .zip(&goes)
        .filter(|(_, goes)| !**goes)
        .map(|(d, _)| &d.digest)
        .chain(&pins.manifests)
        .chain(&foreign)
        .collect();
    for root in &roots {
        graph_ref(root)?;
    }
    let keep = mark(roots.into_iter().chain(&pins.blobs), |node| {
        Ok::<_, MicrosandboxError>(children(graphs, node))
    })?;

    let mut report = ImagePruneReport {
        over_budget_bytes,
        ..ImagePruneReport::measured(options.dry_run)
    };
    let mut gone_kinds: HashMap<&Digest, Kind> = HashMap::new();
    let mut weights: HashMap<&Digest, u64> = HashMap::new();
    let mut kept_entries = Vec::with_capacity(entries.len());
    let mut removed_graphs: Vec<&[(Digest, Kind)]> = Vec::new();
    for (d, goes) in entries.iter().zip(&goes) {
        if !goes {
            if detail == Detail::Images {
                kept_entries.push(d.clone());
            }
            continue;
        }
        // A removed root that does not parse still goes; its children
        // are classified by sniffing below.
        let g = graph_ref(&d.digest).unwrap_or(&[]);
        let bytes = match g.first() {
            Some((root, _)) => *weights.entry(root).or_insert_with(|| {
                for (digest, kind) in g {
                    gone_kinds.entry(digest).or_insert(*kind);
                }
                g.iter().filter_map(|(x, _)| sizes.get(x)).sum()
            }),
            None => 0,
        };
        if d.ref_name().is_some() {
            report.image_refs_removed += 1;
        }
        // A pin record is no image: it goes silently with its lease.
        if detail == Detail::Images && !is_pin_record(d) {
            report.removed.push(RemovedImage {
                reference: shown_name(d),
                manifest_digest: d.digest.to_string(),
                bytes,
                unique_bytes: 0,
            });
            removed_graphs.push(g);
        }
    }
    unique_to_each(&mut report.removed, &removed_graphs, &keep, sizes);
    let index_changes = goes.iter().any(|g| *g);
    let index = IndexFile {
        schema_version: index.schema_version,
        media_type: index.media_type.clone(),
        manifests: crate::oci::model::Entries {
            good: kept_entries,
            unreadable: index.manifests.unreadable.clone(),
        },
        annotations: index.annotations.clone(),
    };

    // The VM artifacts of the manifests kept stay (for a VM-only prune,
    // those the policy keeps); the rest go, with every file of `cache/vm/`
    // that is no artifact of this format version.
    let vm_kept: HashSet<&Digest> = if options.vm_only {
        let pinned = mark(pins.manifests.iter(), |node| {
            Ok::<_, MicrosandboxError>(children(graphs, node))
        })?;
        let (kept, over) = vm_keeps(layout, snapshot, options, &pinned, now);
        report.over_budget_bytes = over;
        kept.into_iter()
            .flat_map(|m| {
                graphs
                    .get(m)
                    .and_then(|g| g.as_ref().ok())
                    .map(|g| g.iter().map(|(d, _)| d).collect::<Vec<_>>())
                    .unwrap_or_else(|| vec![m])
            })
            .collect()
    } else if artifacts.present.is_empty() {
        // No artifact to keep: nothing to work out.
        HashSet::new()
    } else {
        keep.iter().copied().collect()
    };
    let needed = Needed::of(disks, disks.keys().filter(|m| vm_kept.contains(m)));
    let mut vm: Vec<(ArtifactKind, String)> = Vec::new();
    for ((kind, key), bytes) in &artifacts.present {
        if !needed.keeps(&(*kind, key.clone())) {
            vm.push((*kind, kind.name(key)));
            sweep::count_artifact(&mut report, *kind, *bytes);
        }
    }
    for (kind, name, bytes) in &artifacts.strays {
        vm.push((*kind, name.clone()));
        sweep::count_artifact(&mut report, *kind, *bytes);
    }
    // Dependents first (a VMDK names its fsmeta and layer images, an
    // fsmeta its layer images): a sweep cut short never leaves one naming
    // a file that is gone.
    vm.sort_by_key(|(kind, name)| (kind.dependents_first(), name.clone()));
    if options.vm_only {
        return Ok(Plan {
            index,
            index_changes: false,
            blobs: Vec::new(),
            tmp: Vec::new(),
            leases: Vec::new(),
            leftovers: Vec::new(),
            vm,
            report,
        });
    }

    let mut blobs = Vec::new();
    for (digest, size) in sizes.iter().filter(|(d, _)| !keep.contains(d)) {
        let kind = gone_kinds
            .get(&digest)
            .copied()
            .unwrap_or_else(|| sniff(layout, &digest));
        report.reclaim(size);
        match kind {
            Kind::Manifest => report.manifests_removed += 1,
            Kind::Config => report.configs_removed += 1,
            Kind::Layer => report.layers_removed += 1,
        }
        blobs.push((digest, kind));
    }
    let pinned_blobs: HashSet<&Digest> = pins.blobs.iter().collect();
    let tmp = stale_tmp(layout, &pinned_blobs)?;
    let leftovers = atomic_leftovers(layout)?;
    let measured = tmp.iter().map(|name| layout.tmp_dir().stat(name)).chain(
        leftovers
            .iter()
            .map(|(dir, name)| dir.of(layout).stat(name)),
    );
    for stat in measured {
        if let Some(s) = stat? {
            report.tmp_files_removed += 1;
            report.reclaim(allocated(&s));
        }
    }
    let expired: Vec<LeaseRecord> = leases
        .iter()
        .filter(|l| l.is_expired(now))
        .cloned()
        .collect();
    report.expired_leases_removed = u32::try_from(expired.len()).unwrap_or(u32::MAX);
    Ok(Plan {
        index,
        index_changes,
        blobs,
        tmp,
        leases: expired,
        leftovers,
        vm,
        report,
    })
}

/// The edges of the mark: a root's graph is its whole closure, so a root
/// points at everything in it and nothing else points anywhere.
fn children<'a>(
    graphs: &'a HashMap<Digest, MicrosandboxResult<crate::gc::graph::Graph>>,
    node: &Digest,
) -> impl Iterator<Item = &'a Digest> {
    graphs
        .get(node)
        .and_then(|g| g.as_ref().ok())
        .into_iter()
        .flat_map(|g| g.iter().skip(1).map(|(child, _)| child))
}

/// Sets each removed image's `unique_bytes`: the blobs that go (none of
/// `keep`) which no other removed manifest needs. References sharing one
/// manifest share its blobs: the first of them is given them.
fn unique_to_each(
    removed: &mut [RemovedImage],
    graphs: &[&[(Digest, Kind)]],
    keep: &HashSet<&Digest>,
    sizes: &BlobSizes,
) {
    let mut seen: HashSet<&Digest> = HashSet::new();
    let mut users: HashMap<&Digest, u32> = HashMap::new();
    let firsts: Vec<bool> = graphs
        .iter()
        .map(|g| match g.first() {
            Some((root, _)) if seen.insert(root) => {
                for (b, _) in g.iter().filter(|(b, _)| !keep.contains(b)) {
                    *users.entry(b).or_default() += 1;
                }
                true
            }
            _ => false,
        })
        .collect();
    for ((image, g), first) in removed.iter_mut().zip(graphs).zip(firsts) {
        if first {
            image.unique_bytes = g
                .iter()
                .filter(|(b, _)| users.get(b) == Some(&1))
                .filter_map(|(b, _)| sizes.get(b))
                .sum();
        }
    }
}

/// Guesses the kind of an orphan no graph reaches: small JSON that parses
/// as a manifest is one, JSON with a `rootfs` is a config, the rest
/// (anything not starting with `{`: gzip, zstd, tar) layers.
fn sniff(layout: &Layout, digest: &Digest) -> Kind {
    let mut head = [0u8; 1];
    let starts_json = match layout.open_blob(digest) {
        Ok(Some(mut f)) => std::io::Read::read(&mut f, &mut head).is_ok_and(|n| n == 1),
        _ => false,
    } && head[0] == b'{';
    if !starts_json {
        return Kind::Layer;
    }
    let Ok(Some(bytes)) = layout.blobs_dir().read_bounded(digest.hex(), 256 << 10) else {
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
