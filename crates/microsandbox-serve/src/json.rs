//! The cache's values as JSON, with the field names of the Node API
//! (`JSON.stringify` of what `Image.*` resolves with): camelCase, absent
//! values `null`, times as ISO 8601 strings with milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use microsandbox as core;
use serde_json::{json, Value};

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

/// An `ImageHandle`.
pub fn handle(h: &core::ImageHandle) -> Value {
    json!({
        "reference": h.reference(),
        "sizeBytes": h.size_bytes(),
        "manifestDigest": h.manifest_digest(),
        "architecture": h.architecture(),
        "os": h.os(),
        "layerCount": h.layer_count(),
        "lastUsedAt": time(h.last_used_at()),
        "createdAt": time(h.created_at()),
        "imageCreatedAt": time(h.image_created_at()),
        "diskReady": h.disk_ready(),
    })
}

/// A list of handles.
pub fn handles(v: &[core::ImageHandle]) -> Value {
    Value::Array(v.iter().map(handle).collect())
}

/// An `ImageDetail`.
pub fn detail(d: &core::ImageDetail) -> Value {
    json!({
        "handle": handle(&d.handle),
        "config": d.config.as_ref().map(|c| json!({
            "digest": c.digest,
            "env": c.env,
            "cmd": c.cmd,
            "entrypoint": c.entrypoint,
            "workingDir": c.working_dir,
            "user": c.user,
            "labels": c.labels,
            "stopSignal": c.stop_signal,
            "exposedPorts": c.exposed_ports,
            "volumes": c.volumes,
        })),
        "layers": d.layers.iter().map(|l| json!({
            "diffId": l.diff_id,
            "blobDigest": l.blob_digest,
            "mediaType": l.media_type,
            "compressedSizeBytes": l.compressed_size_bytes,
            "erofsSizeBytes": l.erofs_size_bytes,
            "position": l.position,
        })).collect::<Vec<_>>(),
        "created": time(d.created),
        "author": d.author,
        "history": d.history.iter().map(|h| json!({
            "created": time(h.created),
            "createdBy": h.created_by,
            "author": h.author,
            "comment": h.comment,
            "emptyLayer": h.empty_layer,
        })).collect::<Vec<_>>(),
    })
}

/// An `ImagePruneReport`.
pub fn prune_report(r: &core::ImagePruneReport) -> Value {
    json!({
        "imageRefsRemoved": r.image_refs_removed,
        "manifestsRemoved": r.manifests_removed,
        "layersRemoved": r.layers_removed,
        "fsmetaRemoved": r.fsmeta_removed,
        "vmdkRemoved": r.vmdk_removed,
        "bytesReclaimed": r.bytes_reclaimed,
        "configsRemoved": r.configs_removed,
        "tmpFilesRemoved": r.tmp_files_removed,
        "expiredLeasesRemoved": r.expired_leases_removed,
        "removed": r.removed.iter().map(|i| json!({
            "reference": i.reference,
            "manifestDigest": i.manifest_digest,
            "bytes": i.bytes,
            "uniqueBytes": i.unique_bytes,
        })).collect::<Vec<_>>(),
        "overBudgetBytes": r.over_budget_bytes,
        "dryRun": r.dry_run,
    })
}

/// A `DiskUsage`.
pub fn disk_usage(u: &core::DiskUsage) -> Value {
    json!({
        "totalBytes": u.total_bytes,
        "blobsBytes": u.blobs_bytes,
        "vmBytes": u.vm_bytes,
        "tmpBytes": u.tmp_bytes,
        "reclaimableBytes": u.reclaimable_bytes,
        "images": u.images.iter().map(|i| json!({
            "reference": i.reference,
            "manifestDigest": i.manifest_digest,
            "sizeBytes": i.size_bytes,
            "sharedBytes": i.shared_bytes,
            "uniqueBytes": i.unique_bytes,
            "inUse": i.in_use,
            "lastUsedAt": time(i.last_used_at),
        })).collect::<Vec<_>>(),
    })
}

/// An `ImageLease`.
pub fn lease(l: &core::ImageLease) -> Value {
    json!({
        "id": l.id,
        "kind": l.kind.as_str(),
        "reference": l.reference,
        "manifestDigest": l.manifest_digest,
        "createdAt": time(Some(l.created_at)),
        "expiresAt": time(l.expires_at),
        "disk": l.disk.as_ref().map(disk),
    })
}

/// An `ImageDisk`.
pub fn disk(d: &core::ImageDisk) -> Value {
    json!({
        "reference": d.reference,
        "manifestDigest": d.manifest_digest,
        "vmdkPath": d.vmdk_path.display().to_string(),
        "fsmetaPath": d.fsmeta_path.display().to_string(),
        "layers": d.layers.iter().map(|l| json!({
            "position": l.position,
            "diffId": l.diff_id,
            "path": l.path.display().to_string(),
            "sizeBytes": l.size_bytes,
        })).collect::<Vec<_>>(),
        "totalBytes": d.total_bytes,
        "remade": d.remade,
    })
}

/// A `VerifyReport`.
pub fn verify_report(r: &core::VerifyReport) -> Value {
    json!({
        "clean": r.is_clean(),
        "blobsChecked": r.blobs_checked,
        "bytesChecked": r.bytes_checked,
        "corruptBlobs": r.corrupt_blobs,
        "missingBlobs": r.missing_blobs,
        "danglingReferences": r.dangling_references,
        "strayTmpFiles": r.stray_tmp_files,
        "badLeases": r.bad_leases,
        "badIndexEntries": r.bad_index_entries,
        "quarantined": r.quarantined,
        "removedReferences": r.removed_references,
        "artifactsChecked": r.artifacts_checked,
        "corruptArtifacts": r.corrupt_artifacts,
    })
}

/// An `OrphanBlob`.
pub fn orphan(o: &core::OrphanBlob) -> Value {
    json!({
        "digest": o.digest,
        "kind": o.kind,
        "sizeBytes": o.size_bytes,
        "modifiedAt": time(o.modified_at),
    })
}
