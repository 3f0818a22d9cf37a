//! Sparse files, in every form tar gives them: the runs of PAX formats 0.0
//! and 0.1 gathered from their records, the GNU sparse 1.0 map scanned as
//! its blocks arrive, old GNU runs in headers and extension blocks, and the
//! check that the runs fit the file and add up to its stored data.

use super::entry::MAX_SIZE;
use super::header::number;
use crate::error::{Error, ErrorKind, Result};

/// The sparse records of a PAX header.
#[derive(Default)]
pub(super) struct PaxSparse {
    /// The most runs a map may have.
    pub(super) max_runs: usize,
    pub(super) major: Option<u64>,
    pub(super) minor: Option<u64>,
    pub(super) name: Option<Vec<u8>>,
    pub(super) realsize: Option<u64>,
    pub(super) offsets: Vec<(u64, Option<u64>)>,
    pub(super) map: Vec<u64>,
    pub(super) has_map: bool,
}

impl PaxSparse {
    pub(super) fn is_sparse(&self) -> bool {
        self.major.is_some() || self.realsize.is_some() || self.has_map || !self.offsets.is_empty()
    }

    /// The runs of formats 0.0 and 0.1.
    pub(super) fn runs(&self) -> Result<Vec<(u64, u64)>> {
        if self.has_map {
            if !self.map.len().is_multiple_of(2) {
                return Err(Error::new(
                    ErrorKind::InvalidSparse,
                    "a GNU.sparse.map of odd length",
                ));
            }
            return Ok(self.map.chunks(2).map(|c| (c[0], c[1])).collect());
        }
        self.offsets
            .iter()
            .map(|&(o, n)| {
                n.map(|n| (o, n)).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidSparse,
                        "a GNU.sparse.offset without its numbytes",
                    )
                })
            })
            .collect()
    }
}

pub(super) fn too_many_runs(max: usize) -> Error {
    Error::new(
        ErrorKind::LimitExceeded,
        format!("a sparse map of more than {max} runs"),
    )
}

/// The scan of a GNU sparse 1.0 map (a count, then an offset and a size
/// per run, one decimal number a line), resumed as its blocks arrive.
#[derive(Default)]
pub(super) struct MapScan {
    /// Bytes of the map scanned so far.
    scanned: usize,
    /// Where the line being scanned starts.
    start: usize,
    /// The count of numbers after the first line.
    want: Option<usize>,
    numbers: Vec<u64>,
}

impl MapScan {
    /// Scans what `b` (the map so far) adds; the runs once all are in.
    pub(super) fn scan(&mut self, b: &[u8], max_runs: usize) -> Result<Option<Vec<(u64, u64)>>> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidSparse,
                "the GNU sparse 1.0 map is malformed",
            )
        };
        for i in self.scanned..b.len() {
            self.scanned = i + 1;
            let c = b[i];
            if c != b'\n' {
                if !c.is_ascii_digit() {
                    return Err(bad());
                }
                continue;
            }
            let s = std::str::from_utf8(&b[self.start..i]).map_err(|_| bad())?;
            let n: u64 = s.parse().map_err(|_| bad())?;
            self.start = i + 1;
            match self.want {
                None => {
                    if n > max_runs as u64 {
                        return Err(too_many_runs(max_runs));
                    }
                    self.want = Some(n as usize * 2);
                    self.numbers.reserve_exact(n as usize * 2);
                }
                Some(_) => {
                    if n > MAX_SIZE {
                        return Err(Error::new(
                            ErrorKind::InvalidSparse,
                            format!("a GNU sparse 1.0 map number {n}, past 2^63-1"),
                        ));
                    }
                    self.numbers.push(n);
                }
            }
            if self.want == Some(self.numbers.len()) {
                let runs = self.numbers.chunks(2).map(|c| (c[0], c[1])).collect();
                *self = MapScan::default();
                return Ok(Some(runs));
            }
        }
        Ok(None)
    }
}

/// Parses a whole GNU sparse 1.0 map; `None` until all of it is in `b`.
#[cfg(test)]
fn parse_sparse_map_1(b: &[u8], max_runs: usize) -> Result<Option<Vec<(u64, u64)>>> {
    MapScan::default().scan(b, max_runs)
}

pub(super) fn old_sparse_run(b: &[u8]) -> Result<Option<(u64, u64)>> {
    if b[0] == 0 {
        return Ok(None);
    }
    Ok(Some((
        number(&b[0..12], "sparse offset")?,
        number(&b[12..24], "sparse size")?,
    )))
}

pub(super) fn check_sparse(runs: &[(u64, u64)], size: u64, stream: u64) -> Result<()> {
    let bad = |m: &str| Error::new(ErrorKind::InvalidSparse, m.to_string());
    let mut end = 0u64;
    let mut total = 0u64;
    for &(o, n) in runs {
        if o < end {
            return Err(bad("sparse runs overlap or are out of order"));
        }
        end = o
            .checked_add(n)
            .ok_or_else(|| bad("a sparse run overflows"))?;
        if end > size {
            return Err(bad("a sparse run ends past the file's size"));
        }
        total = total
            .checked_add(n)
            .ok_or_else(|| bad("the sparse runs overflow"))?;
    }
    if total != stream {
        return Err(bad("the sparse runs do not add up to the stored data"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_map_1_needs_all_lines() {
        assert_eq!(parse_sparse_map_1(b"2\n0\n10\n", 10).unwrap(), None);
        assert_eq!(
            parse_sparse_map_1(b"2\n0\n10\n100\n5\n", 10).unwrap(),
            Some(vec![(0, 10), (100, 5)])
        );
        assert!(parse_sparse_map_1(b"20\n", 10).is_err());
    }
}
