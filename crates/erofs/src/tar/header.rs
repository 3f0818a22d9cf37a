//! One 512-byte header block: the block size and the padding after a
//! member's data, the header checksum, and the fields as tar writes them
//! (NUL-ended strings, octal or GNU base-256 numbers).

use crate::error::{Error, ErrorKind, Result};

/// The size of a tar block: headers, and the unit data is padded to.
pub(super) const BLOCK: usize = 512;

/// The bytes after `size` bytes of data up to the next block.
pub(super) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Checks a header's checksum: the sum of its bytes, the checksum field
/// counted as spaces, as unsigned bytes or (old tars) signed ones.
pub(super) fn check_checksum(h: &[u8; BLOCK]) -> Result<()> {
    let stored = parse_octal(&h[148..156]).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidHeader,
            "a header checksum is not a number",
        )
    })?;
    // The checksum field counts as spaces; old tars summed signed bytes.
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let (u, s) = if (148..156).contains(&i) {
            (32, 32)
        } else {
            (b as u64, b as i8 as i64)
        };
        unsigned += u;
        signed += s;
    }
    if stored != unsigned && stored as i64 != signed {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            "a tar header's checksum is wrong",
        ));
    }
    Ok(())
}

/// A string field up to its first NUL.
pub(super) fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// An octal field (spaces and NULs around digits allowed); `None` if not a number.
fn parse_octal(f: &[u8]) -> Option<u64> {
    let f = cstr(f);
    let s: &[u8] = {
        let start = f.iter().position(|&c| c != b' ').unwrap_or(f.len());
        let f = &f[start..];
        let end = f.iter().position(|&c| c == b' ').unwrap_or(f.len());
        if f[end..].iter().any(|&c| c != b' ') {
            return None;
        }
        &f[..end]
    };
    let mut v: u64 = 0;
    for &c in s {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// A numeric field, octal or GNU base-256; must not be negative.
pub(super) fn number(f: &[u8], what: &str) -> Result<u64> {
    let v = signed_number(f, what)?;
    u64::try_from(v)
        .map_err(|_| Error::new(ErrorKind::InvalidHeader, format!("a negative {what} field")))
}

/// A numeric field, octal or GNU base-256, which may be negative.
pub(super) fn signed_number(f: &[u8], what: &str) -> Result<i64> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidHeader,
            format!("the {what} field is not a number"),
        )
    };
    if f[0] & 0x80 != 0 {
        // Base-256, two's complement when the top bit of the first byte is set
        // along with 0x40 (0xff: negative).
        let neg = f[0] == 0xff;
        let mut v: i128 = if neg { -1 } else { (f[0] & 0x7f) as i128 };
        for &c in &f[1..] {
            v = (v << 8) | c as i128;
            if v > i64::MAX as i128 || v < i64::MIN as i128 {
                return Err(bad());
            }
        }
        return Ok(v as i64);
    }
    let v = parse_octal(f).ok_or_else(bad)?;
    i64::try_from(v).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"  755 \0"), Some(0o755));
        assert_eq!(parse_octal(b"\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"12 3"), None);
        assert_eq!(parse_octal(b"9"), None);
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 1;
        f[10] = 2;
        assert_eq!(number(&f, "size").unwrap(), 0x201);
        let neg = [0xffu8; 12];
        assert_eq!(signed_number(&neg, "mtime").unwrap(), -1);
        assert!(number(&neg, "size").is_err());
    }
}
