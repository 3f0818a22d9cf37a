//! Where a regular file's data goes: plain contiguous blocks, or for a
//! sparse file a block map of chunks (holes unstored), the chunk size
//! chosen by cost.

use crate::error::{Error, ErrorKind, Result};
use crate::format::{BLOCK_SIZE, NULL_ADDR};

/// Chooses how a file with these data runs is stored: the log2 of the
/// chunk size of a block map, or `None` for plain contiguous blocks. It
/// only counts: the chunk map is made (and paid for) by the caller.
/// `runs` are sorted, apart and inside `size` (checked by the tar parser),
/// and `size` is at most 2^63-1.
pub(crate) fn sparse_plan(runs: &[(u64, u64)], size: u64) -> Option<u32> {
    if size == 0 {
        return None;
    }
    let bs = BLOCK_SIZE;
    let flat_cost = size.div_ceil(bs).saturating_mul(bs);
    let mut best: Option<(u64, u32)> = None;
    let mut k = 0u32;
    loop {
        let shift = 12 + k;
        let chunk = 1u64 << shift;
        let n = size.div_ceil(chunk);
        let mut stored = 0u64;
        let mut last: Option<u64> = None;
        for &(o, len) in runs.iter().filter(|r| r.1 > 0) {
            let first = o >> shift;
            let end = o.saturating_add(len - 1) >> shift;
            let from = match last {
                Some(l) if l >= first => l + 1,
                _ => first,
            };
            if end >= from {
                stored += end - from + 1;
            }
            last = Some(end);
        }
        let mut bytes = stored.saturating_mul(chunk);
        if let Some(l) = last {
            if l == n - 1 {
                // The last chunk is stored only up to the file's last block.
                let tail = flat_cost.saturating_sub(l.saturating_mul(chunk));
                bytes = bytes.saturating_sub(chunk.saturating_sub(tail));
            }
        }
        // A chunk costs 4 bytes here and 8 in an fsmeta's chunk indexes.
        let cost = bytes.saturating_add(n.saturating_mul(12));
        if best.is_none_or(|(c, _)| cost <= c) {
            best = Some((cost, shift));
        }
        if chunk >= size || k == 31 {
            break;
        }
        k += 1;
    }
    let (cost, shift) = best?;
    if cost >= flat_cost {
        return None;
    }
    Some(shift)
}

/// The block map of `n` chunks of `1 << shift` bytes for these runs (sorted
/// and apart), the stored chunks placed one after the other from block
/// `first`; and the block after the last one stored.
pub(crate) fn chunk_map(
    runs: &[(u64, u64)],
    shift: u32,
    n: usize,
    first: u64,
) -> Result<(Vec<u32>, u64)> {
    let per = (1u64 << shift) / BLOCK_SIZE;
    let mut map = Vec::with_capacity(n);
    let mut runs = runs.iter().filter(|r| r.1 > 0).peekable();
    let mut next = first;
    for c in 0..n as u64 {
        let lo = c << shift;
        let hi = lo.saturating_add(1 << shift);
        while runs
            .next_if(|&&(o, len)| o.saturating_add(len) <= lo)
            .is_some()
        {}
        if runs.peek().is_some_and(|&&(o, _)| o < hi) {
            map.push(u32::try_from(next).map_err(|_| image_too_large())?);
            next = next.checked_add(per).ok_or_else(image_too_large)?;
        } else {
            map.push(NULL_ADDR);
        }
    }
    Ok((map, next))
}

/// The error for an image past 2^32 blocks.
pub(crate) fn image_too_large() -> Error {
    Error::new(
        ErrorKind::LimitExceeded,
        "the image would pass 2^32 blocks (16 TiB)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_map(runs: &[(u64, u64)], size: u64) -> Option<(u32, Vec<bool>)> {
        let shift = sparse_plan(runs, size)?;
        let n = size.div_ceil(1 << shift) as usize;
        let (map, _) = chunk_map(runs, shift, n, 1).unwrap();
        Some((shift, map.iter().map(|&b| b != NULL_ADDR).collect()))
    }

    #[test]
    fn sparse_plans_choose_chunks_by_cost() {
        // All holes: one chunk, nothing stored.
        let (shift, stored) = plan_map(&[(5 << 30, 0)], 5 << 30).unwrap();
        assert_eq!(stored, vec![false]);
        assert!(1u64 << shift >= 5 << 30);
        // No holes: plain blocks.
        assert!(sparse_plan(&[(0, 10_000)], 10_000).is_none());
        // Data at the start and the end of 1 GiB.
        let (shift, stored) = plan_map(&[(0, 4096), ((1 << 30) - 100, 100)], 1 << 30).unwrap();
        assert_eq!(stored.iter().filter(|s| **s).count(), 2);
        assert!(*stored.first().unwrap() && *stored.last().unwrap());
        assert!(shift >= 12);
        // A run across a chunk boundary stores both chunks.
        let (shift, stored) = plan_map(&[(0, 1), (20 << 20, 8192)], 64 << 20).unwrap();
        let c = ((20u64 << 20) >> shift) as usize;
        let c2 = (((20u64 << 20) + 8191) >> shift) as usize;
        assert!(stored[0] && stored[c] && stored[c2]);
        assert_eq!(
            stored.iter().filter(|s| **s).count(),
            if c == c2 { 2 } else { 3 }
        );
    }

    #[test]
    fn the_largest_sizes_plan_without_overflow() {
        let max = i64::MAX as u64;
        // One byte at the end of the largest file: a block map of many
        // chunks, never flat blocks (2^63 bytes), counted without overflow.
        let shift = sparse_plan(&[(max - 1, 1)], max).unwrap();
        assert!((12..=43).contains(&shift));
        assert!(sparse_plan(&[(0, 10)], max).is_some());
    }
}
