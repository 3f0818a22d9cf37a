//! Downloads that outlive an attempt: `tmp/partial-<hex>-<size>`, one file
//! per blob, named by the digest its content must hash to and the size its
//! manifest declares.
//!
//! Whoever downloads a blob holds an exclusive `flock` on its partial file.
//! Another pull of the same blob, in this process or another, waits for
//! that lock, then finds the blob whole (it rehashes the file instead of
//! downloading it again) or half done (it goes on from where the bytes
//! stop). A cut transfer, a failed pull or a killed process thus leaves its
//! bytes to the next attempt.
//!
//! A verified partial is *parked*: it stays in `tmp/`, unlocked and never
//! written again, until a pull commits it into `blobs/` by a rename under
//! the exclusive cache lock. A partial that must start over is unlinked and
//! created anew, never truncated, so a parked file's inode always holds the
//! verified bytes; the pull that parked it keeps it open until the commit,
//! so its inode cannot be freed and reused. Prune keeps the partials of
//! blobs that an unexpired lease pins (a running pull's) and sweeps the
//! rest with `tmp/`.

use std::time::Duration;

use crate::error::IoContext;
use crate::error::MicrosandboxResult;
use crate::oci::digest::Digest;
use crate::store::blob::{names_file, BlobWriter, Tap};
use crate::store::layout::Layout;
use crate::store::lock::{try_flock, LockMode};

/// The prefix of partial downloads in `tmp/`.
pub const PARTIAL_PREFIX: &str = "partial-";
/// How often a pull waiting for another one's download looks again.
const POLL: Duration = Duration::from_millis(50);

/// The digest a `tmp/` file name stands for, if it is a partial download's.
pub fn digest_of_name(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix(PARTIAL_PREFIX)?;
    let (hex, size) = rest.split_once('-')?;
    size.parse::<u64>().ok()?;
    Digest::from_hex(hex).ok()
}

/// `partial-<hex>-<size>`: the declared size is part of the name, so a
/// manifest that declares another size for the same digest (a lie, or an
/// error) works on a file of its own and never touches this one.
fn name_of(digest: &Digest, size: u64) -> String {
    format!("{PARTIAL_PREFIX}{}-{size}", digest.hex())
}

/// What a claim on a blob finds.
pub enum Claim<T: Tap> {
    /// The blob is in `blobs/` already.
    Present,
    /// The partial download is ours to go on with: a partial-mode writer
    /// with the bytes it holds hashed.
    Mine(Box<BlobWriter<T>>),
}

