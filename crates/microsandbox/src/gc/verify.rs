//! Verify (fsck): re-hashes every blob and checks the invariants of the
//! design: every reference resolves to a whole manifest (1), every blob
//! hashes to its name (2), a leased manifest keeps its blobs (3), no
//! leftover of an atomic write (4), nothing in `blobs/` that is not a
//! regular file (5), no stale file in `tmp/` (6), and every lease parses.
//!
//! With `repair`, corrupt blobs are moved aside to `cache/quarantine/` and
//! the references that can no longer be served leave `index.json`; a
//! reference whose blobs are all present and sound is never touched. The
//! check takes the shared lock, a repair the exclusive one.

use std::collections::{BTreeSet, HashSet};

use rustix::fs::FileType;
use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, MicrosandboxResult};
use crate::gc::artifacts::ArtifactFiles;
use crate::gc::census::walk;
use crate::gc::sweep::{atomic_leftovers, stale_tmp};
use crate::oci::digest::Digest;
use crate::store::artifact;
use crate::store::fs::{kind, read_full, Dir};
use crate::store::index::{self, is_pin_record, shown_name, IndexTxn};
use crate::store::layout::Layout;
use crate::store::lease::{self, Pins};
use crate::store::lock::{Exclusive, Shared};
use crate::util::time;

/// How to verify.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Move corrupt blobs aside and remove references that cannot be served.
    pub repair: bool,
}

/// What verify found (and, with `repair`, did).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blob files checked.
    pub blobs_checked: u64,
    /// Bytes hashed (blobs and VM artifacts).
    pub bytes_checked: u64,
    /// Blobs whose content does not hash to their name, or that are not
    /// regular files (a symlink, a directory).
    pub corrupt_blobs: Vec<String>,
    /// Blobs a reference or a lease needs that are absent.
    pub missing_blobs: Vec<String>,
    /// References that cannot be served whole (a manifest, config or layer
    /// missing, corrupt or unreadable).
    pub dangling_references: Vec<String>,
    /// Files in `tmp/` no live writer holds, and leftovers of interrupted
    /// atomic writes.
    pub stray_tmp_files: Vec<String>,
    /// Lease files that do not parse, name another lease, or are not
    /// regular files.
    pub bad_leases: Vec<String>,
    /// Entries of `index.json` this cache cannot read (another tool's
    /// `sha512` digest, a size beyond 64 bits), each with its position and
    /// why; the rest of the cache works without them.
    pub bad_index_entries: Vec<String>,
    /// With `repair`: corrupt blobs moved to `cache/quarantine/`.
    pub quarantined: Vec<String>,
    /// With `repair`: references taken out of `index.json`.
    pub removed_references: Vec<String>,
    /// VM artifacts checked (layer images, fsmeta, VMDK descriptors).
    pub artifacts_checked: u64,
    /// VM artifacts that fail their check or their seal
    /// (`vm/layers/<name>: why`), entries under an artifact's name that are
    /// no artifact (a link, a directory), and a link or a file where
    /// `cache/vm/` or one of its directories belongs (`vm: why`); with
    /// `repair` they are taken away (a directory moved whole into
    /// `cache/quarantine/`), and the next materialize makes the artifacts
    /// again.
    pub corrupt_artifacts: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.missing_blobs.is_empty()
            && self.dangling_references.is_empty()
            && self.stray_tmp_files.is_empty()
            && self.bad_leases.is_empty()
            && self.bad_index_entries.is_empty()
            && self.corrupt_artifacts.is_empty()
    }
}

pub use crate::store::layout::QUARANTINE;

/// What a file of `blobs/` turned out to be.
enum Found {
    /// A regular file: its digest and size.
    Hashed(Digest, u64),
    /// A symlink, a directory, a device.
    NotRegular,
    /// Gone since the directory was read.
    Gone,
}

/// Hashes a blob file without following a symlink.
fn hash_file(blobs: &Dir, name: &str) -> MicrosandboxResult<Found> {
    let Some(stat) = blobs.stat(name)? else {
        return Ok(Found::Gone);
    };
    if kind(&stat) != FileType::RegularFile {
        return Ok(Found::NotRegular);
    }
    let mut file = match blobs.open_regular(name) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(Found::Gone),
        // Swapped for a link or a FIFO since the stat.
        Err(e) if e.kind() == crate::ErrorKind::CorruptCache => return Ok(Found::NotRegular),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut file, &mut buf).at("read", &blobs.join(name))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(Found::Hashed(Digest::from_hasher(hasher), total))
}

