//! Prune policies: which references a prune takes. No option keeps the
//! documented meaning (every reference no lease pins); `dangling` takes
//! none; `unused_for` takes those idle longer than an age; `max_bytes`
//! evicts the least recently used until the blobs fit a budget, each
//! shared blob counted once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::gc::graph::Graph;
use crate::gc::sizes::BlobSizes;
use crate::oci::digest::Digest;

/// How to prune.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Compute and return the report, deleting nothing.
    pub dry_run: bool,
    /// Keep every reference; take only content nothing needs.
    pub dangling: bool,
    /// Take only references whose last use (or entry, if never used) is
    /// older than this.
    pub unused_for: Option<Duration>,
    /// Evict references, least recently used first, until the blobs (and
    /// VM artifacts) take no more than this many bytes (allocated on disk).
    pub max_bytes: Option<u64>,
    /// Take only VM artifacts, keeping every reference and blob: those of
    /// images no lease pins (with `unused_for`, those idle longer; with
    /// `max_bytes`, least recently used first until the cache fits).
    pub vm_only: bool,
}

fn invalid(what: String) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::InvalidArgument, what)
}

impl PruneOptions {
    /// Whether no policy is set: every reference no lease pins goes.
    pub fn takes_every_unpinned(&self) -> bool {
        !self.dangling && !self.vm_only && self.unused_for.is_none() && self.max_bytes.is_none()
    }

    /// Refuses contradictory options.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] for `dangling` with a policy that
    /// takes references.
    pub fn check(&self) -> MicrosandboxResult<()> {
        if self.dangling && (self.unused_for.is_some() || self.max_bytes.is_some()) {
            return Err(invalid(
                "dangling keeps every reference; it cannot be combined with unusedFor or maxBytes"
                    .into(),
            ));
        }
        if self.dangling && self.vm_only {
            return Err(invalid(
                "dangling takes only unreferenced content and vmOnly only VM artifacts; choose one"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Parses an age: `"36h"`, `"7d"`, `"1h 30m"`, `"90s"`, or plain seconds.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`] naming the text.
pub fn parse_duration(text: &str) -> MicrosandboxResult<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        invalid(format!(
            "invalid duration {text:?}: {e} (try \"36h\" or \"7d\")"
        ))
    })
}

/// Parses a size: plain bytes, or a number with `B`, `kB`/`KB`, `MB`,
/// `GB`, `TB` (powers of 1000; `K`, `M`, `G`, `T` likewise) or `KiB`,
/// `MiB`, `GiB`, `TiB` (powers of 1024). Fractions are allowed:
/// `"1.5GB"`.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`] naming the text.
pub fn parse_size(text: &str) -> MicrosandboxResult<u64> {
    let bad = || {
        invalid(format!(
            "invalid size {text:?} (try \"20GB\" or \"512MiB\")"
        ))
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// The outcome of [`evict_to_budget`].
#[derive(Debug, PartialEq, Eq)]
pub struct Eviction {
    /// Positions (in the candidates' order) of the references to take.
    pub evicted: Vec<usize>,
    /// The bytes the blobs take once they are gone.
    pub bytes_after: u64,
}

/// Evicts candidates in order (least recently used first) until the blobs
/// that stay fit `budget`. `fixed` are the graphs that stay whatever
/// happens (pinned references and manifests), `pinned` loose blobs a lease
/// holds; a blob counts once however many graphs need it; a blob missing
/// from `sizes` counts nothing.
pub fn evict_to_budget(
    budget: u64,
    sizes: &BlobSizes,
    fixed: &[Graph],
    pinned: &HashSet<Digest>,
    candidates: &[Graph],
) -> Eviction {
    let mut users: HashMap<&Digest, u32> = HashMap::new();
    for d in pinned {
        *users.entry(d).or_default() += 1;
    }
    for g in fixed.iter().chain(candidates) {
        for (d, _) in g.iter() {
            *users.entry(d).or_default() += 1;
        }
    }
    let mut total: u64 = users.keys().filter_map(|d| sizes.get(d)).sum();
    let mut evicted = Vec::new();
    for (i, g) in candidates.iter().enumerate() {
        if total <= budget {
            break;
        }
        for (d, _) in g.iter() {
            let n = users.get_mut(d).expect("counted above");
            *n -= 1;
            if *n == 0 {
                total -= sizes.get(d).unwrap_or(0);
            }
        }
        evicted.push(i);
    }
    Eviction {
        evicted,
        bytes_after: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::graph::Kind;

    #[test]
    fn sizes_and_durations_parse_like_docker() {
        assert_eq!(parse_size("20GB").unwrap(), 20_000_000_000);
        assert_eq!(parse_size("20G").unwrap(), 20_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5kB").unwrap(), 1500);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 1 TiB ").unwrap(), 1 << 40);
        for bad in ["", "GB", "-1GB", "1XB", "1e400", "..GB"] {
            assert_eq!(
                parse_size(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("36h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
        let both = PruneOptions {
            dangling: true,
            max_bytes: Some(1),
            ..Default::default()
        };
        assert_eq!(both.check().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    fn graph(names: &[&str]) -> Graph {
        names
            .iter()
            .map(|n| (Digest::of(n.as_bytes()), Kind::Layer))
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn eviction_counts_shared_blobs_once_and_stops_at_the_budget() {
        let sizes: BlobSizes = [("base", 100), ("a", 10), ("b", 20), ("c", 40)]
            .iter()
            .map(|(n, s)| (Digest::of(n.as_bytes()), *s))
            .collect();
        let oldest = graph(&["base", "a"]);
        let middle = graph(&["base", "b"]);
        let newest = graph(&["base", "c"]);
        let candidates = [oldest, middle, newest];
        // 170 in all; evicting the oldest frees only `a` (base is shared).
        let e = evict_to_budget(160, &sizes, &[], &HashSet::new(), &candidates);
        assert_eq!(e.evicted, vec![0]);
        assert_eq!(e.bytes_after, 160);
        let e = evict_to_budget(140, &sizes, &[], &HashSet::new(), &candidates);
        assert_eq!(e.evicted, vec![0, 1]);
        assert_eq!(e.bytes_after, 140);
        // A pinned graph keeps base whatever is evicted: the budget cannot
        // be reached, and the report says by how much.
        let fixed = [graph(&["base"])];
        let e = evict_to_budget(50, &sizes, &fixed, &HashSet::new(), &candidates);
        assert_eq!(e.evicted, vec![0, 1, 2]);
        assert_eq!(e.bytes_after, 100);
        let loose: HashSet<Digest> = [Digest::of(b"c")].into();
        let e = evict_to_budget(0, &sizes, &[], &loose, &candidates);
        assert_eq!(e.bytes_after, 40);
    }
}
