//! Makes whatever an image's disk lacks and hands the disk out.
//!
//! The image's blobs are pinned for the whole run (a transfer pin on its
//! manifest, which keeps its artifacts too), so a prune never takes what
//! is being read or built. Each artifact is claimed before it is made
//! ([`crate::store::artifact::claim`]): two processes materializing the
//! same image, or two images sharing a layer, make it once and both get
//! the same path. An artifact already in the cache is checked before it
//! is handed out: its seal against the file's size and modification time
//! ([`crate::store::artifact::seal::check_quick`]), then its structure (a
//! layer image's every inode as the kernel reads it, the fsmeta's device
//! table against the layer images, the descriptor's extents). One that
//! fails, and anything else found under its name (a link, a directory), is
//! taken away and made again, and the disk's `remade` says which and why;
//! so does a `cache/vm/` directory that had to be cleared first.

use std::fs::File;
use std::sync::Arc;

use crate::error::{IoContext, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::Descriptor;
use crate::store::artifact::{self, ArtifactKind, Claim};
use crate::store::content;
use crate::store::layout::{Home, Layout};
use crate::store::lease::TransferPin;
use crate::store::lock::{Exclusive, Shared};
use crate::transfer::layer::DEFAULT_MAX_LAYER_BYTES;
use crate::transfer::progress::{ProgressFn, PullProgress, PullProgressFn};
use crate::values::{ImageDisk, ImageDiskLayer};
use crate::vm::layer::{self, LayerSpec};
use crate::vm::stitch::{self, DiskLayer};

/// How a materialize runs.
#[derive(Clone, Debug, Default)]
pub struct MaterializeOptions {
    /// Byte events (`phase: erofs`, bytes of each layer's blob).
    pub progress: Option<ProgressFn>,
    /// Events in microsandbox's `PullProgress` kinds (layer materialize
    /// started, progress, writing, complete; stitch steps).
    pub pull_progress: Option<PullProgressFn>,
    /// The most bytes a layer may decompress to;
    /// [`crate::DEFAULT_MAX_LAYER_BYTES`] if unset.
    pub max_layer_bytes: Option<u64>,
}

/// What an image's disk is made of, read from its manifest and config.
#[derive(Clone, Debug)]
pub struct DiskPlan {
    /// The familiar reference, for the result.
    pub reference: String,
    /// The image manifest.
    pub manifest: Digest,
    /// Its blobs (manifest, config, layers), to pin.
    pub blobs: Vec<Digest>,
    /// Its layers, bottom first.
    pub layers: Vec<LayerSpec>,
}

/// Reads the plan of the image an index entry names (the host's manifest
/// of an index). The caller holds a cache lock.
///
/// # Errors
///
/// `CorruptCache` when the manifest or config is missing or malformed, or
/// the config's diff_ids do not match the layers; `PlatformNotFound`.
pub fn plan(
    layout: &Layout,
    entry: &Descriptor,
    reference: String,
) -> MicrosandboxResult<DiskPlan> {
    let content::ImageParts {
        manifest,
        config,
        cfg,
        layers,
    } = content::image_parts(layout, entry)?;
    let diff_ids = cfg.rootfs().diff_ids();
    let specs = layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| {
            let diff_id = d.parse::<Digest>().map_err(|e| {
                MicrosandboxError::corrupt(format!("config {}: diff_id {d:?}: {e}", config.digest))
            })?;
            Ok(LayerSpec {
                blob: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                diff_id,
            })
        })
        .collect::<MicrosandboxResult<Vec<_>>>()?;
    let mut blobs = vec![manifest.digest.clone(), config.digest.clone()];
    blobs.extend(layers.iter().map(|l| l.digest.clone()));
    if manifest.digest != entry.digest {
        blobs.push(entry.digest.clone());
    }
    Ok(DiskPlan {
        reference,
        manifest: manifest.digest,
        blobs,
        layers: specs,
    })
}

/// The home's layout with `cache/vm/` whole: what stood in the place of
/// one of its directories is taken away (under the exclusive lock) and the
/// layout opened again, which makes them. Also what was taken away.
///
/// # Errors
///
/// `Busy`; `Io`; as [`Home::layout`].
pub fn ready(home: &Home) -> MicrosandboxResult<(Arc<Layout>, Vec<String>)> {
    let layout = home.layout()?;
    if layout.vm_damage().is_empty() {
        return Ok((layout, Vec::new()));
    }
    let cleared = {
        let exclusive = layout.lock::<Exclusive>()?;
        artifact::clear_damage(&layout, &exclusive)?
    };
    Ok((home.layout()?, cleared))
}

