//! The references of the cache as `list`, `get` and `inspect` see them: a
//! parsed view of `index.json`, kept in memory while the file is unchanged.
//!
//! `index.json` only ever changes by an atomic rename, so its inode, size
//! and modification time identify a version; a read that finds the same
//! stamp reuses the parsed view and answers without parsing megabytes of
//! JSON again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{
    Descriptor, IndexFile, ANN_CREATED, ANN_IMAGE_CREATED, ANN_LAST_USED, ANN_LAYERS, ANN_REF_NAME,
    ANN_SIZE,
};
use crate::oci::reference::Reference;
use crate::store::content;
use crate::store::fs::Stat;
use crate::store::index::{self, same_image, INDEX};
use crate::store::layout::Layout;
use crate::util::time;
use crate::values::ImageHandle;

/// One reference of the index.
#[derive(Debug)]
pub struct Entry {
    /// The parsed reference.
    pub reference: Reference,
    /// Its descriptor in `index.json`, without its annotations: what they
    /// say is in the handle, and 10,000 copies of the same five keys would
    /// double the view's memory.
    pub descriptor: Descriptor,
    /// What `list` shows.
    pub handle: ImageHandle,
}

/// The parsed index, newest reference first.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// Builds the view. Entries without a parsable `ref.name` are not
    /// references and are left out; entries another tool wrote without this
    /// cache's annotations are summarized from their blobs.
    pub fn build(layout: &Layout, index: IndexFile) -> MicrosandboxResult<Catalog> {
        // One entry per name: the newest spelling (the last in the file),
        // as every other operation resolves it (see [`index::resolve`]).
        let mut newest: HashMap<String, usize> = HashMap::new();
        let good = index.manifests.good;
        // Parsing 10,000 names and times is most of a cold list: on all
        // cores.
        let names = crate::util::par::on_cores(&good, |d| {
            let r = Reference::parse(d.ref_name()?).ok()?;
            let canonical = r.canonical();
            Some((r, canonical))
        });
        let mut parsed = Vec::with_capacity(good.len());
        for (descriptor, name) in good.into_iter().zip(names) {
            let Some((reference, canonical)) = name else {
                continue;
            };
            newest.insert(canonical.clone(), parsed.len());
            parsed.push((reference, canonical, descriptor));
        }
        let chosen: Vec<(Reference, String, Descriptor)> = parsed
            .into_iter()
            .enumerate()
            .filter(|(i, (_, canonical, _))| newest.get(canonical) == Some(i))
            .map(|(_, p)| p)
            .collect();
        let mut handles = crate::util::par::on_cores(&chosen, |(reference, canonical, d)| {
            handle_with(reference, canonical.clone(), d, |_| None)
        });
        // Entries another tool wrote are summarized from their blobs, once
        // per manifest however many names it has.
        let mut summaries: HashMap<Digest, Option<content::Summary>> = HashMap::new();
        for ((reference, canonical, descriptor), handle) in chosen.iter().zip(&mut handles) {
            if needs_summary(descriptor) {
                *handle = handle_with(reference, canonical.clone(), descriptor, |d| {
                    summaries
                        .entry(d.digest.clone())
                        .or_insert_with(|| content::summarize(layout, d).ok())
                        .clone()
                });
            }
        }
        let mut entries: Vec<Entry> = chosen
            .into_iter()
            .zip(handles)
            .map(|((reference, _, descriptor), handle)| Entry {
                reference,
                descriptor: Descriptor {
                    annotations: Default::default(),
                    ..descriptor
                },
                handle,
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.handle.created_at));
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.handle.canonical.clone(), i))
            .collect();
        Ok(Catalog { entries, by_name })
    }

    /// Every reference, newest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries a reference names: the one of its canonical name, or
    /// for a bare `name@sha256:...`, every tag of that repository on that
    /// manifest.
    pub fn find(&self, reference: &Reference) -> Vec<&Entry> {
        if let Some(&i) = self.by_name.get(&reference.canonical()) {
            return vec![&self.entries[i]];
        }
        match (reference.tag(), reference.digest()) {
            (None, Some(digest)) => self
                .entries
                .iter()
                .filter(|e| same_image(&e.reference, &e.descriptor.digest, reference, digest))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What a caller's text names: a reference, or (a digest prefix, as docker
/// takes image IDs) one manifest.
#[derive(Clone, Debug)]
pub enum Target {
    /// A reference; it may name nothing in the cache.
    Name(Reference),
    /// The manifest a digest or a unique digest prefix names.
    Manifest(Digest),
}

/// Refuses text that can name nothing: neither a reference nor a digest
/// prefix.
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidReference`], the reference parser's.
pub fn check_target_text(input: &str) -> MicrosandboxResult<()> {
    match Reference::parse(input) {
        Ok(_) => Ok(()),
        Err(_) if digest_prefix(input).is_some() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The hex digits of a digest prefix: `b9c75f5e7307` (at least 4), or
/// `sha256:b9c7...` (at least 1); `None` for anything else.
fn digest_prefix(input: &str) -> Option<&str> {
    let (hex, min) = match input.strip_prefix("sha256:") {
        Some(h) => (h, 1),
        None => (input, 4),
    };
    let ok = (min..=64).contains(&hex.len())
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(hex)
}

/// What `input` names, settled from `index` alone when it can be: a
/// reference one of the index's entries spells, or text that is no digest
/// prefix, is that reference (what [`Catalog::target`] answers too); `None`
/// when only the catalog's digests can tell. Writers that hold the index
/// read for their change use it, so they never build the whole catalog
/// for a name.
pub fn target_by_name(index: &IndexFile, input: &str) -> Option<Target> {
    let r = Reference::parse(input).ok()?;
    if digest_prefix(input).is_none() || !index::spellings(index, &r).is_empty() {
        return Some(Target::Name(r));
    }
    None
}

impl Catalog {
    /// What `input` names: a reference the cache holds by name first, else
    /// the one manifest whose digest starts with it, else the reference
    /// (which may name nothing).
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidReference`] for text that is neither, or
    /// a prefix of several manifests' digests (naming them).
    pub fn target(&self, input: &str) -> MicrosandboxResult<Target> {
        let parsed = Reference::parse(input);
        if let Ok(r) = &parsed {
            if !self.find(r).is_empty() {
                return Ok(Target::Name(r.clone()));
            }
        }
        if let Some(prefix) = digest_prefix(input) {
            let hits: std::collections::BTreeSet<&Digest> = self
                .entries
                .iter()
                .map(|e| &e.descriptor.digest)
                .filter(|d| d.hex().starts_with(prefix))
                .collect();
            match hits.len() {
                0 => {}
                1 => return Ok(Target::Manifest(hits.into_iter().next().unwrap().clone())),
                _ => {
                    let names: Vec<String> = hits.iter().map(|d| d.to_string()).collect();
                    return Err(crate::error::MicrosandboxError::new(
                        crate::ErrorKind::InvalidReference,
                        format!("{input} is ambiguous: it begins {}", names.join(", ")),
                    ));
                }
            }
        }
        parsed.map(Target::Name)
    }

    /// The entries `target` names, newest first.
    pub fn entries_of(&self, target: &Target) -> Vec<&Entry> {
        match target {
            Target::Name(r) => self.find(r),
            Target::Manifest(d) => self
                .entries
                .iter()
                .filter(|e| &e.descriptor.digest == d)
                .collect(),
        }
    }
}

