//! Crash points for tests: a test names one in `MSB_FAULT_POINT` for a
//! child process, which then dies (abort, no unwinding, no cleanup) the
//! first time it reaches that point, exactly as a power cut or a SIGKILL
//! at that instant would leave the disk. Unset, a point costs one read of
//! a cached flag.

use std::sync::OnceLock;

/// The environment variable that arms a point.
pub const FAULT_VAR: &str = "MSB_FAULT_POINT";

/// Every point, for tests to iterate over.
#[cfg(feature = "testing")]
pub const POINTS: &[&str] = &[
    "blob-before-rename",
    "blob-linked-before-unlink",
    "blob-after-rename",
    "partial-before-rename",
    "artifact-before-rename",
    "atomic-before-rename",
    "atomic-after-rename",
    "prune-after-index",
    "prune-mid-sweep",
];

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(FAULT_VAR).ok())
        .as_deref()
}

/// Dies here if this point is armed.
pub fn point(name: &str) {
    if armed() == Some(name) {
        std::process::abort();
    }
}
