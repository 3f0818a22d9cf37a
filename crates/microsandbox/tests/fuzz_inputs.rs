//! Replays the fuzz targets' seeds and every input they found
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) through the same
//! checks, so a bug fuzzing found stays fixed.

mod common;

use std::fs;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = common::repo_root().join("fuzz").join(kind).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            out.push((
                format!("{kind}/{target}/{}", e.file_name().to_string_lossy()),
                fs::read(e.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn reference_inputs_hold() {
    let all = inputs("reference");
    assert!(!all.is_empty());
    for (_, data) in all {
        microsandbox::testing::fuzzing::reference(&data);
    }
}

#[test]
fn manifest_inputs_hold() {
    let all = inputs("manifest");
    assert!(!all.is_empty());
    for (_, data) in all {
        microsandbox::testing::fuzzing::manifest(&data);
    }
}

#[test]
fn archive_inputs_hold() {
    let all = inputs("archive");
    assert!(!all.is_empty());
    for (_, data) in all {
        microsandbox::testing::fuzzing::archive(&data);
    }
}
