//! The VM artifacts in a census: what `cache/vm/` holds (with the bytes
//! each file occupies) and which artifacts each image manifest's disk is
//! made of, so prune keeps exactly the artifacts of the manifests it keeps
//! (a lease on a manifest pins its disk) and disk usage counts them with
//! their images.
//!
//! Artifacts are derived data: one whose image is gone, or written by
//! another format version, is an orphan, and a file in `cache/vm/` that
//! is no artifact at all is swept with them. Anything but a regular file
//! is left alone by prune, as in `blobs/`, and listed as bad for verify to
//! report and repair to take away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rustix::fs::FileType;

use crate::error::MicrosandboxResult;
use crate::gc::graph::{Graph, Kind};
use crate::oci::digest::Digest;
use crate::oci::model::Descriptor;
use crate::store::artifact::ArtifactKind;
use crate::store::content;
use crate::store::fs::{allocated, kind};
use crate::store::layout::Layout;

/// One artifact: its kind and key (a diff_id or a manifest digest).
pub type ArtifactId = (ArtifactKind, Digest);

/// What `cache/vm/` holds.
#[derive(Debug, Default)]
pub struct ArtifactFiles {
    /// Artifacts of this format version, with their allocated bytes.
    pub present: HashMap<ArtifactId, u64>,
    /// Other regular files of its directories (another version's, stray
    /// names), with their allocated bytes.
    pub strays: Vec<(ArtifactKind, String, u64)>,
    /// Entries that are not regular files (a link, a directory, a FIFO),
    /// with what they are.
    pub bad: Vec<(ArtifactKind, String, String)>,
}

impl ArtifactFiles {
    /// Lists the three directories.
    ///
    /// # Errors
    ///
    /// `Io`.
    pub fn list(layout: &Layout) -> MicrosandboxResult<ArtifactFiles> {
        let mut out = ArtifactFiles::default();
        for k in ArtifactKind::ALL {
            let dir = k.dir(layout);
            for entry in dir.entries()? {
                let Some(stat) = dir.stat(&entry.name)? else {
                    continue;
                };
                let found = kind(&stat);
                if found != FileType::RegularFile {
                    let what = match found {
                        FileType::Symlink => "a symbolic link".to_owned(),
                        FileType::Directory => "a directory".to_owned(),
                        other => format!("not a regular file ({other:?})"),
                    };
                    out.bad.push((
                        k,
                        entry.name,
                        format!("{what}, where only artifacts belong"),
                    ));
                    continue;
                }
                match k.key_of(&entry.name) {
                    Some(key) => {
                        out.present.insert((k, key), allocated(&stat));
                    }
                    None => out.strays.push((k, entry.name, allocated(&stat))),
                }
            }
        }
        out.strays
            .sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        out.bad
            .sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        Ok(out)
    }

    /// Whether there is nothing at all.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty() && self.strays.is_empty()
    }

    /// Every byte of `cache/vm/`.
    pub fn bytes(&self) -> u64 {
        self.present.values().sum::<u64>() + self.strays.iter().map(|s| s.2).sum::<u64>()
    }
}

/// The artifacts each image manifest's disk is made of, or `None` when
/// its config cannot be read (then no layer image can be judged unneeded).
pub type Disks = HashMap<Digest, Option<Arc<[ArtifactId]>>>;

/// Remembers each config's diff_ids (configs never change).
#[derive(Debug, Default)]
pub struct DiffIdCache(Mutex<HashMap<Digest, Arc<[Digest]>>>);

impl DiffIdCache {
    fn diff_ids(&self, layout: &Layout, config: &Descriptor) -> Option<Arc<[Digest]>> {
        if let Some(known) = self.lock().get(&config.digest) {
            return Some(known.clone());
        }
        let cfg = content::read_config(layout, config).ok()?;
        let ids: Arc<[Digest]> = cfg
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse().ok())
            .collect::<Option<Vec<Digest>>>()?
            .into();
        self.lock().insert(config.digest.clone(), ids.clone());
        Some(ids)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<[Digest]>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The disk of every image manifest the graphs reach (an index's
    /// children too). Configs are read only when there are artifacts.
    pub fn disks<'a>(&self, layout: &Layout, graphs: impl IntoIterator<Item = &'a Graph>) -> Disks {
        let mut out = Disks::new();
        for g in graphs {
            let mut manifest: Option<&Digest> = None;
            for (digest, k) in g.iter() {
                match k {
                    Kind::Manifest => manifest = Some(digest),
                    Kind::Config => {
                        let Some(m) = manifest else { continue };
                        if out.contains_key(m) {
                            continue;
                        }
                        let size = layout
                            .blob_stat(digest)
                            .ok()
                            .flatten()
                            .map_or(0, |s| s.st_size as u64);
                        let config = Descriptor::new(
                            "application/vnd.oci.image.config.v1+json",
                            digest.clone(),
                            size,
                        );
                        let disk = self.diff_ids(layout, &config).map(|ids| {
                            ids.iter()
                                .map(|d| (ArtifactKind::Layer, d.clone()))
                                .chain([
                                    (ArtifactKind::Fsmeta, m.clone()),
                                    (ArtifactKind::Vmdk, m.clone()),
                                ])
                                .collect::<Vec<_>>()
                                .into()
                        });
                        out.insert(m.clone(), disk);
                    }
                    Kind::Layer => {}
                }
            }
        }
        out
    }
}

/// The artifacts a set of kept manifests needs.
#[derive(Debug, Default)]
pub struct Needed {
    ids: HashSet<ArtifactId>,
    /// A kept manifest's config could not be read: which layer images it
    /// needs is unknown, so every one stays.
    all_layers: bool,
}

impl Needed {
    /// What the manifests in `kept` (those of `disks` among them) need.
    pub fn of<'a>(disks: &Disks, kept: impl IntoIterator<Item = &'a Digest>) -> Needed {
        let mut out = Needed::default();
        for m in kept {
            match disks.get(m) {
                Some(Some(d)) => out.ids.extend(d.iter().cloned()),
                Some(None) => {
                    out.all_layers = true;
                    out.ids.insert((ArtifactKind::Fsmeta, m.clone()));
                    out.ids.insert((ArtifactKind::Vmdk, m.clone()));
                }
                None => {}
            }
        }
        out
    }

    /// Whether `id` stays.
    pub fn keeps(&self, id: &ArtifactId) -> bool {
        (self.all_layers && id.0 == ArtifactKind::Layer) || self.ids.contains(id)
    }
}
