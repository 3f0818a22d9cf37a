//! Checks of the VM artifacts in the cache, for verify: each layer image
//! is an EROFS image whose superblock (magic, checksum, block count)
//! matches its file and whose every inode reads as the kernel reads it;
//! each fsmeta's device table names layer images that exist with the sizes
//! it was made for (invariant 7); each VMDK's extents name this image's
//! fsmeta and layer images, inside `cache/vm/`, with their sizes; and
//! every artifact's bytes hash to the seal its maker put on it
//! ([`crate::store::artifact::seal`]).

use std::collections::HashMap;
use std::fs::File;

use crate::error::MicrosandboxResult;
use crate::oci::digest::Digest;
use crate::store::artifact::{self, ArtifactKind};
use crate::store::layout::Layout;
use crate::vm::stitch::VMDK_LIMIT;

/// One artifact that failed its check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bad {
    /// Its kind.
    pub kind: ArtifactKind,
    /// Its file name in its directory.
    pub name: String,
    /// What is wrong.
    pub why: String,
}

/// What [`check_all`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Artifacts checked.
    pub count: u64,
    /// Their bytes hashed against their seals.
    pub bytes: u64,
    /// Those that failed, and the entries that are no artifact file at all
    /// (a link, a directory under an artifact's name).
    pub bad: Vec<Bad>,
}

/// Checks every artifact `present` names, hashing them on a few threads;
/// `bad` (entries of `cache/vm/` that are no regular file, with why) are
/// reported with them.
///
/// # Errors
///
/// `Io`.
pub fn check_all(
    layout: &Layout,
    present: impl IntoIterator<Item = (ArtifactKind, Digest)>,
    bad: &[(ArtifactKind, String, String)],
) -> MicrosandboxResult<Checked> {
    let mut out = Checked::default();
    let mut layers: HashMap<Digest, u64> = HashMap::new();
    let mut fsmeta: HashMap<Digest, u64> = HashMap::new();
    let mut ids: Vec<_> = present.into_iter().collect();
    // What others name first: layers, then fsmeta, then VMDKs, each held
    // against the sound ones before it.
    ids.sort_by_key(|(k, d)| (std::cmp::Reverse(k.dependents_first()), d.clone()));
    let opened: Vec<_> = ids
        .into_iter()
        .filter_map(|(kind, key)| {
            let file = artifact::open(layout, kind, &key).ok().flatten()?;
            Some((kind, key, file))
        })
        .collect();
    let threads = crate::util::par::cores().map_or(2, |n| n.min(4));
    let sealed = crate::util::par::queue(&opened, threads, |(_, _, file)| {
        Ok(artifact::seal::check_full(file))
    })?;
    for ((kind, key, file), seal) in opened.into_iter().zip(sealed) {
        out.count += 1;
        let structure = match kind {
            ArtifactKind::Layer => check_layer(&file).inspect(|size| {
                layers.insert(key.clone(), *size);
            }),
            ArtifactKind::Fsmeta => check_fsmeta(layout, &file, &layers).inspect(|size| {
                fsmeta.insert(key.clone(), *size);
            }),
            ArtifactKind::Vmdk => check_vmdk(layout, &file, &key, &layers, &fsmeta),
        };
        // The structure's fault first: it says more than a digest.
        let verdict = structure.and_then(|_| seal.map(|bytes| out.bytes += bytes));
        if let Err(why) = verdict {
            // Not sound: nothing after it is held against it.
            match kind {
                ArtifactKind::Layer => layers.remove(&key),
                ArtifactKind::Fsmeta => fsmeta.remove(&key),
                ArtifactKind::Vmdk => None,
            };
            out.bad.push(Bad {
                kind,
                name: kind.name(&key),
                why,
            });
        }
    }
    out.bad.extend(bad.iter().map(|(kind, name, why)| Bad {
        kind: *kind,
        name: name.clone(),
        why: why.clone(),
    }));
    Ok(out)
}

fn len(file: &File) -> Result<u64, String> {
    file.metadata().map(|m| m.len()).map_err(|e| e.to_string())
}

/// Checks a layer image (superblock, checksum, a size that is its file's,
/// no device table); its size when sound.
pub(crate) fn check_layer(file: &File) -> Result<u64, String> {
    let info = erofs::check_image(file).map_err(|e| e.to_string())?;
    let len = len(file)?;
    if info.size_bytes() != len || !info.devices.is_empty() {
        return Err(format!(
            "{len} bytes for an image of {} with {} devices",
            info.size_bytes(),
            info.devices.len()
        ));
    }
    Ok(len)
}

fn check_fsmeta(layout: &Layout, file: &File, sound: &HashMap<Digest, u64>) -> Result<u64, String> {
    let info = erofs::check_image(file).map_err(|e| e.to_string())?;
    let mut opened = Vec::with_capacity(info.devices.len());
    for d in &info.devices {
        let key = std::str::from_utf8(&d.tag)
            .ok()
            .and_then(|hex| Digest::from_hex(hex).ok())
            .ok_or("a device tag that names no layer")?;
        if !sound.contains_key(&key) {
            return Err(format!("layer image {} is missing or damaged", key.hex()));
        }
        let f = artifact::open(layout, ArtifactKind::Layer, &key)
            .ok()
            .flatten()
            .ok_or_else(|| format!("layer image {} is missing", key.hex()))?;
        opened.push(f);
    }
    let refs: Vec<&dyn erofs::ReadAt> = opened.iter().map(|f| f as &dyn erofs::ReadAt).collect();
    erofs::check_fsmeta(file, &refs).map_err(|e| e.to_string())?;
    len(file)
}

fn check_vmdk(
    layout: &Layout,
    file: &File,
    manifest: &Digest,
    layers: &HashMap<Digest, u64>,
    fsmeta: &HashMap<Digest, u64>,
) -> Result<u64, String> {
    let path = artifact::path(layout, ArtifactKind::Vmdk, manifest);
    let bytes = crate::store::fs::read_file_bounded(
        file.try_clone().map_err(|e| e.to_string())?,
        VMDK_LIMIT,
        &path,
    )
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not text".to_owned())?;
    let desc = erofs::vmdk::parse(&text).map_err(|e| e.to_string())?;
    let parts = desc.files().map_err(|e| e.to_string())?;
    let own_fsmeta = format!("../fsmeta/{}", ArtifactKind::Fsmeta.name(manifest));
    for (i, part) in parts.iter().enumerate() {
        let (kind, name) = match part.path.strip_prefix("../layers/") {
            Some(name) if i > 0 => (ArtifactKind::Layer, name),
            _ if i == 0 && part.path == own_fsmeta => {
                (ArtifactKind::Fsmeta, &part.path["../fsmeta/".len()..])
            }
            _ => return Err(format!("extent {i} names {:?}", part.path)),
        };
        let key = kind
            .key_of(name)
            .ok_or_else(|| format!("extent {i} names {:?}", part.path))?;
        // Held against the files already found sound, never a stat of a
        // name that may be missing or damaged.
        let sound = match kind {
            ArtifactKind::Layer => layers,
            _ => fsmeta,
        };
        let size = sound
            .get(&key)
            .copied()
            .ok_or_else(|| format!("{} is missing or damaged", part.path))?;
        if size != part.size {
            return Err(format!(
                "{} has {size} bytes, the descriptor says {}",
                part.path, part.size
            ));
        }
    }
    len(file)
}
