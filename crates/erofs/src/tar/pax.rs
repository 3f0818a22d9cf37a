//! PAX extension headers: the `LEN KEY=VALUE` records read in place, and
//! what each key changes in a member (path, link, size, owner, nanosecond
//! mtime, device numbers, `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*`, the
//! GNU sparse keys), global records held for every member after them.

use super::entry::{Entry, MAX_SIZE};
use super::sparse::{too_many_runs, PaxSparse};
use crate::error::{Error, ErrorKind, Result};

/// A PAX size or offset: a number up to [`MAX_SIZE`], `kind` if it is not one.
fn pax_size(v: &[u8], key: &[u8], kind: ErrorKind) -> Result<u64> {
    let n = pax_number(v, key).map_err(|e| Error::new(kind, e.to_string()))?;
    if n > MAX_SIZE {
        return Err(Error::new(
            kind,
            format!(
                "the PAX record {} is {n}, past 2^63-1",
                String::from_utf8_lossy(key)
            ),
        ));
    }
    Ok(n)
}

fn pax_number(v: &[u8], key: &[u8]) -> Result<u64> {
    let s = std::str::from_utf8(v).ok();
    s.and_then(|s| {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    })
    .ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidPax,
            format!(
                "the PAX record {} is not a number",
                String::from_utf8_lossy(key)
            ),
        )
    })
}

/// Parses a PAX time: `[-]SECONDS[.FRACTION]`.
fn pax_time(v: &[u8]) -> Result<(i64, u32)> {
    let bad = || Error::new(ErrorKind::InvalidPax, "a PAX mtime is not a time");
    let (neg, body) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        _ => (false, v),
    };
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[][..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    let secs: i64 = std::str::from_utf8(int)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| (d - b'0') as u32);
    }
    if !neg {
        return Ok((secs, nsec));
    }
    if nsec == 0 {
        Ok((-secs, 0))
    } else {
        Ok((-secs - 1, 1_000_000_000 - nsec))
    }
}

pub(super) fn apply_pax(
    e: &mut Entry,
    path: &mut Vec<u8>,
    link: &mut Vec<u8>,
    stream: &mut u64,
    sp: &mut PaxSparse,
    k: &[u8],
    v: &[u8],
) -> Result<()> {
    match k {
        b"path" => *path = v.to_vec(),
        b"linkpath" => *link = v.to_vec(),
        b"size" => {
            *stream = pax_size(v, k, ErrorKind::InvalidPax)?;
            e.size = *stream;
        }
        b"uid" => e.uid = pax_number(v, k)?,
        b"gid" => e.gid = pax_number(v, k)?,
        b"mtime" => (e.mtime, e.mtime_nsec) = pax_time(v)?,
        b"SCHILY.devmajor" => e.dev_major = pax_number(v, k)?,
        b"SCHILY.devminor" => e.dev_minor = pax_number(v, k)?,
        b"GNU.sparse.major" => sp.major = Some(pax_number(v, k)?),
        b"GNU.sparse.minor" => sp.minor = Some(pax_number(v, k)?),
        b"GNU.sparse.name" => sp.name = Some(v.to_vec()),
        b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
            sp.realsize = Some(pax_size(v, k, ErrorKind::InvalidSparse)?)
        }
        b"GNU.sparse.offset" => {
            if sp.offsets.len() >= sp.max_runs {
                return Err(too_many_runs(sp.max_runs));
            }
            sp.offsets
                .push((pax_size(v, k, ErrorKind::InvalidSparse)?, None))
        }
        b"GNU.sparse.numbytes" => match sp.offsets.last_mut() {
            Some((_, n @ None)) => *n = Some(pax_size(v, k, ErrorKind::InvalidSparse)?),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidSparse,
                    "a GNU.sparse.numbytes without its offset",
                ))
            }
        },
        b"GNU.sparse.map" => {
            sp.has_map = true;
            sp.map.clear();
            if !v.is_empty() {
                // Counted before anything is held: two numbers per run.
                let numbers = v.iter().filter(|&&b| b == b',').count() + 1;
                if numbers / 2 > sp.max_runs {
                    return Err(too_many_runs(sp.max_runs));
                }
                sp.map.reserve_exact(numbers);
                for part in v.split(|&b| b == b',') {
                    sp.map.push(pax_size(part, k, ErrorKind::InvalidSparse)?);
                }
            }
        }
        _ => {
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                set_xattr(e, name.to_vec(), v.to_vec());
            } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                let name = percent_decode(name).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidPax,
                        "a LIBARCHIVE.xattr name is not URL-encoded",
                    )
                })?;
                let value = base64_decode(v).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidPax,
                        "a LIBARCHIVE.xattr value is not base64",
                    )
                })?;
                set_xattr(e, name, value);
            }
        }
    }
    Ok(())
}

