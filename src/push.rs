//! `Image.push` and `Image.pushLocal`: argument and result conversion
//! for the core's push; no logic of its own.

use microsandbox as core;
use microsandbox::MicrosandboxError;
use napi::bindgen_prelude::{AsyncTask, Function, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;

use crate::args;
use crate::image::Image;
use crate::ops::{ambient, local, spawn, Backend};
use crate::task::CoreTask;

/// What a push did.
#[napi(object)]
pub struct PushReport {
    /// The reference pushed to, familiar form.
    pub reference: String,
    /// The digest the reference names in the registry now.
    pub manifest_digest: String,
    /// Blobs uploaded.
    pub blobs_uploaded: u32,
    /// Blobs mounted from another repository of the registry.
    pub blobs_mounted: u32,
    /// Blobs the registry had already.
    pub blobs_skipped: u32,
    /// Bytes sent in blob uploads (a resent chunk counts again).
    pub bytes_uploaded: f64,
}

impl From<core::PushReport> for PushReport {
    fn from(r: core::PushReport) -> Self {
        PushReport {
            reference: r.reference,
            manifest_digest: r.manifest_digest,
            blobs_uploaded: r.blobs_uploaded,
            blobs_mounted: r.blobs_mounted,
            blobs_skipped: r.blobs_skipped,
            bytes_uploaded: r.bytes_uploaded as f64,
        }
    }
}

/// A push's progress (`onProgress`): `resolved`, then per blob
/// `blobProgress` and `blobComplete` (`how`: `uploaded`, `mounted` or
/// `exists`), `manifestPushed` for each manifest, `complete` last.
#[napi(
    discriminant = "kind",
    discriminant_case = "camelCase",
    use_nullable = true
)]
pub enum PushProgress {
    Resolved {
        reference: String,
        manifest_digest: String,
        layer_count: u32,
        total_bytes: f64,
    },
    BlobProgress {
        layer_index: Option<u32>,
        digest: String,
        uploaded_bytes: f64,
        total_bytes: f64,
    },
    BlobComplete {
        layer_index: Option<u32>,
        digest: String,
        how: String,
        total_bytes: f64,
    },
    ManifestPushed {
        digest: String,
    },
    Complete {
        reference: String,
        manifest_digest: String,
    },
}

fn index(i: Option<usize>) -> Option<u32> {
    i.map(|i| u32::try_from(i).unwrap_or(u32::MAX))
}

impl From<&core::PushProgress> for PushProgress {
    fn from(p: &core::PushProgress) -> Self {
        use core::PushProgress as P;
        match p.clone() {
            P::Resolved {
                reference,
                manifest_digest,
                layer_count,
                total_bytes,
            } => PushProgress::Resolved {
                reference,
                manifest_digest,
                layer_count: u32::try_from(layer_count).unwrap_or(u32::MAX),
                total_bytes: total_bytes as f64,
            },
            P::BlobProgress {
                layer_index,
                digest,
                uploaded_bytes,
                total_bytes,
            } => PushProgress::BlobProgress {
                layer_index: index(layer_index),
                digest,
                uploaded_bytes: uploaded_bytes as f64,
                total_bytes: total_bytes as f64,
            },
            P::BlobComplete {
                layer_index,
                digest,
                how,
                total_bytes,
            } => PushProgress::BlobComplete {
                layer_index: index(layer_index),
                digest,
                how: how.to_owned(),
                total_bytes: total_bytes as f64,
            },
            P::ManifestPushed { digest } => PushProgress::ManifestPushed { digest },
            P::Complete {
                reference,
                manifest_digest,
            } => PushProgress::Complete {
                reference,
                manifest_digest,
            },
        }
    }
}

fn progress_fn(f: Function<PushProgress, ()>) -> core::MicrosandboxResult<core::PushProgressFn> {
    let tsfn = f
        .build_threadsafe_function::<PushProgress>()
        .callee_handled::<false>()
        .build()
        .map_err(|e| {
            MicrosandboxError::new(core::ErrorKind::InvalidArgument, format!("onProgress: {e}"))
        })?;
    Ok(core::PushProgressFn::new(move |event| {
        tsfn.call(
            PushProgress::from(event),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }))
}

fn push_with(b: Backend, reference: Unknown, options: Unknown) -> AsyncTask<CoreTask<PushReport>> {
    spawn(b, |b| {
        let reference = args::string(Some(reference), "reference")?;
        let opts = args::options(Some(options), "options")?;
        let chunk_bytes = args::opt_number(&opts, "chunkBytes")?
            .map(|n| {
                if n.is_finite() && n >= 0.0 && n.fract() == 0.0 {
                    Ok(n as u64)
                } else {
                    Err(MicrosandboxError::new(
                        core::ErrorKind::InvalidArgument,
                        format!("chunkBytes must be a whole number of bytes, got {n}"),
                    ))
                }
            })
            .transpose()?;
        let options = core::PushOptions {
            to: args::opt_string(&opts, "to")?,
            insecure: args::opt_bool(&opts, "insecure")?.unwrap_or(false),
            progress: args::opt_function::<PushProgress, ()>(&opts, "onProgress")?
                .map(progress_fn)
                .transpose()?,
            docker_config: args::opt_string(&opts, "dockerConfig")?.map(Into::into),
            mirrors: args::opt_string_lists(&opts, "mirrors")?,
            chunk_bytes,
        };
        Ok(move || b.push_image(&reference, &options).map(PushReport::from))
    })
}

#[napi]
impl Image {
    /// Pushes a cached image to a registry: to `to` (a reference), else
    /// to its own reference. Blobs the registry has are skipped, blobs of
    /// another repository of the same registry mounted, the rest uploaded
    /// six at a time, in resumable chunks of `chunkBytes` (64 MiB; 0 sends
    /// each blob in one request); then the manifest (for an index, its
    /// manifests, then the index). Credentials as pull takes them
    /// (`dockerConfig`); `mirrors` is checked as pull checks it, and never
    /// pushed to (pull-through caches are read-only). Nothing is recorded
    /// in the cache. Rejects `ImageNotFound`, `InvalidReference`,
    /// `InvalidArgument`, `Unauthorized`, `Unsupported` (a registry that
    /// takes no pushes), `DigestMismatch`, `RegistryError`, `CorruptCache`.
    #[napi(
        ts_args_type = "reference: string, options?: { to?: string; insecure?: boolean; dockerConfig?: string; mirrors?: Record<string, string[]>; chunkBytes?: number; onProgress?: (event: PushProgress) => void }",
        ts_return_type = "Promise<PushReport>"
    )]
    pub fn push(reference: Unknown, options: Unknown) -> AsyncTask<CoreTask<PushReport>> {
        push_with(ambient(), reference, options)
    }

    /// `Image.push` on a given backend.
    #[napi(
        ts_args_type = "backend: LocalBackend, reference: string, options?: { to?: string; insecure?: boolean; dockerConfig?: string; mirrors?: Record<string, string[]>; chunkBytes?: number; onProgress?: (event: PushProgress) => void }",
        ts_return_type = "Promise<PushReport>"
    )]
    pub fn push_local(
        backend: Unknown,
        reference: Unknown,
        options: Unknown,
    ) -> AsyncTask<CoreTask<PushReport>> {
        push_with(local(backend), reference, options)
    }
}
