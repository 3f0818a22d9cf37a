//! VM disks: each image as the disk a microVM boots, made from the
//! cache's verified blobs (see [`crate::store::artifact`] for the files).
//!
//! A layer becomes an EROFS image in one pass over its blob (decompress,
//! check the diff_id, write the image: [`layer`]); an image's layer images
//! are merged into a metadata-only fsmeta and described as one disk by a
//! VMDK ([`stitch`]); [`materialize`] makes whatever an image's disk lacks,
//! each artifact once for every image and process that needs it.

pub mod check;
pub mod layer;
pub mod materialize;
pub mod stitch;
