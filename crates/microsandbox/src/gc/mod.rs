//! Prune: choose the references that go (see [`crate::gc::policy`]), mark from
//! the roots that stay, sweep `blobs/`, `tmp/` and expired leases.
//!
//! Roots are the references kept and everything an unexpired lease pins.
//! A prune is planned first, from one census of the cache, and a dry run
//! returns that plan's report; a real prune then carries the same plan out
//! under the exclusive lock, so with nothing changing in between it removes
//! exactly what the dry run listed. The index is rewritten without the
//! removed references before any blob is deleted, so a crash mid-sweep
//! leaves unreachable blobs for the next prune, never a reference to a
//! deleted blob. No commit can land between mark and sweep.

pub mod census;
pub mod orphans;
pub mod policy;
pub mod purge;
pub mod usage;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use rustix::fs::FileType;

use crate::api::handle::{ImagePruneReport, RemovedImage};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::gc::census::{foreign_roots, graph_of, CensusCache, Graph, Kind, Snapshot};
use crate::gc::policy::{evict_to_budget, PruneOptions};
use crate::oci::digest::Digest;
use crate::oci::model::{Descriptor, IndexFile, ManifestDoc, ANN_CREATED, ANN_LAST_USED};
use crate::store::blob::stale_tmp_file;
use crate::store::catalog::CatalogCache;
use crate::store::fs::{allocated, kind, Dir, Entry, ATOMIC_TMP_MARK};
use crate::store::index::{is_pin_record, shown_name, IndexTxn};
use crate::store::layout::Layout;
use crate::store::lease::{self, LeaseRecord};
use crate::store::lock::{Exclusive, ExclusiveGuard, Shared};
use crate::store::partial::digest_of_name;
use crate::util::time;

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
    index: IndexFile,
    /// Whether any reference goes.
    index_changes: bool,
    /// Blobs to delete, with their kinds.
    pub(crate) blobs: Vec<(Digest, Kind)>,
    /// Files of dead writers in `tmp/`.
    tmp: Vec<String>,
    /// Expired leases.
    leases: Vec<LeaseRecord>,
    /// Leftovers of interrupted atomic writes, in `oci/` and `leases/`.
    leftovers: Vec<(Leftover, String)>,
    /// The report, as it will be if nothing changes meanwhile.
    pub report: ImagePruneReport,
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

/// Plans a prune from one census of the cache. The caller holds a cache
/// lock (shared for a dry run).
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
    let Snapshot {
        leases,
        pins,
        index,
        sizes,
        graphs,
    } = snapshot;
    let entries = &index.manifests;
    let pinned = |d: &Descriptor| pins.manifests.contains(&d.digest);

    // Which references go. A pin record stays exactly while a live lease
    // pins its manifest, whatever the policy.
    let mut goes = vec![false; entries.len()];
    let mut over_budget = 0;
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
        over_budget = eviction.bytes_after.saturating_sub(budget);
    }

    // Mark before anything changes: a root that stays and cannot be read
    // fails the prune with the cache as it was. Digests are borrowed from
    // the graphs, and each distinct manifest is gone through once.
    let graph_ref = |digest: &Digest| -> MicrosandboxResult<&[(Digest, Kind)]> {
        match graphs.get(digest) {
            Some(Ok(g)) => Ok(&g[..]),
            Some(Err(e)) => Err(MicrosandboxError::new(e.kind(), e.to_string())),
            None => Ok(&[]),
        }
    };
    let mut keep: HashSet<&Digest> = pins.blobs.iter().collect();
    let mut kept_roots: HashSet<&Digest> = HashSet::new();
    let mut report = ImagePruneReport {
        over_budget_bytes: over_budget,
        ..ImagePruneReport::measured(options.dry_run)
    };
    let mut gone_kinds: HashMap<&Digest, Kind> = HashMap::new();
    let mut weights: HashMap<&Digest, u64> = HashMap::new();
    let mut kept_entries = Vec::with_capacity(entries.len());
    let mut removed_graphs: Vec<&[(Digest, Kind)]> = Vec::new();
    for (i, d) in entries.iter().enumerate() {
        if goes[i] {
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
            if !is_pin_record(d) {
                report.removed.push(RemovedImage {
                    reference: shown_name(d),
                    manifest_digest: d.digest.to_string(),
                    bytes,
                    unique_bytes: 0,
                });
                removed_graphs.push(g);
            }
        } else {
            if let Some((root, _)) = graph_ref(&d.digest)?.first() {
                if kept_roots.insert(root) {
                    keep.extend(graph_ref(root)?.iter().map(|(x, _)| x));
                }
            }
            kept_entries.push(d.clone());
        }
    }
    let foreign = foreign_roots(index);
    for digest in pins.manifests.iter().chain(&foreign) {
        keep.extend(graph_ref(digest)?.iter().map(|(x, _)| x));
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

    let mut blobs = Vec::new();
    for (digest, size) in sizes.iter().filter(|(d, _)| !keep.contains(*d)) {
        let kind = gone_kinds
            .get(digest)
            .copied()
            .unwrap_or_else(|| sniff(layout, digest));
        report.reclaim(*size);
        match kind {
            Kind::Manifest => report.manifests_removed += 1,
            Kind::Config => report.configs_removed += 1,
            Kind::Layer => report.layers_removed += 1,
        }
        blobs.push((digest.clone(), kind));
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
        report,
    })
}

