//! Replays the erofs fuzz target's seeds and every input it found
//! (`fuzz/seeds/erofs/`, `fuzz/regressions/erofs/`) through the same
//! properties, so a bug fuzzing found stays fixed.

use std::path::Path;

#[test]
fn erofs_fuzz_inputs_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join("erofs")) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for p in paths {
            erofs::fuzzing::layer(&std::fs::read(&p).unwrap());
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} inputs");
}
