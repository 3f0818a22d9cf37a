//! A descriptor's annotations, ordered by key, packed in one allocation.
//!
//! A cache's `index.json` holds an annotation map per reference, five or
//! six pairs each: as a `BTreeMap<String, String>` that was a node and a
//! dozen small strings per entry, about 1 KiB, the larger part of the
//! parsed index of 10,000 references. Packed, a map is one block of
//! length-prefixed keys and values. It reads and writes as a JSON object
//! exactly as the map did: keys in order, a repeated key's last value
//! kept, anything but string values refused.

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The annotations of a descriptor.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// `[len u32 LE][key][len u32 LE][value]` per pair, keys ascending and
    /// unique. Empty: no allocation.
    packed: Box<[u8]>,
}

impl Annotations {
    /// No annotations.
    pub fn new() -> Annotations {
        Annotations::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The pairs, keys ascending.
    pub fn iter(&self) -> Pairs<'_> {
        Pairs { rest: &self.packed }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, replacing what it had.
    pub fn insert(&mut self, key: &str, value: impl AsRef<str>) {
        let value = value.as_ref();
        let mut pairs: Vec<(&str, &str)> = self.iter().filter(|(k, _)| *k != key).collect();
        let at = pairs.partition_point(|(k, _)| *k < key);
        pairs.insert(at, (key, value));
        self.packed = pack(&pairs);
    }

    /// Removes `key`, returning whether it was set.
    pub fn remove(&mut self, key: &str) -> bool {
        if !self.contains_key(key) {
            return false;
        }
        let pairs: Vec<(&str, &str)> = self.iter().filter(|(k, _)| *k != key).collect();
        self.packed = pack(&pairs);
        true
    }

    /// From pairs in any order; a repeated key keeps its last value.
    fn from_pairs<K: AsRef<str>, V: AsRef<str>>(mut pairs: Vec<(K, V)>) -> Annotations {
        // Stable: the pairs of one key stay in their order, the last wins.
        pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut unique: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for (k, v) in &pairs {
            match unique.last_mut() {
                Some(last) if last.0 == k.as_ref() => last.1 = v.as_ref(),
                _ => unique.push((k.as_ref(), v.as_ref())),
            }
        }
        Annotations {
            packed: pack(&unique),
        }
    }
}

/// Packs pairs already ascending and unique. Every length fits a `u32`:
/// `index.json` and every document read are bounded far below 4 GiB.
fn pack(pairs: &[(&str, &str)]) -> Box<[u8]> {
    let len: usize = pairs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(len);
    for text in pairs.iter().flat_map(|(k, v)| [k, v]) {
        let n = u32::try_from(text.len()).expect("an annotation under 4 GiB");
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.into_boxed_slice()
}

/// The pairs of [`Annotations`], in order.
pub struct Pairs<'a> {
    rest: &'a [u8],
}

impl<'a> Pairs<'a> {
    fn text(&mut self) -> Option<&'a str> {
        let (n, rest) = self.rest.split_first_chunk::<4>()?;
        let (text, rest) = rest.split_at(u32::from_le_bytes(*n) as usize);
        self.rest = rest;
        // Only `pack` writes the bytes, from `&str`s.
        Some(std::str::from_utf8(text).expect("packed from text"))
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.text()?;
        Some((key, self.text()?))
    }
}

impl<'a> IntoIterator for &'a Annotations {
    type Item = (&'a str, &'a str);
    type IntoIter = Pairs<'a>;

    fn into_iter(self) -> Pairs<'a> {
        self.iter()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Annotations {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Annotations {
        Annotations::from_pairs(iter.into_iter().collect())
    }
}

impl fmt::Debug for Annotations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Annotations {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A JSON string, borrowed from the input when it has no escapes (the
/// annotations here and the entries `oci::listed` reads).
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Annotations;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Annotations, A::Error> {
                let mut pairs: Vec<(Text<'de>, Text<'de>)> = Vec::new();
                while let Some(pair) = map.next_entry::<Text<'de>, Text<'de>>()? {
                    pairs.push(pair);
                }
                Ok(Annotations::from_pairs(
                    pairs.into_iter().map(|(k, v)| (k.0, v.0)).collect(),
                ))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// What the map type it replaced says of the same JSON.
    fn as_btree(json: &str) -> Result<BTreeMap<String, String>, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_and_writes_json_as_an_ordered_map_did() {
        for json in [
            r#"{}"#,
            r#"{"b":"2","a":"1"}"#,
            r#"{"a":"1","a":"2","b":"x","a":"3"}"#,
            r#"{"k\u00e9y":"v\"al\\ue","":"","z":"\u0000"}"#,
            r#"{"org.opencontainers.image.ref.name":"docker.io/library/app:v1","dev.microsandbox.size":"123"}"#,
            r#"{"a":1}"#,
            r#"{"a":null}"#,
            r#"null"#,
            r#"["a","b"]"#,
            r#""text""#,
        ] {
            let ours: Result<Annotations, String> =
                serde_json::from_str(json).map_err(|e| e.to_string());
            match (as_btree(json), ours) {
                (Ok(map), Ok(ours)) => {
                    assert_eq!(
                        serde_json::to_string(&map).unwrap(),
                        serde_json::to_string(&ours).unwrap(),
                        "{json}"
                    );
                    assert_eq!(map.len(), ours.len());
                    for (k, v) in &map {
                        assert_eq!(ours.get(k), Some(v.as_str()), "{json}: {k}");
                    }
                    assert_eq!(map.is_empty(), ours.is_empty());
                }
                (Err(_), Err(_)) => {}
                (map, ours) => panic!("{json}: map {map:?}, packed {ours:?}"),
            }
        }
    }

    #[test]
    fn insert_and_remove_keep_keys_ordered_and_unique() {
        let mut a = Annotations::new();
        assert!(a.is_empty());
        a.insert("m", "1");
        a.insert("b", String::from("2"));
        a.insert("z", "3");
        a.insert("m", "4");
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            [("b", "2"), ("m", "4"), ("z", "3")]
        );
        assert!(a.remove("b"));
        assert!(!a.remove("b"));
        assert_eq!(a.get("z"), Some("3"));
        assert!(!a.contains_key("b"));
        let b: Annotations = [("z", "3"), ("m", "4")].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), r#"{"m": "4", "z": "3"}"#);
    }
}
