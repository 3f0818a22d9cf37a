//! Manifest, index and index.json parsing: any bytes either fail cleanly
//! or parse to documents whose shape can be asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| microsandbox::testing::fuzzing::manifest(data));
