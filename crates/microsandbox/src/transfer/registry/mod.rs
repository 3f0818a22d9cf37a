//! Pulling images from a registry (OCI Distribution API v2).
//!
//! A pull is a load whose origin is a registry: the manifest (or index) is
//! fetched by tag or digest, resolved to the platform, and every blob is
//! streamed through SHA-256 into `tmp/`, committed only when its digest
//! matches; the archive machinery's transfer pin, diff_id checks and
//! single commit apply unchanged. Docker Hub (`docker.io`) is served by
//! `registry-1.docker.io`. Anonymous bearer tokens are fetched from the
//! `WWW-Authenticate` challenge, with the docker config's credentials
//! when it has some for the registry (basic auth likewise). Mirrors
//! (pull-through caches) are asked first, the origin last; a mirror hears
//! which registry is meant from the `ns` query parameter, as containerd
//! sends it (`/v2/library/alpine/manifests/3?ns=docker.io`).

pub mod auth;
mod client;
mod hosts;
pub mod mirrors;
pub mod push;

pub use client::{Fetched, RegistryOrigin};
pub use mirrors::MirrorMap;

use crate::oci::model::Platform;
use crate::transfer::progress::{ProgressFn, PullProgressFn};

/// When to ask the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// A cached reference (for the platform asked) is returned without a
    /// request (`"missing"`, or microsandbox's `"if-missing"`).
    #[default]
    Missing,
    /// Ask the registry; download only blobs not yet in the cache.
    Always,
    /// Never ask: `ImageNotFound` unless cached.
    Never,
}

impl PullPolicy {
    /// `"missing"` (or microsandbox's `"if-missing"`), `"always"`, `"never"`.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidArgument`] for anything else.
    pub fn parse(text: &str) -> crate::MicrosandboxResult<PullPolicy> {
        match text {
            "missing" | "if-missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(crate::MicrosandboxError::new(
                crate::ErrorKind::InvalidArgument,
                format!(
                    "policy must be 'missing' ('if-missing'), 'always' or 'never', got {other:?}"
                ),
            )),
        }
    }
}

/// How to pull.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// The platform to take from an index; the host's if unset.
    pub platform: Option<Platform>,
    /// When to ask the registry.
    pub policy: PullPolicy,
    /// Speak plain HTTP (and accept any certificate) to the registry.
    /// Registries on a loopback address (`127.0.0.0/8`, `::1`; a name such
    /// as `localhost` never counts) are spoken to in plain HTTP without it.
    pub insecure: bool,
    /// Where progress events go.
    pub progress: Option<ProgressFn>,
    /// Where events in microsandbox's `PullProgress` kinds go (resolving,
    /// resolved, per layer download progress, complete), beside `progress`.
    pub pull_progress: Option<PullProgressFn>,
    /// The directory of the docker config to take credentials from;
    /// `$DOCKER_CONFIG`, else `~/.docker`, if unset.
    pub docker_config: Option<std::path::PathBuf>,
    /// Pull-through caches per registry host, tried in order before the
    /// origin; an entry replaces the one `$MSB_HOME/registries.json` has
    /// for that registry.
    pub mirrors: Option<MirrorMap>,
    /// The most bytes a gzip layer may decompress to (a bomb otherwise);
    /// [`crate::DEFAULT_MAX_LAYER_BYTES`] if unset.
    pub max_layer_bytes: Option<u64>,
    /// Also make the image's VM disk (see `Image::materialize`).
    pub materialize: bool,
}
