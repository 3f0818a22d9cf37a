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
use crate::oci::listed::{Listed, Said};
use crate::oci::model::{Descriptor, IndexFile, ANN_REF_NAME};
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

/// A map keyed by reference names, hashed with a key drawn at random once
/// per process (names come from a file anyone who can write the home can
/// plant), faster than SipHash over 40-odd characters.
type NameMap<K> = HashMap<K, usize, foldhash::quality::RandomState>;

fn names() -> foldhash::quality::RandomState {
    foldhash::quality::RandomState::default()
}

/// The parsed index.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The entries where the file has them: `None` for one that is no
    /// reference, or a spelling of a name a later entry replaces. They
    /// stay in place (10,000 entries of a few hundred bytes each moved
    /// into a new order cost a cold list several milliseconds).
    slots: Vec<Option<Slot>>,
    /// The positions of the entries, newest first.
    order: Vec<usize>,
    by_name: NameMap<Arc<str>>,
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    /// Another tool wrote it: its handle is completed from its blobs.
    from_blobs: bool,
}

impl Catalog {
    /// Builds the view from the bytes of `index.json`. Entries without a
    /// parsable `ref.name` are not references and are left out; entries
    /// another tool wrote without this cache's annotations are summarized
    /// from their blobs.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::CorruptCache`] for bytes that are not an index
    /// (as [`index::parse`] says it).
    pub fn build(layout: &Layout, bytes: &[u8]) -> MicrosandboxResult<Catalog> {
        let raw = crate::oci::listed::entries(bytes).map_err(|e| index::unparsable(layout, e))?;
        // Reading 10,000 entries, names and times is most of a cold list:
        // on all cores, each entry read once, its annotations borrowed.
        let mut slots = crate::util::par::on_cores(&raw, |r| {
            let (descriptor, said) = serde_json::from_str::<Listed<'_>>(r.get()).ok()?.split();
            let reference = Reference::parse(said.ref_name.as_deref()?).ok()?;
            let from_blobs = needs_summary(&said, &descriptor);
            let handle = handle_from(&reference, &descriptor, &said);
            Some(Slot {
                entry: Entry {
                    reference,
                    descriptor,
                    handle,
                },
                from_blobs,
            })
        });
        drop(raw);
        // One entry per name: the newest spelling (the last in the file),
        // as every other operation resolves it (see [`index::resolve`]).
        let mut by_name: NameMap<Arc<str>> =
            NameMap::with_capacity_and_hasher(slots.len(), names());
        for (i, slot) in slots.iter().enumerate() {
            if let Some(slot) = slot {
                by_name.insert(slot.entry.handle.canonical.clone(), i);
            }
        }
        // Entries another tool wrote are summarized from their blobs, once
        // per manifest however many names it has.
        let mut summaries: HashMap<Digest, Option<content::Summary>> = HashMap::new();
        for (i, place) in slots.iter_mut().enumerate() {
            let Some(slot) = place else {
                continue;
            };
            if by_name.get(&*slot.entry.handle.canonical) != Some(&i) {
                *place = None;
                continue;
            }
            if slot.from_blobs {
                let d = &slot.entry.descriptor;
                let summary = summaries
                    .entry(d.digest.clone())
                    .or_insert_with(|| content::summarize(layout, d).ok())
                    .clone();
                if let Some(s) = summary {
                    summarized(&mut slot.entry.handle, s);
                }
            }
        }
        // Newest first, entries of one time in file order.
        let mut order: Vec<(
            std::cmp::Reverse<Option<chrono::DateTime<chrono::Utc>>>,
            usize,
        )> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((std::cmp::Reverse(s.as_ref()?.entry.handle.created_at), i)))
            .collect();
        order.sort_unstable();
        let order = order.into_iter().map(|(_, i)| i).collect();
        Ok(Catalog {
            slots,
            order,
            by_name,
        })
    }

    fn at(&self, i: usize) -> Option<&Entry> {
        self.slots.get(i)?.as_ref().map(|s| &s.entry)
    }

    /// Every reference, newest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.order.iter().filter_map(|&i| self.at(i))
    }

    /// The entries a reference names: the one of its canonical name, or
    /// for a bare `name@sha256:...`, every tag of that repository on that
    /// manifest.
    pub fn find(&self, reference: &Reference) -> Vec<&Entry> {
        if let Some(entry) = self
            .by_name
            .get(&*reference.canonical())
            .and_then(|&i| self.at(i))
        {
            return vec![entry];
        }
        match (reference.tag(), reference.digest()) {
            (None, Some(digest)) => self
                .entries()
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
                .entries()
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
                .entries()
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
    let said = Said::of(&d.annotations);
    let mut handle = handle_from(reference, d, &said);
    if needs_summary(&said, d) {
        if let Ok(s) = content::summarize(layout, d) {
            summarized(&mut handle, s);
        }
    }
    Ok(handle)
}

/// The handle of a descriptor as its annotations describe it.
fn handle_from(reference: &Reference, d: &Descriptor, said: &Said<'_>) -> ImageHandle {
    let time = |t: &Option<std::borrow::Cow<'_, str>>| t.as_deref().and_then(time::parse_utc);
    ImageHandle {
        canonical: reference.canonical().into(),
        // A name is under NAME_MAX: its offsets fit.
        familiar_at: u16::try_from(reference.familiar_start()).unwrap_or(0),
        manifest_digest: d.digest.as_str().into(),
        size_bytes: said.size.as_deref().and_then(|s| s.parse::<u64>().ok()),
        architecture: d.platform.as_ref().map(|p| p.architecture.shared()),
        os: d.platform.as_ref().map(|p| p.os.shared()),
        layer_count: said
            .layers
            .as_deref()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0),
        created_at: time(&said.created),
        last_used_at: time(&said.last_used),
        image_created_at: time(&said.image_created),
        disk_ready: false,
    }
}

