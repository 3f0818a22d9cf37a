//! Short texts that repeat across thousands of descriptors (an
//! architecture, an operating system, a variant): one shared copy of each
//! instead of an allocation per descriptor. A parsed `index.json` of
//! 10,000 references held 20,000 copies of `amd64` and `linux`.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A short shared text. Compares, hashes, prints and (de)serializes as the
/// text itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Word(Arc<str>);

/// How many distinct words a thread remembers: a hostile index of a
/// million platforms costs no more than before, it only shares less.
const REMEMBERED: usize = 16;

impl Word {
    /// The shared copy of `text` (this thread's, if it has seen it).
    pub fn new(text: &str) -> Word {
        thread_local! {
            static SEEN: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
        }
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            if let Some(word) = seen.iter().find(|w| ***w == *text) {
                return Word(word.clone());
            }
            let word: Arc<str> = text.into();
            if seen.len() < REMEMBERED {
                seen.push(word.clone());
            }
            Word(word)
        })
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text itself.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl Default for Word {
    fn default() -> Word {
        Word::new("")
    }
}

impl Deref for Word {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Word {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Word {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl From<&str> for Word {
    fn from(text: &str) -> Word {
        Word::new(text)
    }
}

impl From<String> for Word {
    fn from(text: String) -> Word {
        Word::new(&text)
    }
}

impl Serialize for Word {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Word, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Word;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Word, E> {
                Ok(Word::new(v))
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Word, E> {
                std::str::from_utf8(v)
                    .map(Word::new)
                    .map_err(|_| E::custom("a string that is not UTF-8"))
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_shared_and_reads_as_its_text() {
        let a: Word = serde_json::from_str(r#""amd64""#).unwrap();
        let b: Word = serde_json::from_str(r#""amd\u0036\u0034""#).unwrap();
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.0, &b.0), "one copy for one text on a thread");
        assert_eq!(a, "amd64");
        assert_eq!(serde_json::to_string(&a).unwrap(), r#""amd64""#);
        assert_eq!(format!("{a} {a:?}"), "amd64 \"amd64\"");
        assert!(serde_json::from_str::<Word>("7").is_err());
        assert!(serde_json::from_str::<Word>("null").is_err());
    }

    #[test]
    fn past_the_bound_words_are_still_right_only_not_shared() {
        let words: Vec<Word> = (0..REMEMBERED * 2)
            .map(|i| Word::new(&format!("w{i}")))
            .collect();
        for (i, w) in words.iter().enumerate() {
            assert_eq!(w.as_str(), format!("w{i}"));
        }
        let late = Word::new(&format!("w{}", REMEMBERED + 1));
        assert_eq!(late, words[REMEMBERED + 1]);
        assert!(!Arc::ptr_eq(&late.0, &words[REMEMBERED + 1].0));
    }
}