/// [`materialize`] in `home`, clearing a damaged `cache/vm/` first
/// ([`ready`]); what was cleared leads the disk's `remade`.
///
/// # Errors
///
/// As [`ready`] and [`materialize`].
pub fn materialize_in(
    home: &Home,
    plan: &DiskPlan,
    options: &MaterializeOptions,
) -> MicrosandboxResult<ImageDisk> {
    let (layout, cleared) = ready(home)?;
    let mut disk = materialize(&layout, plan, options)?;
    disk.remade.splice(0..0, cleared);
    Ok(disk)
}

/// Makes what the disk of `plan` lacks and returns it.
///
/// # Errors
///
/// As [`layer::build`] for a layer that cannot be made; `Busy` when a
/// cache lock cannot be had for a commit; `Io`; `CorruptCache` when
/// `cache/vm/` is damaged (see [`materialize_in`]).
pub fn materialize(
    layout: &Layout,
    plan: &DiskPlan,
    options: &MaterializeOptions,
) -> MicrosandboxResult<ImageDisk> {
    let mut pin = TransferPin::take_manifest(layout, plan.manifest.clone(), plan.blobs.clone())?;
    let report = |e: PullProgress| {
        if let Some(p) = &options.pull_progress {
            p.report(&e);
        }
    };
    let limit = options.max_layer_bytes.unwrap_or(DEFAULT_MAX_LAYER_BYTES);
    if let Some(d) = layout.vm_damage().first() {
        return Err(MicrosandboxError::corrupt(format!(
            "cache/{}: {} (verify --repair takes it away)",
            d.shown, d.why
        )));
    }
    let mut remade: Vec<String> = Vec::new();
    let mut files: Vec<(File, u64)> = Vec::with_capacity(plan.layers.len());
    for (i, spec) in plan.layers.iter().enumerate() {
        let what = format!("layer {i} of {}", plan.reference);
        let check = |f: &File| crate::vm::check::check_layer(f).map(drop);
        let file = obtain(
            layout,
            ArtifactKind::Layer,
            &spec.diff_id,
            &mut pin,
            &mut remade,
            check,
            |w| {
                report(PullProgress::LayerMaterializeStarted {
                    layer_index: i,
                    diff_id: spec.diff_id.to_string(),
                });
                let bytes = options.pull_progress.clone().map(|p| {
                    let total = spec.size;
                    ProgressFn::new(move |e| {
                        p.report(&PullProgress::LayerMaterializeProgress {
                            layer_index: i,
                            bytes_read: e.bytes,
                            total_bytes: Some(total),
                        });
                        if e.bytes >= total {
                            p.report(&PullProgress::LayerMaterializeWriting { layer_index: i });
                        }
                    })
                });
                let both = match (options.progress.clone(), bytes) {
                    (Some(a), Some(b)) => Some(ProgressFn::new(move |e| {
                        a.report(e);
                        b.report(e);
                    })),
                    (a, b) => a.or(b),
                };
                layer::build(layout, spec, w, both, limit, &what).map(drop)
            },
        )?;
        let size = file
            .metadata()
            .at(
                "stat",
                &artifact::path(layout, ArtifactKind::Layer, &spec.diff_id),
            )?
            .len();
        report(PullProgress::LayerMaterializeComplete {
            layer_index: i,
            diff_id: spec.diff_id.to_string(),
            erofs_size_bytes: size,
        });
        files.push((file, size));
    }
    let disk_layers: Vec<DiskLayer<'_>> = plan
        .layers
        .iter()
        .zip(&files)
        .map(|(spec, (file, size))| DiskLayer {
            diff_id: &spec.diff_id,
            file,
            size: *size,
        })
        .collect();
    let what = format!("the disk of {}", plan.reference);
    let fsmeta = obtain(
        layout,
        ArtifactKind::Fsmeta,
        &plan.manifest,
        &mut pin,
        &mut remade,
        |f| {
            stitch::fsmeta_matches(f, &disk_layers)
                .then_some(())
                .ok_or_else(|| "its device table does not name this image's layer images".into())
        },
        |w| {
            report(PullProgress::StitchMergingTrees {
                layer_count: disk_layers.len(),
            });
            report(PullProgress::StitchWritingFsmeta);
            stitch::write_fsmeta(&disk_layers, w, &what).map(drop)
        },
    )?;
    let fsmeta_path = artifact::path(layout, ArtifactKind::Fsmeta, &plan.manifest);
    let fsmeta_size = fsmeta.metadata().at("stat", &fsmeta_path)?.len();
    let text = stitch::vmdk_text(&plan.manifest, fsmeta_size, &disk_layers)?;
    obtain(
        layout,
        ArtifactKind::Vmdk,
        &plan.manifest,
        &mut pin,
        &mut remade,
        |f| {
            let text = crate::store::fs::read_file_bounded(
                f.try_clone().expect("a descriptor reopens"),
                stitch::VMDK_LIMIT,
                &fsmeta_path,
            )
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
            text.is_some_and(|t| {
                stitch::vmdk_matches(&t, &plan.manifest, fsmeta_size, &disk_layers)
            })
            .then_some(())
            .ok_or_else(|| "its extents are not this image's fsmeta and layer images".into())
        },
        |w| {
            report(PullProgress::StitchWritingVmdk);
            std::io::Write::write_all(&mut w.out()?, text.as_bytes()).at("write", &w.path())
        },
    )?;
    let vmdk_path = artifact::path(layout, ArtifactKind::Vmdk, &plan.manifest);
    report(PullProgress::StitchComplete {
        vmdk_path: vmdk_path.display().to_string(),
    });
    let layers = plan
        .layers
        .iter()
        .zip(&files)
        .enumerate()
        .map(|(i, (spec, (_, size)))| ImageDiskLayer {
            position: u32::try_from(i).unwrap_or(u32::MAX),
            diff_id: spec.diff_id.to_string(),
            path: artifact::path(layout, ArtifactKind::Layer, &spec.diff_id),
            size_bytes: *size,
        })
        .collect::<Vec<_>>();
    let total_bytes = layers.iter().map(|l| l.size_bytes).sum::<u64>() + fsmeta_size;
    Ok(ImageDisk {
        reference: plan.reference.clone(),
        manifest_digest: plan.manifest.to_string(),
        vmdk_path,
        fsmeta_path,
        layers,
        total_bytes,
        remade,
    })
}

