//! Reading the catalog: list, get, inspect.

use super::LocalBackend;
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::store::artifact::{self, ArtifactKind};
use crate::store::catalog::Entry;
use crate::store::content;
use crate::store::layout::Layout;
use crate::store::lock::Shared;
use crate::util::time;
use crate::values::{ImageConfigDetail, ImageDetail, ImageHandle, ImageHistory, ImageLayerDetail};

impl LocalBackend {
    /// Every reference, newest first. Blocking.
    pub fn list_images(&self) -> MicrosandboxResult<Vec<ImageHandle>> {
        let Some(layout) = self.existing()? else {
            return Ok(Vec::new());
        };
        let _guard = layout.lock::<Shared>()?;
        let catalog = self.inner.views.catalog.current(&layout)?;
        let mut handles: Vec<ImageHandle> = catalog.entries().map(|e| e.handle.clone()).collect();
        mark_disks(&layout, &mut handles)?;
        Ok(handles)
    }

    /// The handle of one reference. Blocking.
    pub fn get_image(&self, reference: &str) -> MicrosandboxResult<ImageHandle> {
        self.with_entry(reference, |layout, e| {
            let mut handle = [e.handle.clone()];
            mark_disks(layout, &mut handle)?;
            let [handle] = handle;
            Ok(handle)
        })
    }

    /// The handle, config and layers of one reference. Blocking.
    pub fn inspect_image(&self, reference: &str) -> MicrosandboxResult<ImageDetail> {
        self.with_entry(reference, |layout, e| {
            let mut detail = inspect_entry(layout, e)?;
            mark_disks(layout, std::slice::from_mut(&mut detail.handle))?;
            Ok(detail)
        })
    }
}

/// Sets `disk_ready` on each handle whose manifest has a VMDK (one
/// listing of `cache/vm/vmdk/`, however many handles).
fn mark_disks(layout: &Layout, handles: &mut [ImageHandle]) -> MicrosandboxResult<()> {
    let dir = ArtifactKind::Vmdk.dir(layout);
    if handles.is_empty() || !dir.exists() {
        return Ok(());
    }
    let digest = |h: &ImageHandle| h.manifest_digest.parse::<crate::oci::digest::Digest>().ok();
    // One handle (get, inspect) asks for its own file; a list reads the
    // directory once.
    if let [h] = handles {
        h.disk_ready = match digest(h) {
            Some(d) => artifact::stat(layout, ArtifactKind::Vmdk, &d)?
                .is_some_and(|s| crate::store::fs::kind(&s) == rustix::fs::FileType::RegularFile),
            None => false,
        };
        return Ok(());
    }
    let made: std::collections::HashSet<crate::oci::digest::Digest> = dir
        .entries()?
        .into_iter()
        .filter_map(|e| ArtifactKind::Vmdk.key_of(&e.name))
        .collect();
    for h in handles {
        h.disk_ready = digest(h).is_some_and(|d| made.contains(&d));
    }
    Ok(())
}

/// The size of a layer's VM image, if it has one.
fn erofs_size(layout: &Layout, diff_id: &str) -> Option<i64> {
    let key = diff_id.parse::<crate::oci::digest::Digest>().ok()?;
    let stat = artifact::stat(layout, ArtifactKind::Layer, &key).ok()??;
    (crate::store::fs::kind(&stat) == rustix::fs::FileType::RegularFile).then_some(stat.st_size)
}

/// A declared size as the API gives sizes; past `i64` it is an error.
fn size_i64(size: u64, digest: &crate::oci::digest::Digest) -> MicrosandboxResult<i64> {
    i64::try_from(size).map_err(|_| {
        MicrosandboxError::corrupt(format!("blob {digest} declares {size} bytes, past 2^63"))
    })
}

/// The config and layers of an entry, read from its blobs.
fn inspect_entry(layout: &Layout, entry: &Entry) -> MicrosandboxResult<ImageDetail> {
    let content::ImageParts {
        config,
        cfg,
        layers,
        ..
    } = content::image_parts(layout, &entry.descriptor)?;
    let diff_ids = cfg.rootfs().diff_ids();
    let layers = layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(i, (l, diff_id))| {
            Ok(ImageLayerDetail {
                diff_id: diff_id.clone(),
                blob_digest: l.digest.to_string(),
                media_type: Some(l.media_type.clone()),
                compressed_size_bytes: Some(size_i64(l.size, &l.digest)?),
                erofs_size_bytes: erofs_size(layout, diff_id),
                position: i32::try_from(i).unwrap_or(i32::MAX),
            })
        })
        .collect::<MicrosandboxResult<Vec<_>>>()?;
    let config = cfg.config().as_ref().map(|c| ImageConfigDetail {
        digest: config.digest.to_string(),
        env: c.env().clone().unwrap_or_default(),
        cmd: c.cmd().clone(),
        entrypoint: c.entrypoint().clone(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        labels: c
            .labels()
            .as_ref()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::json!(l)),
        stop_signal: c.stop_signal().clone().filter(|s| !s.is_empty()),
        exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
        volumes: c.volumes().clone().unwrap_or_default(),
    });
    let history = cfg
        .history()
        .iter()
        .flatten()
        .map(|h| ImageHistory {
            created: h.created().as_deref().and_then(time::parse_utc),
            created_by: h.created_by().clone(),
            author: h.author().clone(),
            comment: h.comment().clone(),
            empty_layer: h.empty_layer().unwrap_or(false),
        })
        .collect();
    Ok(ImageDetail {
        handle: entry.handle.clone(),
        config,
        layers,
        created: cfg.created().as_deref().and_then(time::parse_utc),
        author: cfg.author().clone(),
        history,
    })
}