/// Sets each removed image's `unique_bytes`: the blobs that go (none of
/// `keep`) which no other removed manifest needs. References sharing one
/// manifest share its blobs: the first of them is given them.
fn unique_to_each(
    removed: &mut [RemovedImage],
    graphs: &[&[(Digest, Kind)]],
    keep: &HashSet<&Digest>,
    sizes: &HashMap<Digest, u64>,
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

/// Carries a plan out under the exclusive lock. The report counts what
/// was actually deleted.
fn execute(
    layout: &Layout,
    exclusive: &ExclusiveGuard,
    plan: Plan,
) -> MicrosandboxResult<ImagePruneReport> {
    let mut report = ImagePruneReport {
        image_refs_removed: plan.report.image_refs_removed,
        removed: plan.report.removed,
        over_budget_bytes: plan.report.over_budget_bytes,
        ..ImagePruneReport::measured(false)
    };
    if plan.index_changes {
        IndexTxn::of(layout, exclusive, plan.index).commit()?;
    }
    crate::util::fault::point("prune-after-index");
    let half = plan.blobs.len() / 2;
    let blobs = layout.blobs_dir();
    let outcomes = crate::util::par::in_parallel(&plan.blobs, |(digest, kind)| {
        if plan.blobs.get(half).is_some_and(|(d, _)| d == digest) {
            crate::util::fault::point("prune-mid-sweep");
        }
        Ok(delete(blobs, digest.hex())?.map(|size| (*kind, size)))
    })?;
    for (kind, size) in outcomes.into_iter().flatten() {
        report.reclaim(size);
        match kind {
            Kind::Manifest => report.manifests_removed += 1,
            Kind::Config => report.configs_removed += 1,
            Kind::Layer => report.layers_removed += 1,
        }
    }
    if !plan.blobs.is_empty() {
        blobs.sync()?;
    }

    for name in &plan.tmp {
        // Still dead? A writer may have taken the name since the plan.
        let Some(held) = stale_tmp_file(layout, name)? else {
            continue;
        };
        if let Some(size) = delete(layout.tmp_dir(), name)? {
            report.tmp_files_removed += 1;
            report.reclaim(size);
        }
        drop(held);
    }
    for l in &plan.leases {
        if lease::remove(layout, &l.id)? {
            report.expired_leases_removed += 1;
        }
    }
    for (dir, name) in &plan.leftovers {
        if let Some(size) = delete(dir.of(layout), name)? {
            report.tmp_files_removed += 1;
            report.reclaim(size);
        }
    }
    Ok(report)
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

/// Deletes a file of `dir`, returning the bytes it occupied; `None` if it
/// was already gone.
fn delete(dir: &Dir, name: &str) -> MicrosandboxResult<Option<u64>> {
    let Some(stat) = dir.stat(name)? else {
        return Ok(None);
    };
    Ok(dir.remove(name)?.then(|| allocated(&stat)))
}

/// The files in `tmp/` whose writer is gone (their lock is free), except
/// the partial downloads of blobs a lease pins: a running pull waits to
/// commit them. Anything but a regular file is left alone.
pub fn stale_tmp(layout: &Layout, pinned: &HashSet<&Digest>) -> MicrosandboxResult<Vec<String>> {
    let mut out = Vec::new();
    for entry in layout.tmp_dir().entries()? {
        if !is_regular(layout.tmp_dir(), &entry)? {
            continue;
        }
        if digest_of_name(&entry.name).is_some_and(|d| pinned.contains(&d)) {
            continue;
        }
        match stale_tmp_file(layout, &entry.name) {
            Ok(Some(_lock)) => out.push(entry.name),
            Ok(None) => {}
            // Swapped for something that is not a regular file: not ours.
            Err(e) if e.kind() == crate::ErrorKind::CorruptCache => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an entry is a regular file, asking the file system when the
/// directory does not say.
fn is_regular(dir: &Dir, entry: &Entry) -> MicrosandboxResult<bool> {
    Ok(match entry.kind {
        FileType::RegularFile => true,
        FileType::Unknown => dir
            .stat(&entry.name)?
            .is_some_and(|s| kind(&s) == FileType::RegularFile),
        _ => false,
    })
}

/// A directory where atomic writes happen.
#[derive(Clone, Copy, Debug)]
pub enum Leftover {
    /// `cache/oci/` (index.json, oci-layout).
    Oci,
    /// `leases/`.
    Leases,
}

impl Leftover {
    /// The directory.
    pub fn of(self, layout: &Layout) -> &Dir {
        match self {
            Leftover::Oci => layout.oci_dir(),
            Leftover::Leases => layout.leases_dir(),
        }
    }

    /// Its name under the cache, for reports.
    pub fn shown(self) -> &'static str {
        match self {
            Leftover::Oci => "oci",
            Leftover::Leases => "leases",
        }
    }
}

/// The temporaries of atomic writes a crash left in `oci/` and `leases/`.
/// Those writes happen under the cache lock, which a prune holds, so none
/// is live.
pub fn atomic_leftovers(layout: &Layout) -> MicrosandboxResult<Vec<(Leftover, String)>> {
    let mut out = Vec::new();
    for which in [Leftover::Oci, Leftover::Leases] {
        let dir = which.of(layout);
        let mut names = Vec::new();
        for entry in dir.entries()? {
            if entry.name.starts_with('.')
                && entry.name.contains(ATOMIC_TMP_MARK)
                && is_regular(dir, &entry)?
            {
                names.push(entry.name);
            }
        }
        names.sort();
        out.extend(names.into_iter().map(|n| (which, n)));
    }
    Ok(out)
}
