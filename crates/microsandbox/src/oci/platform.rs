//! Platforms: the host's, parsing `os/arch[/variant]`, and choosing a
//! manifest from an index.
//!
//! Attestation manifests (BuildKit's `vnd.docker.reference.type:
//! attestation-manifest`, platform `unknown/unknown`) are never chosen.

use std::fmt;

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::model::{Descriptor, Platform};

const ATTESTATION_KEY: &str = "vnd.docker.reference.type";

/// The platform images resolve to by default: this host's.
pub fn host() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: std::env::consts::OS.into(),
        variant: variant.map(Into::into),
        ..Platform::default()
    }
}

impl Platform {
    /// Parses `linux/arm64`, `linux/arm/v7`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for any other shape.
    pub fn parse(text: &str) -> MicrosandboxResult<Platform> {
        parse(text)
    }
}

/// [`Platform::parse`].
pub(crate) fn parse(text: &str) -> MicrosandboxResult<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if !ok {
        return Err(MicrosandboxError::invalid_argument(format!(
            "invalid platform {text:?}: expected os/arch or os/arch/variant"
        )));
    }
    Ok(Platform {
        os: parts[0].into(),
        architecture: parts[1].into(),
        variant: parts.get(2).map(|v| (*v).into()),
        ..Platform::default()
    })
}

/// `linux/arm/v7`.
pub struct Display<'a>(pub &'a Platform);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.os, self.0.architecture)?;
        if let Some(v) = &self.0.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Whether a manifest of platform `have` serves a request for `want`.
/// An unset variant on either side matches, and arm64's `v8` is its default.
pub fn matches(want: &Platform, have: &Platform) -> bool {
    let norm = |p: &Platform| -> Option<String> {
        match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_owned),
        }
    };
    want.os == have.os
        && want.architecture == have.architecture
        && match (norm(want), norm(have)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// Whether a descriptor of an index is an attestation, not an image.
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get(ATTESTATION_KEY) == Some("attestation-manifest")
        || d.platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// Picks the manifest of `want` among an index's descriptors. An exact
/// variant match beats a descriptor without a variant.
///
/// # Errors
///
/// [`ErrorKind::PlatformNotFound`] listing what the index offers.
pub fn choose<'a>(
    manifests: &'a [Descriptor],
    want: &Platform,
    subject: &str,
) -> MicrosandboxResult<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .filter(|d| d.platform.as_ref().is_some_and(|p| matches(want, p)))
        .collect();
    let exact = candidates
        .iter()
        .find(|d| d.platform.as_ref().map(|p| &p.variant) == Some(&want.variant));
    if let Some(d) = exact.or(candidates.first()) {
        return Ok(d);
    }
    let offered: Vec<String> = manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .filter_map(|d| d.platform.as_ref())
        .map(|p| Display(p).to_string())
        .collect();
    Err(MicrosandboxError::new(
        ErrorKind::PlatformNotFound,
        format!(
            "no manifest for platform {} in {subject}; it offers: {}",
            Display(want),
            if offered.is_empty() {
                "nothing".to_owned()
            } else {
                offered.join(", ")
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Digest;

    fn desc(os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: crate::oci::model::MEDIA_OCI_MANIFEST.into(),
            digest: Digest::of(format!("{os}{arch}{variant:?}").as_bytes()),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
                ..Platform::default()
            }),
            annotations: Default::default(),
            artifact_type: None,
            urls: None,
        }
    }

    #[test]
    fn parses_platform_strings() {
        let p = parse("linux/arm/v7").unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm"));
        assert_eq!(p.variant.as_deref(), Some("v7"));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/../x"] {
            assert_eq!(parse(bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn chooses_the_requested_platform_and_skips_attestations() {
        let mut att = desc("unknown", "unknown", None);
        att.annotations
            .insert(ATTESTATION_KEY, "attestation-manifest");
        let list = vec![
            att,
            desc("linux", "amd64", None),
            desc("linux", "arm", Some("v6")),
            desc("linux", "arm", Some("v7")),
            desc("linux", "arm64", Some("v8")),
        ];
        let pick = |s: &str| {
            choose(&list, &parse(s).unwrap(), "x")
                .unwrap()
                .digest
                .clone()
        };
        assert_eq!(pick("linux/amd64"), list[1].digest);
        assert_eq!(pick("linux/arm/v7"), list[3].digest);
        assert_eq!(pick("linux/arm64"), list[4].digest);
        let err = choose(&list, &parse("linux/s390x").unwrap(), "idx").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PlatformNotFound);
        let msg = err.to_string();
        assert!(
            msg.contains("linux/arm/v7") && !msg.contains("unknown"),
            "{msg}"
        );
    }

    #[test]
    fn host_is_linux_amd64_here() {
        let h = host();
        assert_eq!(h.os, std::env::consts::OS);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.architecture, "amd64");
        }
    }
}
