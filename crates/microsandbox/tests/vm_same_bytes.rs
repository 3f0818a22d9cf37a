//! A VM disk's artifacts are the same bytes however they come to be made:
//! an image's fsmeta made after another image gave it its shared layer
//! images, made in a cache that had none of them, and made from layer
//! images written in a materializing load's own pass; each sealed as its
//! bytes on disk (verify hashes them all again).

mod common;

use std::fs;

use common::{fixtures, home, Home};
use microsandbox::{ImageDisk, LoadOptions, MaterializeOptions, VerifyOptions};

fn materialize(h: &Home, reference: &str) -> ImageDisk {
    h.backend
        .materialize(reference, &MaterializeOptions::default())
        .unwrap()
}

/// The bytes of a disk's fsmeta and layer images, bottom first.
fn bytes(disk: &ImageDisk) -> (Vec<u8>, Vec<Vec<u8>>) {
    (
        fs::read(&disk.fsmeta_path).unwrap(),
        disk.layers
            .iter()
            .map(|l| fs::read(&l.path).unwrap())
            .collect(),
    )
}

fn clean(h: &Home) {
    let r = h.backend.verify(&VerifyOptions::default()).unwrap();
    assert!(r.is_clean(), "{r:?}");
}

#[test]
fn an_fsmeta_is_the_same_bytes_from_scratch_after_shared_layers_and_in_pass() {
    // After `base` made the shared layer's image: only app's top layer
    // and its fsmeta are new.
    let after = home();
    after.load("pair");
    let base = materialize(&after, "base");
    let app_after = materialize(&after, "app");
    assert_eq!(app_after.layers[0].path, base.layers[0].path);
    // In a cache that had nothing.
    let scratch = home();
    scratch.load("pair");
    let app_scratch = materialize(&scratch, "app");
    // Layer images written while a load brings the blobs in.
    let in_pass = home();
    in_pass
        .backend
        .load_images(
            &fixtures().join("pair"),
            &LoadOptions {
                materialize: true,
                ..Default::default()
            },
        )
        .unwrap();
    let app_in_pass = materialize(&in_pass, "app");
    assert!(app_in_pass.remade.is_empty(), "{:?}", app_in_pass.remade);

    let want = bytes(&app_scratch);
    assert!(!want.0.is_empty() && want.1.len() == 2);
    assert_eq!(bytes(&app_after), want, "made after base");
    assert_eq!(bytes(&app_in_pass), want, "made in the load's pass");
    // An fsmeta names its layers by diff_id, so one made over other
    // images of the same layers is still this one: made again from scratch
    // after its own removal, the same bytes.
    fs::remove_file(&app_after.vmdk_path).unwrap();
    fs::remove_file(&app_after.fsmeta_path).unwrap();
    let again = materialize(&after, "app");
    assert_eq!(bytes(&again), want, "made again");
    for h in [&after, &scratch, &in_pass] {
        clean(h);
    }
}
