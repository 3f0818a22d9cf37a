//! `index.json`: read one entry at a time, resolved by one rule, and
//! written by one function that cannot be called without the exclusive
//! cache lock.
//!
//! Every change (a load's or a pull's commit, remove, prune, a lease's
//! `lastUsedAt` stamp, verify's repair) opens an [`IndexTxn`] with the
//! exclusive guard, edits the parsed index and commits it: an atomic
//! replace of the file. An entry another tool wrote that this crate cannot
//! parse is kept as it was, apart from the others (see
//! [`crate::oci::model::Entries`]).
//!
//! One name may be spelled several ways in the file (`app:1` as skopeo
//! writes it, `docker.io/library/app:1` as this cache does): every
//! spelling parses to one canonical reference, and the newest entry (the
//! last in the file: every writer appends) is the one `get`, `inspect`,
//! `acquire` and `save` all answer with. A load or a pull replaces every
//! spelling; `remove` takes them all.

use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{Descriptor, IndexFile, ANN_PINNED};
use crate::oci::reference::Reference;
use crate::store::layout::Layout;
use crate::store::lock::ExclusiveGuard;

/// The largest `index.json` read (about four million references).
pub const INDEX_LIMIT: u64 = 2 << 30;
/// The file name.
pub const INDEX: &str = "index.json";

/// Reads and parses `index.json`. The caller holds the cache lock.
///
/// # Errors
///
/// [`crate::ErrorKind::CorruptCache`] when it is missing, not a regular
/// file, or not an index at all (entries that do not parse are kept
/// apart, not an error).
pub fn read(layout: &Layout) -> MicrosandboxResult<IndexFile> {
    parse(layout, read_bytes(layout)?)
}

/// The bytes of `index.json`.
pub fn read_bytes(layout: &Layout) -> MicrosandboxResult<Vec<u8>> {
    let path = layout.oci_dir().join(INDEX);
    layout
        .oci_dir()
        .read_bounded(INDEX, INDEX_LIMIT)?
        .ok_or_else(|| MicrosandboxError::corrupt(format!("{} is missing", path.display())))
}

/// Parses the bytes of `index.json`.
pub fn parse(layout: &Layout, bytes: Vec<u8>) -> MicrosandboxResult<IndexFile> {
    serde_json::from_slice(&bytes).map_err(|e| unparsable(layout, e))
}

/// The error for bytes of `index.json` that are not an index.
pub fn unparsable(layout: &Layout, e: serde_json::Error) -> MicrosandboxError {
    MicrosandboxError::corrupt(format!(
        "{} does not parse: {e}",
        layout.oci_dir().join(INDEX).display()
    ))
}

/// Replaces `index.json` atomically: the one function that writes it.
pub(crate) fn write(
    layout: &Layout,
    _exclusive: &ExclusiveGuard,
    index: &IndexFile,
) -> MicrosandboxResult<()> {
    let bytes = serde_json::to_vec(index).expect("an index always serializes");
    layout.oci_dir().write_atomic(INDEX, &bytes)
}

/// A change to `index.json`, made under the exclusive lock.
pub struct IndexTxn<'a> {
    layout: &'a Layout,
    guard: &'a ExclusiveGuard,
    /// The index as read, to be changed.
    pub index: IndexFile,
}

impl<'a> IndexTxn<'a> {
    /// Reads the index for a change.
    ///
    /// # Errors
    ///
    /// As [`read`].
    pub fn begin(layout: &'a Layout, guard: &'a ExclusiveGuard) -> MicrosandboxResult<Self> {
        Ok(IndexTxn {
            layout,
            guard,
            index: read(layout)?,
        })
    }

    /// A change to an index read under this same lock (a prune's plan).
    pub fn of(layout: &'a Layout, guard: &'a ExclusiveGuard, index: IndexFile) -> Self {
        IndexTxn {
            layout,
            guard,
            index,
        }
    }

    /// Writes the changed index.
    pub fn commit(self) -> MicrosandboxResult<()> {
        write(self.layout, self.guard, &self.index)
    }
}

/// The positions of the entries spelling `reference`'s canonical name,
/// in file order: what a load or a pull of that name replaces.
pub fn named(index: &IndexFile, reference: &Reference) -> Vec<usize> {
    let canonical = reference.canonical();
    // Any spelling of the name ends with its last path component and its
    // tag or digest: only such names are worth parsing.
    let last = reference.path().rsplit('/').next().unwrap_or_default();
    let tail = format!("{last}{}", &canonical[reference.repository().len()..]);
    (0..index.manifests.len())
        .filter(|&i| match index.manifests[i].ref_name() {
            Some(name) if name == canonical => true,
            Some(name) if name.ends_with(&tail) => {
                Reference::parse(name).is_ok_and(|r| r.canonical() == canonical)
            }
            _ => false,
        })
        .collect()
}

