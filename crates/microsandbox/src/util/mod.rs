//! Small leaf helpers every layer uses: thread pools, timestamps, crash
//! points for tests.

pub mod fault;
pub mod pages;
pub mod par;
pub mod tidy;
pub mod time;
