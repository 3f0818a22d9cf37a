//! The JSON of `index.json`: descriptors with the annotations that let
//! `list` answer from this one file.
//!
//! These types are this crate's own rather than oci-spec's so that the
//! annotation maps are ordered (the file is byte-stable for the same
//! content) and 10,000 descriptors parse without per-field enum work.
//! Manifests, indexes and configs inside blobs use oci-spec's types.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::oci::annotations::Annotations;
use crate::oci::digest::Digest;
use crate::oci::word::Word;

/// `org.opencontainers.image.ref.name`: the canonical reference.
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and nerdctl use for a full image name.
pub const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// When the reference entered this cache (RFC 3339).
pub const ANN_CREATED: &str = "dev.microsandbox.created";
/// When a lease last took the image (RFC 3339).
pub const ANN_LAST_USED: &str = "dev.microsandbox.last-used";
/// Marks an unnamed descriptor that keeps a leased manifest in
/// `index.json`, so that another tool's garbage collection (`umoci gc`,
/// which cannot see `leases/`) keeps it too.
pub const ANN_PINNED: &str = "dev.microsandbox.pinned";
/// When the image was built: its config's `created` (RFC 3339).
pub const ANN_IMAGE_CREATED: &str = "dev.microsandbox.image-created";
/// Manifest + config + layer bytes as stored.
pub const ANN_SIZE: &str = "dev.microsandbox.size";
/// How many layers the manifest lists.
pub const ANN_LAYERS: &str = "dev.microsandbox.layers";

/// OCI image manifest media type.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a media type names an index (OCI index or Docker manifest list).
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// Whether a media type names a single-image manifest.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

/// An OCI platform object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: Word,
    /// Operating system (`linux`).
    pub os: Word,
    /// Operating system version.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<Box<str>>,
    /// Operating system features.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Box<[String]>>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Word>,
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes of the referenced content.
    pub size: u64,
    /// The platform of a manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations, ordered.
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
    /// The artifact type, kept when another tool wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<Box<str>>,
    /// Download locations, kept when another tool wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Box<[String]>>,
}

impl Descriptor {
    /// A descriptor with no platform, annotations or URLs.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            platform: None,
            annotations: Annotations::new(),
            artifact_type: None,
            urls: None,
        }
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(ANN_REF_NAME)
    }
}

/// The top of `index.json`.
///
/// Entries are parsed one at a time: an entry this crate cannot read (a
/// `sha512` digest, a size beyond `u64`, a missing field) lands in
/// [`IndexFile::unreadable`] with the reason, the others stay usable, and
/// a rewrite keeps it as it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexFile {
    /// Always 2.
    pub schema_version: u32,
    /// `application/vnd.oci.image.index.v1+json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One descriptor per reference.
    #[serde(
        default,
        deserialize_with = "entries::deserialize",
        serialize_with = "entries::serialize"
    )]
    pub manifests: Entries,
    /// Index annotations, kept when another tool wrote them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The entries of an index: those that parse, and the others as they were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entries {
    /// The descriptors that parse, in file order.
    pub good: Vec<Descriptor>,
    /// The entries that do not, with why, after the good ones on a rewrite.
    pub unreadable: Vec<Unreadable>,
}

/// An entry of `index.json` this crate cannot read.
#[derive(Clone, Debug)]
pub struct Unreadable {
    /// The entry's JSON, kept byte for byte.
    pub raw: Box<serde_json::value::RawValue>,
    /// Why it does not parse.
    pub why: String,
    /// Its position among all the entries of the file.
    pub position: usize,
}

impl Unreadable {
    /// The blob the entry names, if its `digest` is a sha256 digest at all:
    /// what it keeps alive, whatever else is wrong with it.
    pub fn digest(&self) -> Option<Digest> {
        let v: serde_json::Value = serde_json::from_str(self.raw.get()).ok()?;
        v.get("digest")?.as_str()?.parse().ok()
    }
}

impl PartialEq for Unreadable {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get() && self.why == other.why
    }
}

impl Eq for Unreadable {}

impl std::ops::Deref for Entries {
    type Target = Vec<Descriptor>;

