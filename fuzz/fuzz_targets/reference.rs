//! Reference parsing: any string either fails with `InvalidReference` or
//! parses to a reference whose canonical and familiar forms parse back to
//! the same canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| microsandbox::testing::fuzzing::reference(data));