/// Verifies the cache, and repairs it if asked.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when `index.json` itself cannot be
/// read; `Busy`; `Io`.
pub fn verify(layout: &Layout, options: &VerifyOptions) -> MicrosandboxResult<VerifyReport> {
    let (_shared, exclusive) = if options.repair {
        (None, Some(layout.lock::<Exclusive>()?))
    } else {
        (Some(layout.lock::<Shared>()?), None)
    };
    let now = time::now();
    let mut report = VerifyReport::default();
    let (leases, bad) = lease::scan(layout)?;
    report.bad_leases = bad.into_iter().map(|b| b.name).collect();
    let pins = Pins::of(&leases, now);
    let mut index = index::read(layout)?;
    report.bad_index_entries = index
        .manifests
        .unreadable
        .iter()
        .map(|u| format!("entry {}: {}", u.position, u.why))
        .collect();

    // Invariants 2 and 5: every file of blobs/ hashes to its name.
    let blobs_dir = layout.blobs_dir();
    let files: Vec<(Digest, String)> = blobs_dir
        .entries()?
        .into_iter()
        .filter_map(|e| Some((Digest::from_hex(&e.name).ok()?, e.name)))
        .collect();
    let hashed = crate::util::par::in_parallel(&files, |(_, name)| hash_file(blobs_dir, name))?;
    let mut present: HashSet<&Digest> = HashSet::new();
    let mut corrupt: BTreeSet<&Digest> = BTreeSet::new();
    for ((digest, _), found) in files.iter().zip(&hashed) {
        match found {
            Found::Hashed(actual, size) => {
                report.blobs_checked += 1;
                report.bytes_checked += size;
                present.insert(digest);
                if actual != digest {
                    corrupt.insert(digest);
                }
            }
            Found::NotRegular => {
                // Never served, never followed: as good as corrupt.
                report.blobs_checked += 1;
                present.insert(digest);
                corrupt.insert(digest);
            }
            Found::Gone => {}
        }
    }
    report.corrupt_blobs = corrupt.iter().map(|d| d.to_string()).collect();

    // Invariants 1 and 3: every reference and every leased manifest whole.
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let whole = |root: &Digest, missing: &mut BTreeSet<String>| -> bool {
        if !present.contains(root) {
            missing.insert(root.to_string());
            return false;
        }
        if corrupt.contains(root) {
            return false;
        }
        match walk(layout, root) {
            Ok((graph, _)) => {
                let mut ok = true;
                for (d, _) in graph.iter() {
                    if !present.contains(d) {
                        missing.insert(d.to_string());
                        ok = false;
                    } else if corrupt.contains(d) {
                        ok = false;
                    }
                }
                ok
            }
            Err(_) => false,
        }
    };
    let mut unservable: Vec<usize> = Vec::new();
    for (i, d) in index.manifests.iter().enumerate() {
        // A pin record is a lease's: checked with the leases below.
        if is_pin_record(d) {
            continue;
        }
        if !whole(&d.digest, &mut missing) {
            unservable.push(i);
            report.dangling_references.push(shown_name(d));
        }
    }
    for digest in &pins.manifests {
        whole(digest, &mut missing);
    }
    // (A transfer's pin on a loose blob may name one still to arrive: no
    // fault.)
    report.missing_blobs = missing.into_iter().collect();

    // Invariants 4 and 6: nothing left behind.
    let pinned_blobs: HashSet<&Digest> = pins.blobs.iter().collect();
    for name in stale_tmp(layout, &pinned_blobs)? {
        report.stray_tmp_files.push(format!("tmp/{name}"));
    }
    for (dir, name) in atomic_leftovers(layout)? {
        report
            .stray_tmp_files
            .push(format!("{}/{name}", dir.shown()));
    }

    // Invariant 7: every VM artifact whole, sealed, and made over what
    // exists; and nothing else where cache/vm/ or its directories belong.
    let files = ArtifactFiles::list(layout)?;
    let checked = crate::vm::check::check_all(layout, files.present.keys().cloned(), &files.bad)?;
    report.artifacts_checked = checked.count;
    report.bytes_checked += checked.bytes;
    report.corrupt_artifacts = layout
        .vm_damage()
        .iter()
        .map(|d| format!("{}: {}", d.shown, d.why))
        .chain(
            checked
                .bad
                .iter()
                .map(|b| format!("vm/{}/{}: {}", b.kind.dir_name(), b.name, b.why)),
        )
        .collect();

    if let Some(exclusive) = &exclusive {
        let mut doomed: Vec<&crate::vm::check::Bad> = checked.bad.iter().collect();
        doomed.sort_by_key(|b| b.kind.dependents_first());
        for b in doomed {
            artifact::discard(layout, b.kind, &b.name, exclusive)?;
        }
        artifact::clear_damage(layout, exclusive)?;
        // References first: a crash between the two steps then leaves no
        // reference to a blob that was moved aside.
        let unreadable = !index.manifests.unreadable.is_empty();
        if !unservable.is_empty() || unreadable {
            let gone: HashSet<usize> = unservable.into_iter().collect();
            let mut i = 0;
            index.manifests.retain(|d| {
                let keep = !gone.contains(&i);
                i += 1;
                if !keep {
                    report.removed_references.push(shown_name(d));
                }
                keep
            });
            for u in index.manifests.unreadable.drain(..) {
                report
                    .removed_references
                    .push(format!("index.json entry {}", u.position));
            }
            IndexTxn::of(layout, exclusive, index).commit()?;
        }
        if !corrupt.is_empty() {
            let aside = layout.quarantine_dir()?;
            for d in &corrupt {
                blobs_dir
                    .rename(d.hex(), &aside, d.hex())
                    .at("move aside", &layout.blob_path(d))?;
                report.quarantined.push(d.to_string());
            }
            aside.sync()?;
            blobs_dir.sync()?;
        }
    }
    Ok(report)
}