/// The handle of one index descriptor; summarizes from the blobs only
/// when the descriptor lacks this cache's annotations.
pub fn handle_of(
    layout: &Layout,
    reference: &Reference,
    d: &Descriptor,
) -> MicrosandboxResult<ImageHandle> {
    Ok(handle_with(reference, reference.canonical(), d, |d| {
        content::summarize(layout, d).ok()
    }))
}

/// [`handle_of`] with the summary of an entry another tool wrote coming
/// from `summary`.
fn handle_with(
    reference: &Reference,
    canonical: String,
    d: &Descriptor,
    summary: impl FnOnce(&Descriptor) -> Option<content::Summary>,
) -> ImageHandle {
    let ann = |k: &str| d.annotations.get(k);
    let created_at = ann(ANN_CREATED).and_then(|t| time::parse_utc(t));
    let last_used_at = ann(ANN_LAST_USED).and_then(|t| time::parse_utc(t));
    let size = ann(ANN_SIZE).and_then(|s| s.parse::<u64>().ok());
    let layers = ann(ANN_LAYERS).and_then(|s| s.parse::<usize>().ok());
    let mut handle = ImageHandle {
        reference: reference.familiar(),
        canonical,
        manifest_digest: d.digest.to_string(),
        size_bytes: size,
        architecture: d.platform.as_ref().map(|p| p.architecture.clone()),
        os: d.platform.as_ref().map(|p| p.os.clone()),
        layer_count: layers.unwrap_or(0),
        created_at,
        last_used_at,
        image_created_at: ann(ANN_IMAGE_CREATED).and_then(|t| time::parse_utc(t)),
        disk_ready: false,
    };
    if needs_summary(d) {
        // Another tool wrote this entry. What its blobs cannot tell (an
        // artifact, an index without this host's platform) stays as the
        // descriptor says, so one odd entry never hides the others.
        if let Some(s) = summary(d) {
            handle.manifest_digest = s.manifest.digest.to_string();
            handle.size_bytes = Some(s.size);
            handle.layer_count = s.layers;
            handle.architecture = handle.architecture.or(s.architecture);
            handle.os = handle.os.or(s.os);
            handle.image_created_at = handle.image_created_at.or(s.created.map(time::utc));
        }
    }
    handle
}

