//! Progress events: a long operation's (`onProgress`) and a pull's.

use super::*;

/// A progress event of a long operation (`onProgress`).
#[napi(object, use_nullable = true)]
pub struct ProgressEvent {
    /// `read` (an archive), `write` (a blob into the cache's tmp/), `verify`
    /// (decompressing a gzip layer to check its diff_id), `commit`, `erofs`
    /// (a layer's blob read into its VM image).
    pub phase: String,
    /// The blob concerned, for `write`.
    pub digest: Option<String>,
    /// Bytes done so far in this phase (of this blob, for `write`).
    pub bytes: f64,
    /// Bytes in all, when known.
    pub total_bytes: Option<f64>,
}

impl From<&core::Progress> for ProgressEvent {
    fn from(p: &core::Progress) -> Self {
        ProgressEvent {
            phase: p.phase.as_str().to_owned(),
            digest: p.digest.clone(),
            bytes: num(p.bytes),
            total_bytes: p.total_bytes.map(num),
        }
    }
}

/// A pull's progress in microsandbox's own kinds (`onPullProgress`).
#[napi(
    discriminant = "kind",
    discriminant_case = "camelCase",
    use_nullable = true
)]
pub enum PullProgress {
    Resolving {
        reference: String,
    },
    Resolved {
        reference: String,
        manifest_digest: String,
        layer_count: u32,
        total_download_bytes: Option<f64>,
    },
    LayerDownloadProgress {
        layer_index: u32,
        digest: String,
        downloaded_bytes: f64,
        total_bytes: Option<f64>,
    },
    LayerDownloadComplete {
        layer_index: u32,
        digest: String,
        downloaded_bytes: f64,
    },
    LayerDownloadVerifying {
        layer_index: u32,
        digest: String,
    },
    LayerMaterializeStarted {
        layer_index: u32,
        diff_id: String,
    },
    LayerMaterializeProgress {
        layer_index: u32,
        bytes_read: f64,
        total_bytes: Option<f64>,
    },
    LayerMaterializeWriting {
        layer_index: u32,
    },
    LayerMaterializeComplete {
        layer_index: u32,
        diff_id: String,
        erofs_size_bytes: f64,
    },
    StitchMergingTrees {
        layer_count: u32,
    },
    StitchWritingFsmeta {},
    StitchWritingVmdk {},
    StitchComplete {
        vmdk_path: String,
    },
    Complete {
        reference: String,
        layer_count: u32,
    },
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<&core::PullProgress> for PullProgress {
    fn from(p: &core::PullProgress) -> Self {
        use microsandbox::PullProgress as P;
        match p.clone() {
            P::Resolving { reference } => PullProgress::Resolving { reference },
            P::Resolved {
                reference,
                manifest_digest,
                layer_count,
                total_download_bytes,
            } => PullProgress::Resolved {
                reference,
                manifest_digest,
                layer_count: count(layer_count),
                total_download_bytes: total_download_bytes.map(num),
            },
            P::LayerDownloadProgress {
                layer_index,
                digest,
                downloaded_bytes,
                total_bytes,
            } => PullProgress::LayerDownloadProgress {
                layer_index: count(layer_index),
                digest,
                downloaded_bytes: num(downloaded_bytes),
                total_bytes: total_bytes.map(num),
            },
            P::LayerDownloadComplete {
                layer_index,
                digest,
                downloaded_bytes,
            } => PullProgress::LayerDownloadComplete {
                layer_index: count(layer_index),
                digest,
                downloaded_bytes: num(downloaded_bytes),
            },
            P::LayerDownloadVerifying {
                layer_index,
                digest,
            } => PullProgress::LayerDownloadVerifying {
                layer_index: count(layer_index),
                digest,
            },
            P::LayerMaterializeStarted {
                layer_index,
                diff_id,
            } => PullProgress::LayerMaterializeStarted {
                layer_index: count(layer_index),
                diff_id,
            },
            P::LayerMaterializeProgress {
                layer_index,
                bytes_read,
                total_bytes,
            } => PullProgress::LayerMaterializeProgress {
                layer_index: count(layer_index),
                bytes_read: num(bytes_read),
                total_bytes: total_bytes.map(num),
            },
            P::LayerMaterializeWriting { layer_index } => PullProgress::LayerMaterializeWriting {
                layer_index: count(layer_index),
            },
            P::LayerMaterializeComplete {
                layer_index,
                diff_id,
                erofs_size_bytes,
            } => PullProgress::LayerMaterializeComplete {
                layer_index: count(layer_index),
                diff_id,
                erofs_size_bytes: num(erofs_size_bytes),
            },
            P::StitchMergingTrees { layer_count } => PullProgress::StitchMergingTrees {
                layer_count: count(layer_count),
            },
            P::StitchWritingFsmeta => PullProgress::StitchWritingFsmeta {},
            P::StitchWritingVmdk => PullProgress::StitchWritingVmdk {},
            P::StitchComplete { vmdk_path } => PullProgress::StitchComplete { vmdk_path },
            P::Complete {
                reference,
                layer_count,
            } => PullProgress::Complete {
                reference,
                layer_count: count(layer_count),
            },
        }
    }
}
