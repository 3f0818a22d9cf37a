//! The blob files of `blobs/sha256/` as a census counts them: each with
//! its inode and the bytes it occupies (allocated blocks, as `du` counts).
//!
//! One table serves both the census's memory (a file seen before, same
//! name and inode, is not stat'ed again) and every reader of its sizes, so
//! a cache of 30,000 blobs keeps one table of them, not two, keyed by the
//! 32 bytes of each hash rather than its 71 characters of text.

use std::collections::HashMap;

use crate::oci::digest::Digest;

/// Blob file -> (inode, allocated bytes).
#[derive(Clone, Debug, Default)]
pub struct BlobSizes {
    files: HashMap<[u8; 32], (u64, u64)>,
}

impl BlobSizes {
    /// Room for `n` files.
    pub(crate) fn with_capacity(n: usize) -> BlobSizes {
        BlobSizes {
            files: HashMap::with_capacity(n),
        }
    }

    /// Records a file.
    pub(crate) fn insert_file(&mut self, digest: Digest, ino: u64, bytes: u64) {
        self.files.insert(digest.to_bytes(), (ino, bytes));
    }

    /// The allocated bytes of a file still of inode `ino`, as last seen.
    pub(crate) fn seen(&self, digest: &Digest, ino: u64) -> Option<u64> {
        match self.files.get(&digest.to_bytes()) {
            Some(&(i, bytes)) if i == ino => Some(bytes),
            _ => None,
        }
    }

    /// How many blobs.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Adds a node that is no file (a VM artifact counted in a budget).
    pub fn insert(&mut self, digest: Digest, bytes: u64) {
        self.insert_file(digest, 0, bytes);
    }

    /// The allocated bytes of a blob, `None` if there is no such file.
    pub fn get(&self, digest: &Digest) -> Option<u64> {
        self.files.get(&digest.to_bytes()).map(|&(_, bytes)| bytes)
    }

    /// Every blob and its allocated bytes, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (Digest, u64)> + '_ {
        self.files
            .iter()
            .map(|(d, &(_, bytes))| (Digest::from_bytes(*d), bytes))
    }

    /// The bytes of every blob.
    pub fn total(&self) -> u64 {
        self.files.values().map(|&(_, bytes)| bytes).sum()
    }
}

impl FromIterator<(Digest, u64)> for BlobSizes {
    fn from_iter<I: IntoIterator<Item = (Digest, u64)>>(iter: I) -> BlobSizes {
        let mut sizes = BlobSizes::default();
        for (d, bytes) in iter {
            sizes.insert(d, bytes);
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_come_back_as_they_went_in() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let mut sizes = BlobSizes::with_capacity(2);
        sizes.insert_file(a.clone(), 7, 4096);
        sizes.insert(b.clone(), 10);
        assert_eq!(Digest::from_bytes(a.to_bytes()), a);
        assert_eq!(sizes.get(&a), Some(4096));
        assert_eq!(sizes.seen(&a, 7), Some(4096));
        assert_eq!(sizes.seen(&a, 8), None, "another inode is another file");
        assert_eq!(sizes.get(&Digest::of(b"c")), None);
        assert_eq!(sizes.total(), 4106);
        let mut all: Vec<(Digest, u64)> = sizes.iter().collect();
        all.sort();
        let mut want = vec![(a, 4096), (b, 10)];
        want.sort();
        assert_eq!(all, want);
    }
}
