//! Sweep: carry a prune's plan out under the exclusive lock, and find
//! the leftovers a sweep takes besides blobs (dead writers' files in
//! `tmp/`, temporaries of interrupted atomic writes).
//!
//! The index is rewritten first, so a crash mid-sweep leaves unreachable
//! blobs for the next prune, never a reference to a deleted blob. Each
//! deletion is checked again at the moment it happens: a file a writer
//! has taken since the plan stays.

use std::collections::HashSet;

use rustix::fs::FileType;

use crate::error::MicrosandboxResult;
use crate::gc::graph::Kind;
use crate::gc::Plan;
use crate::oci::digest::Digest;
use crate::store::artifact::ArtifactKind;
use crate::store::blob::stale_tmp_file;
use crate::store::fs::{allocated, kind, Dir, Entry, ATOMIC_TMP_MARK};
use crate::store::index::IndexTxn;
use crate::store::layout::Layout;
use crate::store::lease;
use crate::store::lock::ExclusiveGuard;
use crate::store::partial::digest_of_name;
use crate::values::ImagePruneReport;

/// Carries a plan out under the exclusive lock. The report counts what
/// was actually deleted.
pub(crate) fn execute(
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
    let mut vm_dirs: Vec<ArtifactKind> = Vec::new();
    for (kind, name) in &plan.vm {
        if let Some(size) = delete(kind.dir(layout), name)? {
            count_artifact(&mut report, *kind, size);
            if !vm_dirs.contains(kind) {
                vm_dirs.push(*kind);
            }
        }
    }
    for kind in vm_dirs {
        kind.dir(layout).sync()?;
    }
    for (dir, name) in &plan.leftovers {
        if let Some(size) = delete(dir.of(layout), name)? {
            report.tmp_files_removed += 1;
            report.reclaim(size);
        }
    }
    Ok(report)
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

/// Counts one VM artifact (deleted, or to be) of `bytes` on disk in a
/// prune's report.
pub(crate) fn count_artifact(report: &mut ImagePruneReport, kind: ArtifactKind, bytes: u64) {
    match kind {
        ArtifactKind::Layer => report.layers_removed += 1,
        ArtifactKind::Fsmeta => report.fsmeta_removed += 1,
        ArtifactKind::Vmdk => report.vmdk_removed += 1,
    }
    report.reclaim(bytes);
}
