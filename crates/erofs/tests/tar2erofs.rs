//! The `tar2erofs` example on a layer large enough for its writeback to
//! hand over and drop many steps: the image is the library's, byte for
//! byte, it passes fsck.erofs, and most of its data is no longer in the
//! page cache when the program ends.

mod common;

use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use common::tarw::{tar, Ent};
use common::Rng;

fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent()?.parent()?.join("examples").join(name);
    p.is_file().then_some(p)
}

/// How many of `path`'s pages are in the page cache, and of how many.
fn resident(path: &std::path::Path) -> (usize, usize) {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let page = 4096;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of a file this test owns, unmapped
    // before return; mincore fills one byte per page of it into `vec`.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
        libc::munmap(p, len);
    }
    (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

#[test]
fn a_large_layer_streams_out_and_leaves_the_page_cache() {
    let Some(t2e) = example("tar2erofs") else {
        let msg = "the examples are not built (run the whole `cargo test -p erofs`)";
        assert!(!common::ci(), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    };
    let mut rng = Rng(24);
    let mut entries = vec![Ent::dir("data")];
    // 128 MiB in files of every size: many writeback steps, their edges
    // inside files and between them.
    let mut total = 0;
    let mut k = 0;
    while total < 128 << 20 {
        let n = match k % 4 {
            0 => rng.below(4096) as usize,
            1 => rng.below(1 << 20) as usize,
            2 => (9 << 20) + rng.below(4096) as usize,
            _ => rng.below(64 << 10) as usize,
        };
        entries.push(Ent::file(format!("data/f{k}"), rng.bytes(n)));
        total += n;
        k += 1;
    }
    let t = tar(&entries);
    // On the disk: tmpfs keeps every page, whatever the advice.
    let dir = tempfile::tempdir_in(common::cache_dir("tar2erofs")).unwrap();
    let tarp = dir.path().join("l.tar");
    std::fs::write(&tarp, &t).unwrap();
    let img = dir.path().join("l.erofs");
    common::run(std::process::Command::new(&t2e).arg(&tarp).arg(&img));

    // What is still cached: the last few steps in flight (up to 40 MiB)
    // and the metadata; without the writeback, every page.
    let (kept, pages) = resident(&img);
    assert!(
        kept * 2 < pages,
        "{kept} of {pages} pages of the image still cached"
    );
    let mut mine = std::io::Cursor::new(Vec::new());
    erofs::Builder::new().build(&t[..], &mut mine).unwrap();
    let mut written = Vec::new();
    std::fs::File::open(&img)
        .unwrap()
        .read_to_end(&mut written)
        .unwrap();
    assert!(
        written == mine.into_inner(),
        "tar2erofs differs from the library"
    );
    assert!(!dir.path().join("l.erofs.partial").exists());
    if common::need("a_large_layer_streams_out", &["fsck.erofs"]) {
        common::fsck(&img, &[]);
    }
}
