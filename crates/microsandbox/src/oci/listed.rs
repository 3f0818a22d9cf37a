//! `index.json` as `list` reads it: each entry's descriptor without its
//! annotation map, and the few annotations a handle shows, borrowed from
//! the file's bytes.
//!
//! A cold list of 10,000 references spent most of its time building and
//! then dropping the annotation maps (a dozen small strings per entry) that
//! it reads five values from. This reading accepts and refuses exactly what
//! [`Descriptor`] and [`IndexFile`] do (the tests below hold it to that), so
//! an entry is a reference to `list` exactly when it is one to every other
//! operation.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::oci::annotations::{Annotations, Text};
use crate::oci::digest::Digest;
use crate::oci::model::{
    Descriptor, Platform, ANN_CREATED, ANN_IMAGE_CREATED, ANN_LAST_USED, ANN_LAYERS, ANN_REF_NAME,
    ANN_SIZE,
};

/// A JSON string, checked and not kept: what a `String` field accepts.
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        d.deserialize_str(V)
    }
}

/// The annotations a handle shows, each the last of its key in the entry
/// (as a map keeps it). Every other key and value must still be a string,
/// as in [`Descriptor::annotations`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Said<'a> {
    /// `org.opencontainers.image.ref.name`.
    pub ref_name: Option<Cow<'a, str>>,
    /// When the reference entered this cache.
    pub created: Option<Cow<'a, str>>,
    /// When a lease last took it.
    pub last_used: Option<Cow<'a, str>>,
    /// When the image was built.
    pub image_created: Option<Cow<'a, str>>,
    /// Manifest, config and layer bytes.
    pub size: Option<Cow<'a, str>>,
    /// How many layers.
    pub layers: Option<Cow<'a, str>>,
}

impl<'a> Said<'a> {
    /// The same values out of a parsed map.
    pub fn of(annotations: &'a Annotations) -> Said<'a> {
        let mut said = Said::default();
        for (key, value) in annotations {
            if let Some(slot) = said.slot(key) {
                *slot = Some(Cow::Borrowed(value));
            }
        }
        said
    }

    /// Where the value of `key` goes, if a handle shows it.
    fn slot(&mut self, key: &str) -> Option<&mut Option<Cow<'a, str>>> {
        Some(match key {
            ANN_REF_NAME => &mut self.ref_name,
            ANN_CREATED => &mut self.created,
            ANN_LAST_USED => &mut self.last_used,
            ANN_IMAGE_CREATED => &mut self.image_created,
            ANN_SIZE => &mut self.size,
            ANN_LAYERS => &mut self.layers,
            _ => return None,
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Said<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Said<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Said<'a>, M::Error> {
                let mut said = Said::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match said.slot(&key) {
                        Some(slot) => *slot = Some(map.next_value::<Text<'de>>()?.0),
                        None => {
                            map.next_value::<AnyString>()?;
                        }
                    }
                }
                Ok(said)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// One entry of `index.json`: a [`Descriptor`]'s fields, with [`Said`] in
/// place of the annotation map.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed<'a> {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default, borrow)]
    annotations: Said<'a>,
    #[serde(default)]
    artifact_type: Option<Box<str>>,
    #[serde(default)]
    urls: Option<Box<[String]>>,
}

impl<'a> Listed<'a> {
    /// The descriptor (with no annotations) and what its annotations say.
    pub fn split(self) -> (Descriptor, Said<'a>) {
        // Every field named: a field `Descriptor` gains must be read here too.
        let descriptor = Descriptor {
            media_type: self.media_type,
            digest: self.digest,
            size: self.size,
            platform: self.platform,
            annotations: Annotations::new(),
            artifact_type: self.artifact_type,
            urls: self.urls,
        };
        (descriptor, self.annotations)
    }
}

/// The top of `index.json` with each entry left as its JSON: accepts and
/// refuses what [`crate::oci::model::IndexFile`] does.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Top<'a> {
    #[allow(dead_code)]
    schema_version: u32,
    #[serde(default)]
    #[allow(dead_code)]
    media_type: Option<AnyString>,
    #[serde(default, borrow)]
    manifests: Vec<&'a RawValue>,
    #[serde(default)]
    #[allow(dead_code)]
    annotations: StringMap,
}

/// A map of strings, checked and not kept.
#[derive(Default)]
struct StringMap;

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<StringMap, M::Error> {
                while map.next_key::<AnyString>()?.is_some() {
                    map.next_value::<AnyString>()?;
                }
                Ok(StringMap)
            }
        }
        d.deserialize_map(V)
    }
}

