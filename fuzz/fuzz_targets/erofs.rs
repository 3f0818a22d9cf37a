//! The EROFS layer writer: any bytes, as a tar stream, either build an image
//! that reads back as the tree it was built from (the same bytes again, an
//! fsmeta of it that mounts the same tree) or fail with a bad-input error
//! naming where; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| erofs::fuzzing::layer(data));