fn set_xattr(e: &mut Entry, name: Vec<u8>, value: Vec<u8>) {
    e.xattrs.retain(|(n, _)| *n != name);
    e.xattrs.push((name, value));
}

/// The next PAX record `LEN KEY=VALUE\n` of `b` as `(key, value)`,
/// advancing `b`; `None` at the end (or at NUL padding some writers leave).
pub(super) fn next_record<'a>(b: &mut &'a [u8]) -> Result<Option<(&'a [u8], &'a [u8])>> {
    let bad = |m: &str| {
        Error::new(
            ErrorKind::InvalidPax,
            format!("a PAX header is malformed: {m}"),
        )
    };
    let all = *b;
    if all.iter().all(|&c| c == 0) {
        *b = &[];
        return Ok(None);
    }
    let sp = all
        .iter()
        .take(20)
        .position(|&c| c == b' ')
        .ok_or_else(|| bad("no length"))?;
    let len: usize = std::str::from_utf8(&all[..sp])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("a length that is not a number"))?;
    if len <= sp + 1 || len > all.len() || all[len - 1] != b'\n' {
        return Err(bad("a record length that does not fit"));
    }
    let rec = &all[sp + 1..len - 1];
    let eq = rec
        .iter()
        .position(|&c| c == b'=')
        .ok_or_else(|| bad("a record without '='"))?;
    if eq == 0 {
        return Err(bad("an empty key"));
    }
    *b = &all[len..];
    Ok(Some((&rec[..eq], &rec[eq + 1..])))
}

/// Takes the records of a global PAX header (`g`) into `global`, the
/// records every later member starts from: a key again replaces the
/// earlier record, an empty value removes it, and per-file keys (path,
/// link, size, sparse) are ignored. What the globals hold together stays
/// within `max_ext`.
pub(super) fn add_globals(
    global: &mut Vec<(Vec<u8>, Vec<u8>)>,
    content: &[u8],
    max_ext: u64,
) -> Result<()> {
    let mut rest = content;
    while let Some((k, v)) = next_record(&mut rest)? {
        if matches!(k, b"path" | b"linkpath" | b"size") || k.starts_with(b"GNU.sparse.") {
            continue;
        }
        global.retain(|(gk, _)| gk[..] != *k);
        if !v.is_empty() {
            // What the globals hold together stays within the
            // limit of one extension header (a record's
            // overhead counted as 64 bytes).
            let held: u64 = global
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64 + 64)
                .sum();
            if held + (k.len() + v.len()) as u64 + 64 > max_ext {
                return Err(Error::new(
                    ErrorKind::LimitExceeded,
                    format!("global PAX records of more than {max_ext} bytes"),
                ));
            }
            global.push((k.to_vec(), v.to_vec()));
        }
    }
    Ok(())
}

/// Parses PAX records (for tests: the parser reads them in place).
#[cfg(test)]
fn parse_pax(mut b: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while let Some((k, v)) = next_record(&mut b)? {
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_and_times() {
        let r = parse_pax(b"20 path=a/b/c/d/e/f\n11 uid=123\n").unwrap();
        assert_eq!(r[0], (b"path".to_vec(), b"a/b/c/d/e/f".to_vec()));
        assert_eq!(r[1], (b"uid".to_vec(), b"123".to_vec()));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"8 path=x\n").is_err());
        assert_eq!(parse_pax(b"9 path=x\n").unwrap().len(), 1);
        assert_eq!(pax_time(b"1.5").unwrap(), (1, 500_000_000));
        assert_eq!(pax_time(b"-1.25").unwrap(), (-2, 750_000_000));
        assert_eq!(
            pax_time(b"1700000000.123456789123").unwrap(),
            (1_700_000_000, 123_456_789)
        );
        assert!(pax_time(b"1e9").is_err());
    }

    #[test]
    fn libarchive_encodings() {
        assert_eq!(percent_decode(b"user.a%3Db").unwrap(), b"user.a=b");
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"AQID").unwrap(), vec![1, 2, 3]);
        assert!(base64_decode(b"a*b").is_none());
    }
}