/// The entries of an index file's bytes, each as its JSON text.
///
/// # Errors
///
/// serde_json's, for bytes that are not an index.
pub fn entries(bytes: &[u8]) -> Result<Vec<&RawValue>, serde_json::Error> {
    serde_json::from_slice::<Top<'_>>(bytes).map(|top| top.manifests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::model::IndexFile;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn entry(rest: &str) -> String {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":7{rest}}}"#
        )
    }

    #[test]
    fn an_entry_reads_as_a_descriptor_reads_it() {
        let cases = [
            entry(""),
            entry(
                r#","annotations":{"org.opencontainers.image.ref.name":"docker.io/library/a:1","dev.microsandbox.size":"12","x":"y"}"#,
            ),
            // The last of a key wins, as in a map; an escaped key is its text.
            entry(
                r#","annotations":{"dev.microsandbox.layers":"1","dev.microsandbox.layers":"2"}"#,
            ),
            entry(r#","annotations":{"org.opencontainers.image.ref\u002ename":"a\/b:1"}"#),
            entry(r#","annotations":{"x":1}"#),
            entry(r#","annotations":{"dev.microsandbox.size":12}"#),
            entry(r#","annotations":null"#),
            entry(r#","annotations":[]"#),
            entry(r#","annotations":{}"#),
            entry(r#","platform":{"architecture":"amd64","os":"linux","variant":"v3"}"#),
            entry(r#","platform":{"architecture":"amd64"}"#),
            entry(r#","platform":null"#),
            entry(r#","urls":["https://x"],"artifactType":"a/b","unknown":{"deep":[1,2]}"#),
            entry(r#","urls":[1]"#),
            entry(r#","size":8"#),
            entry(r#","annotations":{},"annotations":{}"#),
            format!(r#"{{"digest":"{D}","size":7}}"#),
            format!(r#"{{"mediaType":"m","digest":"{D}","size":-1}}"#),
            format!(r#"{{"mediaType":"m","digest":"{D}","size":18446744073709551616}}"#),
            format!(r#"{{"mediaType":"m","digest":"{D}","size":1.5}}"#),
            r#"{"mediaType":"m","digest":"sha512:00","size":1}"#.to_owned(),
            r#"{"mediaType":"m","digest":"sha256:../../x","size":1}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#""text""#.to_owned(),
        ];
        for json in &cases {
            let full = serde_json::from_str::<Descriptor>(json);
            let listed = serde_json::from_str::<Listed<'_>>(json);
            assert_eq!(full.is_ok(), listed.is_ok(), "{json}: {full:?}");
            if let (Ok(full), Ok(listed)) = (full, listed) {
                let (d, said) = listed.split();
                assert_eq!(said, Said::of(&full.annotations), "{json}");
                let bare = Descriptor {
                    annotations: Annotations::new(),
                    ..full.clone()
                };
                assert_eq!(d, bare, "{json}");
            }
        }
    }

    #[test]
    fn the_top_reads_as_an_index_reads_it() {
        let good = entry("");
        let cases = [
            format!(r#"{{"schemaVersion":2,"manifests":[{good},{{"odd":1}},7]}}"#),
            r#"{"schemaVersion":2}"#.to_owned(),
            r#"{"schemaVersion":2,"mediaType":"x","annotations":{"a":"b"},"other":[1]}"#.to_owned(),
            r#"{"manifests":[]}"#.to_owned(),
            r#"{"schemaVersion":"2","manifests":[]}"#.to_owned(),
            r#"{"schemaVersion":-2,"manifests":[]}"#.to_owned(),
            r#"{"schemaVersion":2,"manifests":null}"#.to_owned(),
            r#"{"schemaVersion":2,"manifests":{}}"#.to_owned(),
            r#"{"schemaVersion":2,"mediaType":5}"#.to_owned(),
            r#"{"schemaVersion":2,"mediaType":null}"#.to_owned(),
            r#"{"schemaVersion":2,"annotations":null}"#.to_owned(),
            r#"{"schemaVersion":2,"annotations":{"a":1}}"#.to_owned(),
            r#"{"schemaVersion":2,"manifests":[],"manifests":[]}"#.to_owned(),
            r#"{"schemaVersion":2} x"#.to_owned(),
            r#"{"schemaVersion":2,"manifests":[1,]}"#.to_owned(),
            r#"[]"#.to_owned(),
        ];
        for json in &cases {
            let full = serde_json::from_str::<IndexFile>(json);
            let top = entries(json.as_bytes());
            assert_eq!(full.is_ok(), top.is_ok(), "{json}: {full:?}");
            if let (Ok(full), Ok(top)) = (full, top) {
                assert_eq!(
                    full.manifests.good.len() + full.manifests.unreadable.len(),
                    top.len(),
                    "{json}"
                );
            }
        }
    }
}