    fn deref(&self) -> &Vec<Descriptor> {
        &self.good
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut Vec<Descriptor> {
        &mut self.good
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = &'a Descriptor;
    type IntoIter = std::slice::Iter<'a, Descriptor>;

    fn into_iter(self) -> Self::IntoIter {
        self.good.iter()
    }
}

impl From<Vec<Descriptor>> for Entries {
    fn from(good: Vec<Descriptor>) -> Entries {
        Entries {
            good,
            unreadable: Vec::new(),
        }
    }
}

mod entries {
    use super::{Descriptor, Entries, Unreadable};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        // Borrowed from the input (every index is parsed from bytes in
        // memory): the first pass only finds where each entry ends.
        let raw: Vec<&'de serde_json::value::RawValue> = Vec::deserialize(d)?;
        let mut out = Entries {
            good: Vec::with_capacity(raw.len()),
            unreadable: Vec::new(),
        };
        // Each entry parses on its own: on all cores for a large index.
        let parsed =
            crate::util::par::on_cores(&raw, |r| serde_json::from_str::<Descriptor>(r.get()));
        for (position, (raw, parsed)) in raw.into_iter().zip(parsed).enumerate() {
            match parsed {
                Ok(descriptor) => out.good.push(descriptor),
                Err(e) => out.unreadable.push(Unreadable {
                    raw: raw.to_owned(),
                    why: e.to_string(),
                    position,
                }),
            }
        }
        Ok(out)
    }

    pub(super) fn serialize<S: Serializer>(entries: &Entries, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(entries.good.len() + entries.unreadable.len()))?;
        for d in &entries.good {
            seq.serialize_element(d)?;
        }
        for u in &entries.unreadable {
            seq.serialize_element(&u.raw)?;
        }
        seq.end()
    }
}

impl Default for IndexFile {
    fn default() -> Self {
        IndexFile {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.to_owned()),
            manifests: Entries::default(),
            annotations: BTreeMap::new(),
        }
    }
}

/// A manifest or an index blob, read with the fields the cache needs.
/// An index has `manifests`; an image manifest has `config` and `layers`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    /// 2 for every format the cache takes.
    pub schema_version: u32,
    /// The declared media type, when the document declares one.
    #[serde(default)]
    pub media_type: Option<String>,
    /// An image manifest's config.
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// An image manifest's layers, bottom first.
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
    /// An index's manifests.
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

/// A manifest's parts, once [`ManifestDoc::shape`] has checked them.
#[derive(Clone, Copy, Debug)]
pub enum Shape<'a> {
    /// An image manifest.
    Image {
        /// The config descriptor.
        config: &'a Descriptor,
        /// Layers, bottom first.
        layers: &'a [Descriptor],
    },
    /// An index of manifests.
    Index(&'a [Descriptor]),
}

/// The most layers a manifest may list: Docker stops at 127 and overlayfs
/// at 500; no real image comes near this.
pub const MAX_LAYERS: usize = 4096;
/// The most manifests an index may list.
pub const MAX_INDEX_MANIFESTS: usize = 4096;

impl ManifestDoc {
    /// Parses and checks a manifest or index; `Err` says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<ManifestDoc, String> {
        let doc: ManifestDoc = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if doc.schema_version != 2 {
            return Err(format!("unsupported schemaVersion {}", doc.schema_version));
        }
        let shape = doc.shape()?;
        match shape {
            Shape::Image { layers, .. } if layers.len() > MAX_LAYERS => {
                return Err(format!(
                    "lists {} layers, more than the {MAX_LAYERS} this cache takes",
                    layers.len()
                ))
            }
            Shape::Index(m) if m.len() > MAX_INDEX_MANIFESTS => {
                return Err(format!(
                    "lists {} manifests, more than the {MAX_INDEX_MANIFESTS} this cache takes",
                    m.len()
                ))
            }
            _ => {}
        }
        // A declared media type must agree with the fields: an "index"
        // with layers, or a "manifest" listing manifests, is refused.
        if let Some(declared) = doc.media_type.as_deref() {
            let index = matches!(shape, Shape::Index(_));
            if (index && is_manifest_media_type(declared))
                || (!index && is_index_media_type(declared))
            {
                return Err(format!(
                    "declares mediaType {declared} but has the fields of {}",
                    if index {
                        "an index"
                    } else {
                        "an image manifest"
                    }
                ));
            }
        }
        Ok(doc)
    }

    /// Whether this is an image manifest or an index.
    pub fn shape(&self) -> Result<Shape<'_>, String> {
        match (&self.manifests, &self.config, &self.layers) {
            (Some(m), None, None) => Ok(Shape::Index(m)),
            (None, Some(config), Some(layers)) => Ok(Shape::Image { config, layers }),
            (None, Some(_), None) => Err("an image manifest without layers".into()),
            (None, None, _) => Err("neither an image manifest nor an index".into()),
            (Some(_), _, _) => Err("both an index and an image manifest".into()),
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        // Parsed from the deserializer's own text: no copy but the digest.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sha256 digest")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_with_platform_keys() {
        let json = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":7,"platform":{"architecture":"arm","os":"linux","variant":"v7","os.version":"1"},"annotations":{"b":"2","a":"1"}}"#;
        let d: Descriptor = serde_json::from_str(json).unwrap();
        assert_eq!(d.platform.as_ref().unwrap().variant.as_deref(), Some("v7"));
        let out = serde_json::to_string(&d).unwrap();
        assert!(out.contains(r#""os.version":"1""#), "{out}");
        assert!(out.contains(r#""annotations":{"a":"1","b":"2"}"#), "{out}");
    }

    #[test]
    fn bad_digests_do_not_parse() {
        let json = r#"{"mediaType":"x","digest":"sha256:../../x","size":1}"#;
        assert!(serde_json::from_str::<Descriptor>(json).is_err());
    }
}
