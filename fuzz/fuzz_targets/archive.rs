//! Archive reading: any bytes, as an archive file, either load or fail
//! with a documented code, and a failed load leaves the cache empty.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| microsandbox::testing::fuzzing::archive(data));