/// The artifact of `key`: the one in the cache if its seal and `whole`
/// say it is sound, else made by `make` into a claimed file, sealed and
/// committed. One that fails is deleted (under the exclusive lock, if it
/// is still the file looked at), as is anything but a regular file under
/// its name, each noted in `remade` with why, and made again.
#[allow(clippy::too_many_arguments)]
fn obtain(
    layout: &Layout,
    kind: ArtifactKind,
    key: &Digest,
    pin: &mut TransferPin<'_>,
    remade: &mut Vec<String>,
    whole: impl Fn(&File) -> Result<(), String>,
    mut make: impl FnMut(&crate::store::artifact::ArtifactWriter) -> MicrosandboxResult<()>,
) -> MicrosandboxResult<File> {
    let sound = |f: &File| artifact::seal::check_quick(f).and_then(|()| whole(f));
    let note = |why: &str| format!("vm/{}/{}: {why}", kind.dir_name(), kind.name(key));
    for _ in 0..3 {
        match artifact::claim(layout, kind, key, || pin.renew_if_due())? {
            Claim::Present(file) => {
                let Err(why) = sound(&file) else {
                    return Ok(file);
                };
                let exclusive = layout.lock::<Exclusive>()?;
                if artifact::remove_if_same(layout, kind, key, &file, &exclusive)? {
                    remade.push(note(&why));
                }
            }
            Claim::Damaged(why) => {
                let exclusive = layout.lock::<Exclusive>()?;
                if artifact::discard_if_bad(layout, kind, key, &exclusive)? {
                    remade.push(note(&why));
                }
            }
            Claim::Mine(writer) => {
                make(&writer)?;
                let sealed = writer.seal()?;
                pin.renew_if_due()?;
                let shared = layout.lock::<Shared>()?;
                let file = sealed.commit(layout, &shared)?;
                drop(shared);
                return match sound(&file) {
                    Ok(()) => Ok(file),
                    Err(why) => Err(MicrosandboxError::corrupt(format!(
                        "{} does not check after it was made: {why}",
                        artifact::path(layout, kind, key).display()
                    ))),
                };
            }
        }
    }
    Err(MicrosandboxError::corrupt(format!(
        "{} keeps being replaced by a file that does not check",
        artifact::path(layout, kind, key).display()
    )))
}
