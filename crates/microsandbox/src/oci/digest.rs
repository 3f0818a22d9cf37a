//! Content digests: a validated `sha256:<64 lowercase hex>` newtype.
//!
//! Only SHA-256 is accepted: it is what every registry and tool writes, and
//! a digest that names a file in `blobs/sha256/` must never carry a path
//! separator or a dot, which validation here guarantees.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The length of `sha256:` and 64 hex digits.
const LEN: usize = PREFIX.len() + 64;
const PREFIX: &str = "sha256:";

/// A `sha256:<hex>` content digest, validated on construction.
///
/// The text is held inline, not on the heap: a prune or a disk usage
/// looks up hundreds of thousands of digests in maps of 30,000, and a
/// key behind a pointer made each comparison a cache miss (and each copy
/// an allocation).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest([u8; LEN]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Digest").field(&self.as_str()).finish()
    }
}

impl std::hash::Hash for Digest {
    /// Hashes the whole digest: digests come from manifests a registry or
    /// an archive wrote, and 40,000 that share a prefix must not share a
    /// bucket. The 64 characters are first folded into one word by a hash
    /// keyed at random once per process (so no one can plant names that
    /// collide), and only that word goes to the map's hasher: SipHash over
    /// 8 bytes instead of 64, which prune and disk usage feel on 30,000
    /// blobs.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<foldhash::quality::RandomState> =
            std::sync::OnceLock::new();
        let key = KEY.get_or_init(foldhash::quality::RandomState::default);
        state.write_u64(key.hash_one(&self.0[PREFIX.len()..]));
    }
}

/// Why a string is not a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestError(pub String);

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher holds.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest::from_bytes(hasher.finalize().into())
    }

    /// The digest of a 32-byte hash.
    pub fn from_bytes(hash: [u8; 32]) -> Digest {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; LEN];
        text[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
        for (i, b) in hash.iter().enumerate() {
            text[PREFIX.len() + 2 * i] = DIGITS[usize::from(b >> 4)];
            text[PREFIX.len() + 2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        Digest(text)
    }

    /// The 32 bytes of the hash: half the room of the text, for tables
    /// of many digests.
    pub fn to_bytes(&self) -> [u8; 32] {
        fn nibble(c: u8) -> u8 {
            // Every constructor checks for lowercase hex digits.
            match c {
                b'0'..=b'9' => c - b'0',
                _ => c - b'a' + 10,
            }
        }
        let hex = &self.0[PREFIX.len()..];
        std::array::from_fn(|i| nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]))
    }

    /// The 64 hex characters: the file name under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.as_str()[PREFIX.len()..]
    }

    /// The digest as text.
    pub fn as_str(&self) -> &str {
        // Every constructor checks the text is `sha256:` and hex digits.
        std::str::from_utf8(&self.0).expect("a digest is ASCII")
    }

    /// A digest from a file name under `blobs/sha256/`.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        Digest::of_hex(hex).ok_or_else(|| not_hex(&format!("{PREFIX}{hex}")))
    }

    /// The digest of 64 lowercase hex digits, without a copy of its text
    /// on the heap (a census reads 30,000 file names).
    fn of_hex(hex: &str) -> Option<Digest> {
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| {
            let mut text = [0u8; LEN];
            text[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
            text[PREFIX.len()..].copy_from_slice(hex.as_bytes());
            Digest(text)
        })
    }
}

fn not_hex(s: &str) -> DigestError {
    DigestError(format!(
        "not a sha256 digest (64 lowercase hex digits): {s:?}"
    ))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError(format!("not a digest: {s:?}")));
        };
        if algorithm != "sha256" {
            return Err(DigestError(format!(
                "unsupported digest algorithm {algorithm:?} in {s:?}"
            )));
        }
        Digest::of_hex(hex).ok_or_else(|| not_hex(s))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_known_value() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rejects_what_could_escape_or_is_not_sha256() {
        for bad in [
            "",
            "sha256:",
            "sha256:../../etc/passwd",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn digests_sharing_a_long_prefix_hash_apart() {
        use std::hash::{BuildHasher, RandomState};
        let s = RandomState::new();
        let a: Digest = format!("sha256:{}{}", "a".repeat(32), "0".repeat(32))
            .parse()
            .unwrap();
        let b: Digest = format!("sha256:{}{}", "a".repeat(32), "1".repeat(32))
            .parse()
            .unwrap();
        assert_ne!(s.hash_one(&a), s.hash_one(&b));
    }

    #[test]
    fn hex_is_the_file_name() {
        let d = Digest::of(b"abc");
        assert_eq!(Digest::from_hex(d.hex()).unwrap(), d);
        assert_eq!(d.to_string(), format!("sha256:{}", d.hex()));
        for bad in [
            "",
            "../../etc/passwd",
            &d.hex()[1..],
            &d.hex().to_uppercase(),
            &format!("{}:", &d.hex()[1..]),
        ] {
            let e = Digest::from_hex(bad).unwrap_err();
            assert!(e.0.contains(&format!("sha256:{bad}")), "{bad:?}: {e}");
        }
    }
}
