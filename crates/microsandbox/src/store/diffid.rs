//! What each layer blob decompresses to, once verified: its diff_id, kept
//! on the blob file itself as the extended attribute
//! `user.microsandbox.diff_id`, set by the commit that checked it.
//!
//! A reload of an archive the cache holds, or a pull whose layers are all
//! cached, then checks each layer's diff_id against the record instead of
//! decompressing the blob again (containerd keeps the same pairing in its
//! content labels). The record lives and dies with its blob: it needs no
//! file of its own, no sweep, and cannot outlive what it describes. Where
//! the file system keeps no user attributes (or the blob belongs to another
//! user of a shared cache), nothing is recorded and layers are decompressed
//! as before: a record saves work, its absence costs only time.

use rustix::fs::{fgetxattr, fsetxattr, XattrFlags};

use crate::oci::digest::Digest;
use crate::store::layout::Layout;
use crate::store::lock::ExclusiveGuard;

/// The attribute's name.
pub const XATTR: &str = "user.microsandbox.diff_id";

/// The diff_id recorded for a layer blob, if one is (a record that does
/// not read as a digest counts as none: the layer is decompressed again).
pub fn get(layout: &Layout, blob: &Digest) -> Option<Digest> {
    let file = layout.open_blob(blob).ok()??;
    let mut buf = [0u8; 80];
    let n = fgetxattr(&file, XATTR, &mut buf[..]).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.parse().ok()
}

/// Records verified pairs (layer blob, diff_id), best effort: a blob whose
/// attribute cannot be set keeps no record.
pub fn put_all(layout: &Layout, _exclusive: &ExclusiveGuard, pairs: &[(Digest, Digest)]) {
    for (blob, diff_id) in pairs {
        if get(layout, blob).as_ref() == Some(diff_id) {
            continue;
        }
        if let Ok(Some(file)) = layout.open_blob(blob) {
            let _ = fsetxattr(
                &file,
                XATTR,
                diff_id.as_str().as_bytes(),
                XattrFlags::empty(),
            );
        }
    }
}