/// Takes every entry spelling one of `names` (canonical references) out
/// of the index, and returns the newest taken for each name: what a load
/// or a pull replaces, in one pass over the file.
pub fn take_named(
    index: &mut IndexFile,
    names: &std::collections::HashSet<String>,
) -> std::collections::HashMap<String, Descriptor> {
    let mut taken = std::collections::HashMap::new();
    index.manifests.retain(|d| {
        let Some(name) = d.ref_name() else {
            return true;
        };
        let canonical = if names.contains(name) {
            name.to_owned()
        } else {
            match Reference::parse(name) {
                Ok(r) if names.contains(&r.canonical()) => r.canonical(),
                _ => return true,
            }
        };
        taken.insert(canonical, d.clone());
        false
    });
    taken
}

/// The positions of every entry `reference` names, in file order: each
/// spelling of its canonical name, or, for a bare `name@sha256:...`,
/// every tag of that repository on that manifest.
pub fn spellings(index: &IndexFile, reference: &Reference) -> Vec<usize> {
    let named = named(index, reference);
    if !named.is_empty() {
        return named;
    }
    match (reference.tag(), reference.digest()) {
        (None, Some(digest)) => (0..index.manifests.len())
            .filter(|&i| {
                index.manifests[i]
                    .ref_name()
                    .and_then(|n| Reference::parse(n).ok())
                    .is_some_and(|r| same_image(&r, &index.manifests[i].digest, reference, digest))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The entry `reference` resolves to: the newest of its spellings.
pub fn resolve(index: &IndexFile, reference: &Reference) -> Option<usize> {
    spellings(index, reference).last().copied()
}

/// Whether an entry is a pin record: an unnamed descriptor that keeps a
/// leased manifest visible to other tools (see [`ANN_PINNED`]).
pub fn is_pin_record(d: &Descriptor) -> bool {
    d.ref_name().is_none() && d.annotations.contains_key(ANN_PINNED)
}

/// Makes sure a pin record for `manifest` is in the index (one per manifest).
pub fn ensure_pin_record(index: &mut IndexFile, manifest: &Descriptor) {
    if index
        .manifests
        .iter()
        .any(|d| is_pin_record(d) && d.digest == manifest.digest)
    {
        return;
    }
    let mut d = Descriptor::new(&manifest.media_type, manifest.digest.clone(), manifest.size);
    d.platform = manifest.platform.clone();
    d.annotations.insert(ANN_PINNED, "true");
    index.manifests.push(d);
}

/// Takes out the pin records of manifests no live lease pins; true if any
/// went.
pub fn drop_pin_records(index: &mut IndexFile, pinned: &std::collections::HashSet<Digest>) -> bool {
    let before = index.manifests.len();
    index
        .manifests
        .retain(|d| !is_pin_record(d) || pinned.contains(&d.digest));
    index.manifests.len() != before
}

/// How an entry is named to people, in every report and listing: the
/// familiar form of its reference (`python:3.12`, as `list` shows it),
/// else its manifest digest for an entry with no usable name.
pub fn shown_name(d: &Descriptor) -> String {
    d.ref_name()
        .and_then(|n| Reference::parse(n).ok())
        .map_or_else(|| d.digest.to_string(), |r| r.familiar())
}

/// Whether an entry named `have` on `have_digest` is the image a bare
/// `want@digest` names.
pub fn same_image(
    have: &Reference,
    have_digest: &Digest,
    want: &Reference,
    digest: &Digest,
) -> bool {
    have_digest == digest && have.domain() == want.domain() && have.path() == want.path()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::model::{ANN_REF_NAME, MEDIA_OCI_MANIFEST};

    fn entry(name: &str, digest: &Digest) -> Descriptor {
        let mut d = Descriptor::new(MEDIA_OCI_MANIFEST, digest.clone(), 1);
        d.annotations.insert(ANN_REF_NAME, name);
        d
    }

    #[test]
    fn every_spelling_names_the_entry_and_the_newest_wins() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let mut index = IndexFile::default();
        index.manifests.push(entry("docker.io/library/app:1", &a));
        index.manifests.push(entry("other:1", &a));
        index.manifests.push(entry("app:1", &b));
        let r = Reference::parse("app:1").unwrap();
        assert_eq!(spellings(&index, &r), vec![0, 2]);
        assert_eq!(resolve(&index, &r), Some(2));
        let bare = Reference::parse(&format!("app@{a}")).unwrap();
        assert_eq!(spellings(&index, &bare), vec![0]);
    }

    #[test]
    fn unreadable_entries_stay_apart_and_survive_a_rewrite() {
        let good = entry("app:1", &Digest::of(b"a"));
        let text = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{{"mediaType":"x","digest":"sha512:abc","size":1}},{{"mediaType":"x","digest":"{}","size":1e30}}]}}"#,
            serde_json::to_string(&good).unwrap(),
            Digest::of(b"c")
        );
        let index: IndexFile = serde_json::from_str(&text).unwrap();
        assert_eq!(index.manifests.len(), 1);
        assert_eq!(index.manifests.unreadable.len(), 2);
        assert_eq!(index.manifests.unreadable[0].position, 1);
        let again: IndexFile =
            serde_json::from_slice(&serde_json::to_vec(&index).unwrap()).unwrap();
        assert_eq!(again, index);
        assert!(serde_json::to_string(&again)
            .unwrap()
            .contains("sha512:abc"));
    }
}