/// Claims the partial download of `digest`: waits while another pull holds
/// it, calling `waiting` at each look, and hashes (and taps) the bytes it
/// already has. A file longer than `size`, or as long but with other
/// content, starts over. `tap` makes the tap of each attempt (a layer's
/// uncompressed digest, computed as bytes arrive).
///
/// # Errors
///
/// [`crate::ErrorKind::Io`] when `tmp/` cannot be used; whatever `waiting`
/// returns.
pub fn claim<T: Tap>(
    layout: &Layout,
    digest: &Digest,
    size: u64,
    tap: impl Fn() -> T,
    mut waiting: impl FnMut() -> MicrosandboxResult<()>,
) -> MicrosandboxResult<Claim<T>> {
    let tmp = layout.tmp_dir();
    let name = name_of(digest, size);
    let path = tmp.join(&name);
    loop {
        if layout.has_blob(digest) {
            return Ok(Claim::Present);
        }
        let file = tmp.open_or_create(&name)?;
        if !try_flock(&file, LockMode::Exclusive).at("lock", &path)? {
            drop(file);
            waiting()?;
            std::thread::sleep(POLL);
            continue;
        }
        // The name may have moved on while we waited for the lock: into
        // blobs/ by a commit, or away by a prune or a restart.
        if !names_file(tmp, &name, &file)? {
            continue;
        }
        let len = file.metadata().at("stat", &path)?.len();
        // Committed by another pull between the first look and the lock.
        if layout.has_blob(digest) {
            if len == 0 {
                let _ = tmp.remove(&name);
            }
            return Ok(Claim::Present);
        }
        if len > size {
            let _ = tmp.remove(&name);
            continue;
        }
        let writer = match BlobWriter::resume(
            tmp.clone(),
            name.clone(),
            file,
            len,
            tap(),
            (digest.clone(), size),
        ) {
            Ok(w) => w,
            Err(_) => {
                let _ = tmp.remove(&name);
                continue;
            }
        };
        if writer.is_whole() && writer.current_digest() != *digest {
            writer.discard();
            continue;
        }
        return Ok(Claim::Mine(Box::new(writer)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error::{ErrorKind, MicrosandboxError};
    use crate::store::layout::tests::temp as layout;
    use crate::store::lock::Exclusive;
    use std::fs;

    fn mine(c: Claim<()>) -> BlobWriter<()> {
        match c {
            Claim::Mine(w) => *w,
            Claim::Present => panic!("the blob is present"),
        }
    }

    #[test]
    fn a_partial_resumes_and_commits() {
        let (_home, layout) = layout();
        let data = b"0123456789".repeat(1000);
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let mut w = mine(claim(&layout, &digest, size, || (), || Ok(())).unwrap());
        w.write(&data[..4000], "t").unwrap();
        drop(w); // an attempt that stops midway
        let mut w = mine(claim(&layout, &digest, size, || (), || Ok(())).unwrap());
        assert_eq!(w.written(), 4000);
        w.write(&data[4000..], "t").unwrap();
        let parked = w.finish("t").unwrap().0.park().unwrap();
        // Another claim finds the parked file whole and verified.
        let again = mine(claim(&layout, &digest, size, || (), || Ok(())).unwrap());
        assert!(again.is_whole());
        drop(again);
        let guard = layout.lock::<Exclusive>().unwrap();
        assert!(parked
            .hold(&layout, &guard, Duration::from_secs(1))
            .unwrap());
        parked.commit(&layout, &guard).unwrap();
        drop(parked);
        assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), data);
        assert!(matches!(
            claim(&layout, &digest, size, || (), || Ok(())).unwrap(),
            Claim::Present
        ));
        assert_eq!(layout.tmp_dir().entries().unwrap().len(), 0);
    }

    #[test]
    fn a_held_partial_makes_others_wait_and_bad_bytes_start_over() {
        let (_home, layout) = layout();
        let data = b"abc".repeat(100);
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let w = mine(claim(&layout, &digest, size, || (), || Ok(())).unwrap());
        let mut looks = 0;
        let err = claim(
            &layout,
            &digest,
            size,
            || (),
            || {
                looks += 1;
                if looks == 3 {
                    Err(MicrosandboxError::new(ErrorKind::Busy, "stop"))
                } else {
                    Ok(())
                }
            },
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::Busy);
        drop(w);
        // Whole-sized but wrong content: the claim starts from nothing.
        fs::write(
            layout.tmp_dir().join(&name_of(&digest, size)),
            vec![b'x'; data.len()],
        )
        .unwrap();
        let mut w = mine(claim(&layout, &digest, size, || (), || Ok(())).unwrap());
        assert_eq!(w.written(), 0);
        // Too many bytes are refused, and the partial goes.
        let err = w.write(&[0u8; 301], "layer 0").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch);
        assert!(!layout.tmp_dir().join(&name_of(&digest, size)).exists());
    }

    #[test]
    fn a_parked_download_survives_pulls_that_declare_another_size() {
        // Found in review: a pull declaring size - 1 used to unlink the
        // parked file, and the next file there could get the same inode
        // number and pass the commit's checks with other bytes.
        let (_home, layout) = layout();
        let data = b"parked".repeat(500);
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let mut w = mine(claim(&layout, &digest, size, || (), || Ok(())).unwrap());
        w.write(&data, "t").unwrap();
        let parked = w.finish("t").unwrap().0.park().unwrap();
        // Another manifest lies about the size: it gets a file of its own.
        let mut liar = mine(claim(&layout, &digest, size - 1, || (), || Ok(())).unwrap());
        assert_eq!(liar.written(), 0);
        liar.write(&vec![b'z'; data.len() - 1], "t").unwrap();
        drop(liar);
        let mut longer = mine(claim(&layout, &digest, size + 1, || (), || Ok(())).unwrap());
        longer.write(b"q", "t").unwrap();
        drop(longer);
        // The parked bytes are untouched and commit as verified.
        let guard = layout.lock::<Exclusive>().unwrap();
        assert!(parked
            .hold(&layout, &guard, Duration::from_secs(1))
            .unwrap());
        parked.commit(&layout, &guard).unwrap();
        drop(parked);
        assert_eq!(fs::read(layout.blob_path(&digest)).unwrap(), data);
        // A parked file whose name now points elsewhere is refused.
        let other = b"other".repeat(10);
        let od = Digest::of(&other);
        let mut w = mine(claim(&layout, &od, other.len() as u64, || (), || Ok(())).unwrap());
        w.write(&other, "t").unwrap();
        let parked = w.finish("t").unwrap().0.park().unwrap();
        let path = layout.tmp_dir().join(&name_of(&od, other.len() as u64));
        fs::remove_file(&path).unwrap();
        fs::write(&path, &other).unwrap();
        let err = parked
            .hold(&layout, &guard, Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
    }

    #[test]
    fn a_mismatch_discards_the_partial() {
        let (_home, layout) = layout();
        let digest = Digest::of(b"right");
        let mut w = mine(claim(&layout, &digest, 5, || (), || Ok(())).unwrap());
        w.write(b"wrong", "t").unwrap();
        let err = w.finish("layer 1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DigestMismatch);
        assert!(err.to_string().contains("layer 1"), "{err}");
        assert!(!layout.tmp_dir().join(&name_of(&digest, 5)).exists());
        assert_eq!(
            digest_of_name(&format!("{PARTIAL_PREFIX}{}-5", digest.hex())),
            Some(digest)
        );
        assert_eq!(digest_of_name("ingest-abc"), None);
    }
}