/// Completes the handle of an entry another tool wrote from its blobs.
/// What they cannot tell (an artifact, an index without this host's
/// platform) stays as the descriptor says, so one odd entry never hides
/// the others.
fn summarized(handle: &mut ImageHandle, s: content::Summary) {
    handle.manifest_digest = s.manifest.digest.as_str().into();
    handle.size_bytes = Some(s.size);
    handle.layer_count = s.layers;
    handle.architecture = handle
        .architecture
        .take()
        .or(s.architecture.map(Into::into));
    handle.os = handle.os.take().or(s.os.map(Into::into));
    handle.image_created_at = handle.image_created_at.or(s.created.map(time::utc));
}

/// Whether a descriptor lacks what this cache's annotations say (another
/// tool wrote it), so its handle is summarized from its blobs.
fn needs_summary(said: &Said<'_>, d: &Descriptor) -> bool {
    said.size
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok())
        .is_none()
        || said
            .layers
            .as_deref()
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
            |bytes, c| {
                let catalog = Arc::new(Catalog::build(layout, &bytes)?);
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
            |bytes, c| {
                let index = Arc::new(index::parse(layout, bytes)?);
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
        make: impl FnOnce(Vec<u8>, &mut Cached) -> MicrosandboxResult<T>,
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
        let mut fresh = Cached {
            stamp: read_stamp,
            _file: file,
            catalog: None,
            index: None,
        };
        let value = make(bytes, &mut fresh)?;
        if current().ok().flatten() == Some(read_stamp) {
            let mut slot = self.slot.lock().expect("catalog lock");
            match slot.as_mut() {
                // The same version: add this view to the other one.
                Some(c) if c.stamp == read_stamp => {
                    c.catalog = c.catalog.take().or(fresh.catalog);
                    c.index = c.index.take().or(fresh.index);
                }
                // The replaced view (10,000 entries) is freed off this
                // caller's path.
                _ => {
                    if let Some(old) = slot.replace(fresh) {
                        crate::util::tidy::drop_later(old);
                    }
                }
            }
        }
        Ok(value)
    }
}

/// Keeps `ref.name` set on a descriptor about to be written.
pub fn name_descriptor(d: &mut Descriptor, reference: &Reference) {
    d.annotations.insert(ANN_REF_NAME, reference.canonical());
}