/// Whether a descriptor lacks what this cache's annotations say (another
/// tool wrote it), so its handle is summarized from its blobs.
fn needs_summary(d: &Descriptor) -> bool {
    let ann = |k: &str| d.annotations.get(k);
    ann(ANN_SIZE).and_then(|s| s.parse::<u64>().ok()).is_none()
        || ann(ANN_LAYERS)
            .and_then(|s| s.parse::<usize>().ok())
            .is_none()
        || d.platform.is_none()
}

type Stamp = (u64, u64, i64, i64, u64, i64, u64);

// The stat fields' types differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn stamp(s: &Stat) -> Stamp {
    (
        s.st_dev,
        s.st_ino,
        s.st_size,
        s.st_mtime as i64,
        s.st_mtime_nsec as u64,
        s.st_ctime as i64,
        s.st_ctime_nsec as u64,
    )
}

/// A parsed version of `index.json`, with that file held open: an open
/// file keeps its inode, so no later `index.json` can reuse the inode
/// number and pass for this version. Each view is made when first asked
/// for: `list` never pays for the raw index, nor prune for the catalog.
#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    _file: std::fs::File,
    catalog: Option<Arc<Catalog>>,
    index: Option<Arc<IndexFile>>,
}

/// The parsed view of the last `index.json` read, shared by every operation
/// of one backend.
#[derive(Debug, Default)]
pub struct CatalogCache {
    slot: Mutex<Option<Cached>>,
}

impl CatalogCache {
    /// The current view. The caller holds the cache lock (shared is enough).
    pub fn current(&self, layout: &Layout) -> MicrosandboxResult<Arc<Catalog>> {
        self.view(
            layout,
            |c| c.catalog.clone(),
            |index, c| {
                let catalog = Arc::new(Catalog::build(layout, index)?);
                c.catalog = Some(catalog.clone());
                Ok(catalog)
            },
        )
    }

    /// The current `index.json`, parsed (prune and disk usage read every
    /// descriptor, unnamed ones too). The caller holds the cache lock.
    pub fn index(&self, layout: &Layout) -> MicrosandboxResult<Arc<IndexFile>> {
        self.view(
            layout,
            |c| c.index.clone(),
            |index, c| {
                let index = Arc::new(index);
                c.index = Some(index.clone());
                Ok(index)
            },
        )
    }

    /// One view of the current version: from memory while `index.json` is
    /// unchanged, else made from a fresh read and kept with that version.
    fn view<T>(
        &self,
        layout: &Layout,
        kept: impl Fn(&Cached) -> Option<T>,
        make: impl FnOnce(IndexFile, &mut Cached) -> MicrosandboxResult<T>,
    ) -> MicrosandboxResult<T> {
        let oci = layout.oci_dir();
        let path = oci.join(INDEX);
        let current =
            || -> MicrosandboxResult<Option<Stamp>> { Ok(oci.stat(INDEX)?.map(|s| stamp(&s))) };
        let now = current()?;
        if let Some(cached) = &*self.slot.lock().expect("catalog lock") {
            if Some(cached.stamp) == now {
                if let Some(v) = kept(cached) {
                    return Ok(v);
                }
            }
        }
        // Stamp what is read: the open file, not the name.
        let file = oci
            .open_regular(INDEX)?
            .ok_or_else(|| MicrosandboxError::corrupt(format!("{} is missing", path.display())))?;
        let read_stamp = stamp(
            &rustix::fs::fstat(&file)
                .map_err(std::io::Error::from)
                .at("stat", &path)?,
        );
        let reader = file.try_clone().at("open", &path)?;
        let bytes = crate::store::fs::read_file_bounded(reader, index::INDEX_LIMIT, &path)?;
        let index = index::parse(layout, bytes)?;
        let mut fresh = Cached {
            stamp: read_stamp,
            _file: file,
            catalog: None,
            index: None,
        };
        let value = make(index, &mut fresh)?;
        if current().ok().flatten() == Some(read_stamp) {
            let mut slot = self.slot.lock().expect("catalog lock");
            match slot.as_mut() {
                // The same version: add this view to the other one.
                Some(c) if c.stamp == read_stamp => {
                    c.catalog = c.catalog.take().or(fresh.catalog);
                    c.index = c.index.take().or(fresh.index);
                }
                _ => *slot = Some(fresh),
            }
        }
        Ok(value)
    }
}

/// Keeps `ref.name` set on a descriptor about to be written.
pub fn name_descriptor(d: &mut Descriptor, reference: &Reference) {
    d.annotations
        .insert(ANN_REF_NAME.to_owned(), reference.canonical());
}
