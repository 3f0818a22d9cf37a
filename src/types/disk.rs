//! An image's VM disk.

use super::*;

/// An image's VM disk: the VMDK a microVM attaches (or the fsmeta with
/// the layer images as its devices). Paths are absolute.
#[napi(object)]
pub struct ImageDisk {
    /// The familiar reference.
    pub reference: String,
    /// The image manifest the disk is made of.
    pub manifest_digest: String,
    /// The VMDK descriptor: fsmeta, then the layer images, as one disk that
    /// mounts with no options on guest kernels 6.4 and later (booted on
    /// 6.12 by the tests). Linux 6.1 does not mount it: give such a guest
    /// `fsmetaPath` and each of `layers` as separate disks instead.
    pub vmdk_path: String,
    /// The merged metadata-only EROFS image: the first disk of the form
    /// Linux 6.1 mounts too (booted on 6.1 by the tests), with
    /// each of `layers` as its own disk and one `device=` option per layer,
    /// bottom first: `mount -t erofs -o ro,device=/dev/vdb,device=/dev/vdc /dev/vda`.
    pub fsmeta_path: String,
    /// The layer images, bottom first.
    pub layers: Vec<ImageDiskLayer>,
    /// The fsmeta and every layer image, in bytes.
    pub total_bytes: f64,
    /// What this call found damaged in the cache's `vm/` and made again
    /// (or took away first), each as `vm/layers/<name>: why`: an artifact
    /// whose seal or structure did not check, a link or a directory under
    /// an artifact's name, a link or a file where one of its directories
    /// belongs. Empty when the disk was sound.
    pub remade: Vec<String>,
}

/// One layer image of an `ImageDisk`.
#[napi(object)]
pub struct ImageDiskLayer {
    /// 0 for the bottom layer.
    pub position: u32,
    /// The layer's diff_id.
    pub diff_id: String,
    /// The EROFS image.
    pub path: String,
    /// Its size in bytes.
    pub size_bytes: f64,
}

impl From<core::ImageDisk> for ImageDisk {
    fn from(d: core::ImageDisk) -> Self {
        ImageDisk {
            reference: d.reference,
            manifest_digest: d.manifest_digest,
            vmdk_path: d.vmdk_path.display().to_string(),
            fsmeta_path: d.fsmeta_path.display().to_string(),
            layers: d
                .layers
                .into_iter()
                .map(|l| ImageDiskLayer {
                    position: l.position,
                    diff_id: l.diff_id,
                    path: l.path.display().to_string(),
                    size_bytes: num(l.size_bytes),
                })
                .collect(),
            total_bytes: num(d.total_bytes),
            remade: d.remade,
        }
    }
}
