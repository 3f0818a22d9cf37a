//! The one commit of a load or a pull: pin what the plan needs, bring every
//! distinct blob into `tmp/` (several at once), check every layer against
//! its config's diff_id, then under the exclusive lock rename the verified
//! temporaries into `blobs/`, record what each layer decompresses to, and
//! rewrite `index.json` once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use super::planned::{distinct, Planned};
use super::source::{Arrived, Source, Staged};
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{
    Descriptor, ANN_CREATED, ANN_IMAGE_CREATED, ANN_LAST_USED, ANN_LAYERS, ANN_SIZE,
};
use crate::store::artifact::SealedArtifact;
use crate::store::blob::{sync_all, BlobWriter, ParkedBlob, VerifiedBlob};
use crate::store::catalog::{handle_of, name_descriptor};
use crate::store::diffid;
use crate::store::index::{self, IndexTxn};
use crate::store::layout::Layout;
use crate::store::lease::TransferPin;
use crate::store::lock::Exclusive;
use crate::transfer::layer::{check_diff_id, feed_layer, LayerSink};
use crate::transfer::progress::{Phase, Progress};
use crate::util::time;
use crate::values::ImageHandle;

/// Pins what a plan needs, brings it in and commits it.
pub(super) fn ingest(
    layout: &Layout,
    source: &Source,
    planned: &[Planned],
) -> MicrosandboxResult<Vec<ImageHandle>> {
    let mut needed: Vec<Digest> = Vec::new();
    let mut seen = HashSet::new();
    for d in distinct(planned).flat_map(|p| p.image.blobs()) {
        if seen.insert(d.clone()) {
            needed.push(d.clone());
        }
    }
    let mut pin = TransferPin::take(layout, needed.clone())?;
    ingest_and_commit(layout, source, planned, &needed, &mut pin)
}

/// Whether the cache holds the blob already, at the size the source
/// declares. Such a blob is not read from the source again: the cache's
/// copy was verified when it entered.
pub(super) fn present(layout: &Layout, d: &Descriptor, what: &str) -> MicrosandboxResult<bool> {
    match layout.blob_stat(&d.digest)? {
        Some(s) if crate::store::fs::kind(&s) != rustix::fs::FileType::RegularFile => {
            Err(MicrosandboxError::corrupt(format!(
                "{what}: {} is not a regular file (verify --repair)",
                layout.blob_path(&d.digest).display()
            )))
        }
        Some(s) if s.st_size as u64 == d.size => Ok(true),
        Some(s) => Err(MicrosandboxError::new(
            ErrorKind::DigestMismatch,
            format!(
                "{what}: {} is declared with {} bytes; that blob has {}",
                d.digest, d.size, s.st_size
            ),
        )),
        None => Ok(false),
    }
}

