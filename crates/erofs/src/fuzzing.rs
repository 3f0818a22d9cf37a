//! Properties the fuzz target (`fuzz/fuzz_targets/erofs.rs`) and the seed
//! replay check on any input, in memory: no panic; an error is a bad-input
//! kind naming where it is; a success is an image that reads back as the
//! tree it was built from, the same bytes when built again, and an fsmeta
//! of it that reads back as that tree with the overlay markers applied.

use std::io::Cursor;

use crate::error::ErrorKind;
use crate::read::{Budget, Image};
use crate::tree::{self, Body, Tree};
use crate::{Builder, Limits, Merger};

/// Small limits so that fuzzing stays fast.
fn limits() -> Limits {
    Limits {
        max_entries: 4096,
        max_metadata_bytes: 8 << 20,
        max_extension_bytes: 1 << 20,
        max_sparse_runs: 4096,
    }
}

/// Builds `data` as a layer tar and checks the properties above.
pub fn layer(data: &[u8]) {
    let mut b = Builder::new();
    b.limits(limits());
    let mut out = Cursor::new(Vec::new());
    let built = {
        let mut w = b.writer(&mut out).expect("a writer over memory");
        // Feed in uneven pieces, as a network stream would.
        let mut rest = data;
        let mut step = 1;
        loop {
            if rest.is_empty() {
                break w.finish_with_tree();
            }
            let n = step.min(rest.len());
            if let Err(e) = w.push(&rest[..n]) {
                break Err(e);
            }
            rest = &rest[n..];
            step = step * 7 % 1031 + 1;
        }
    };
    let (info, tree) = match built {
        Ok(t) => t,
        Err(e) => {
            assert!(
                !matches!(e.kind(), ErrorKind::Io | ErrorKind::InvalidImage),
                "{:?}: {e}",
                e.kind()
            );
            assert!(e.entry().is_some() || e.offset().is_some(), "{e}");
            return;
        }
    };
    let image = out.into_inner();
    assert_eq!(image.len() as u64, info.size_bytes());
    crate::check_image(&image).expect("a valid image");
    let img = Image::open(&image).expect("an image");
    let back = img
        .tree(&mut Budget::unbounded())
        .expect("the tree reads back");
    assert_eq!(back.listing(), tree.listing());

    let mut again = Cursor::new(Vec::new());
    b.build(data, &mut again)
        .expect("the same input builds again");
    assert!(
        again.into_inner() == image,
        "the same input gave other bytes"
    );

    let mut m = Merger::new();
    m.add_layer(&image, b"layer0").expect("the layer merges");
    let mut fsmeta = Cursor::new(Vec::new());
    m.finish(&mut fsmeta).expect("the fsmeta is written");
    let fsmeta = fsmeta.into_inner();
    crate::check_fsmeta(&fsmeta, &[&image]).expect("a valid fsmeta");
    let merged = Image::open(&fsmeta)
        .expect("an fsmeta")
        .tree(&mut Budget::unbounded())
        .expect("its tree");
    assert_eq!(merged.listing(), without_markers(&back).listing());
}

/// The tree with whiteouts removed and opaque marks dropped, as the merge
/// of a single (bottom) layer shows it.
fn without_markers(t: &Tree) -> Tree {
    let mut t = t.clone();
    let mut stack = vec![t.root()];
    while let Some(dir) = stack.pop() {
        let (o, s) = tree::OPAQUE;
        t.get_mut(dir).remove_xattr(o, s);
        let entries: Vec<(Box<[u8]>, u32)> = t
            .entries(dir)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (name, child) in entries {
            let c = t.get(child);
            if tree::is_whiteout(c) {
                t.unlink(dir, &name);
            } else if matches!(c.body, Body::Dir(_)) {
                stack.push(child);
            }
        }
    }
    t
}