pub(super) fn ingest_and_commit(
    layout: &Layout,
    source: &Source,
    planned: &[Planned],
    needed: &[Digest],
    pin: &mut TransferPin,
) -> MicrosandboxResult<Vec<ImageHandle>> {
    let mut verified: Vec<VerifiedBlob> = Vec::new();
    let mut written: HashSet<Digest> = HashSet::new();
    let mut seen_layers: HashSet<Digest> = HashSet::new();
    let mut layers: Vec<(Descriptor, String, Digest)> = Vec::new();
    for p in distinct(planned) {
        let shown = p.reference.familiar();
        let json = [
            (&p.manifest, &p.manifest_bytes, "manifest"),
            (&p.config, &p.config_bytes, "config"),
        ];
        for (d, bytes, what) in json {
            let what = format!("{what} of {shown}");
            if present(layout, d, &what)? || !written.insert(d.digest.clone()) {
                continue;
            }
            let mut w = BlobWriter::create(layout)?.expecting(&d.digest, d.size);
            w.write(bytes, &what)?;
            verified.push(w.finish(&what)?.0);
        }
        for (i, d) in p.layers.iter().enumerate() {
            if seen_layers.insert(d.digest.clone()) {
                layers.push((
                    d.clone(),
                    format!("layer {i} of {shown}"),
                    p.diff_ids[i].clone(),
                ));
            }
        }
    }
    // Every distinct layer is brought in (several at once) and decompressed
    // once (gzip) while its file is ours; then every occurrence is checked
    // against its own config's diff_id, whether the layer is new, repeated,
    // or in the cache already.
    let pin = Mutex::new(pin);
    let renew = || pin.lock().unwrap_or_else(|e| e.into_inner()).renew_if_due();
    let progress = source.progress.as_ref();
    let brought = crate::util::par::queue(&layers, source.parallelism(), |(d, what, diff_id)| {
        // A new blob's uncompressed bytes also feed the sink of its
        // layer (a VM layer image made in the same pass), if any.
        let sink = || source.sinks.as_ref().and_then(|make| make(diff_id));
        let digest_of = |file: &std::fs::File, path: &Path, sink| {
            feed_layer(
                file,
                path,
                &d.digest,
                &d.media_type,
                what,
                progress,
                source.max_layer_bytes,
                sink,
            )
        };
        // A blob the cache holds was checked when it entered: what it
        // decompresses to is on record, and is not worked out again.
        let cached = || -> MicrosandboxResult<Option<Digest>> {
            if let Some(known) = diffid::get(layout, &d.digest) {
                return Ok(Some(known));
            }
            let path = layout.blob_path(&d.digest);
            let file = layout.open_blob(&d.digest)?.ok_or_else(|| {
                MicrosandboxError::new(
                    ErrorKind::Busy,
                    format!(
                        "blob {} was pruned while the load ran; load again",
                        d.digest
                    ),
                )
            })?;
            digest_of(&file, &path, None).map(|(found, _)| found)
        };
        // The sink's image, finished and flushed before the lock; a layer
        // it cannot make is left to a later materialize, which says why.
        let made = |sink: Option<Box<dyn LayerSink>>| sink.and_then(|s| s.finish(what).ok());
        if present(layout, d, what)? {
            return Ok((None, cached()?, None));
        }
        renew()?;
        Ok(match source.stage(layout, d, Some(diff_id), what, renew)? {
            Staged::Written(blob) => {
                let (found, sink) = digest_of(blob.file(), &blob.path(), sink())?;
                (Some(Arrived::Written(blob)), found, made(sink))
            }
            Staged::Partial(blob, tap) => {
                let (found, sink) = match tap {
                    Some(tap) => tap.finish(&d.digest, what)?,
                    None => digest_of(blob.file(), &blob.path(), None)?,
                };
                (Some(Arrived::Parked(blob.park()?)), found, made(sink))
            }
            Staged::Present => (None, cached()?, None),
        })
    })?;
    let mut parked: Vec<ParkedBlob> = Vec::new();
    let mut uncompressed: HashMap<&Digest, Option<Digest>> = HashMap::new();
    let mut images: Vec<SealedArtifact> = Vec::new();
    for ((d, _, _), (arrived, found, image)) in layers.iter().zip(brought) {
        match arrived {
            Some(Arrived::Written(blob)) => verified.push(blob),
            Some(Arrived::Parked(blob)) => parked.push(blob),
            None => {}
        }
        uncompressed.insert(&d.digest, found);
        images.extend(image);
    }
    for p in distinct(planned) {
        for (i, d) in p.layers.iter().enumerate() {
            let what = format!("layer {i} of {}", p.reference.familiar());
            check_diff_id(uncompressed[&d.digest].as_ref(), &p.diff_ids[i], &what)?;
        }
    }

    // Flush every new blob before the lock: the commit only renames
    // (parked downloads were flushed as they finished).
    sync_all(&verified)?;
    let committed: u64 = verified.iter().map(VerifiedBlob::size).sum::<u64>()
        + parked.iter().map(ParkedBlob::size).sum::<u64>();
    let guard = layout.lock::<Exclusive>()?;
    // Read the index before any rename: an index that cannot be read fails
    // the load with nothing moved into blobs/.
    let mut txn = IndexTxn::begin(layout, &guard)?;
    // Check before any rename: a failed commit leaves nothing in blobs/.
    // Parked downloads are taken (locked, checked) first; another pull may
    // have committed some already.
    let mut to_rename: Vec<&ParkedBlob> = Vec::new();
    for blob in &parked {
        if blob.hold(layout, &guard, layout.lock_timeout())? {
            to_rename.push(blob);
        }
    }
    let arriving: HashSet<&Digest> = verified
        .iter()
        .map(VerifiedBlob::digest)
        .chain(to_rename.iter().map(|b| b.digest()))
        .collect();
    if let Some(lost) = needed
        .iter()
        .find(|d| !arriving.contains(d) && !layout.has_blob(d))
    {
        return Err(MicrosandboxError::new(
            ErrorKind::Busy,
            format!("blob {lost} was pruned while the load ran; load again"),
        ));
    }
    let any = !verified.is_empty() || !parked.is_empty();
    for blob in verified {
        blob.commit(layout, &guard)?;
    }
    for blob in to_rename {
        blob.commit(layout, &guard)?;
    }
    if any {
        layout.blobs_dir().sync()?;
    }
    // What each compressed layer decompresses to, checked above against
    // its config: recorded once, so a reload or a re-pull need not inflate
    // it again.
    let pairs: Vec<(Digest, Digest)> = uncompressed
        .iter()
        .filter_map(|(blob, found)| Some(((*blob).clone(), found.clone()?)))
        .filter(|(blob, diff_id)| blob != diff_id)
        .collect();
    diffid::put_all(layout, &guard, &pairs);
    // The layer images made on the way, now that their layers are checked
    // and in the cache.
    for image in images {
        image.commit(layout, &guard)?;
    }
    let now = time::format(time::now());
    let index = &mut txn.index;
    // The new entries replace every spelling of their names; the newest of
    // them lends its times when it named the same manifest.
    let names: HashSet<String> = planned.iter().map(|p| p.reference.canonical()).collect();
    let mut replaced = index::take_named(index, &names);
    let mut descriptors = Vec::with_capacity(planned.len());
    for p in planned {
        let previous = replaced.remove(&p.reference.canonical());
        let mut d = Descriptor {
            platform: Some(p.platform.clone()),
            ..p.manifest.clone()
        };
        name_descriptor(&mut d, &p.reference);
        let same = previous.as_ref().filter(|prev| prev.digest == d.digest);
        let keep = |k: &str| same.and_then(|prev| prev.annotations.get(k).map(str::to_owned));
        d.annotations.insert(
            ANN_CREATED,
            keep(ANN_CREATED).unwrap_or_else(|| now.clone()),
        );
        if let Some(used) = keep(ANN_LAST_USED) {
            d.annotations.insert(ANN_LAST_USED, used);
        }
        if let Some(created) = p.created.as_deref().and_then(time::parse) {
            d.annotations
                .insert(ANN_IMAGE_CREATED, time::format(created));
        }
        d.annotations.insert(ANN_SIZE, p.size().to_string());
        d.annotations.insert(ANN_LAYERS, p.layers.len().to_string());
        index.manifests.push(d.clone());
        descriptors.push((p.reference.clone(), d));
    }
    txn.commit()?;
    if let Some(p) = &source.progress {
        p.report(&Progress {
            phase: Phase::Commit,
            digest: None,
            bytes: committed,
            total_bytes: Some(committed),
        });
    }
    descriptors
        .iter()
        .map(|(r, d)| handle_of(layout, r, d))
        .collect()
}
