//! Real kills: a child process loads, leases, removes and prunes in a loop
//! and is killed with SIGKILL at random moments; after every kill the
//! cache keeps its invariants, and a prune leaves no temporary behind.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use microsandbox::LocalBackend;

const HOME_VAR: &str = "MSB_CRASH_TEST_HOME";

/// The child's work; runs only when the parent starts it.
#[test]
#[ignore = "run by killed_writers_never_break_the_cache as its child"]
fn crash_child() {
    let Some(home) = std::env::var_os(HOME_VAR) else {
        return;
    };
    let b = LocalBackend::builder()
        .home(Path::new(&home))
        .build_blocking()
        .unwrap();
    let fixtures = fixtures();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0u32;
    while Instant::now() < deadline {
        let _ = b.load_images(&fixtures.join("pair"), &Default::default());
        let _ = b.load_images(&fixtures.join("rich"), &Default::default());
        if let Ok(lease) = b.acquire_lease("rich", &Default::default()) {
            if i.is_multiple_of(2) {
                let _ = b.release_lease(&lease.id);
            }
        }
        let _ = b.remove_image("app", i.is_multiple_of(3));
        let _ = b.prune_images();
        i += 1;
    }
}

/// A tiny deterministic generator for kill delays.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn killed_writers_never_break_the_cache() {
    fixtures();
    let h = home();
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let rounds = 40;
    let mut saw_images = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(HOME_VAR, h.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Startup of the test binary takes a few ms; kill within the work.
        std::thread::sleep(Duration::from_millis(5 + next(&mut seed) % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        h.assert_invariants();
        if !h.backend.list_images().unwrap().is_empty() {
            saw_images += 1;
        }
        if round % 4 == 3 {
            // Whatever a dead writer left, prune sweeps.
            for lease in h.backend.list_leases().unwrap() {
                h.backend.release_lease(&lease.id).unwrap();
            }
            h.backend.prune_images().unwrap();
            assert!(h.tmp_names().is_empty(), "{:?}", h.tmp_names());
            let stray = std::fs::read_dir(h.oci())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp-"))
                .count();
            assert_eq!(stray, 0);
            h.assert_invariants();
        }
    }
    // The kills landed while the child was working, not before it began.
    assert!(
        saw_images > rounds / 4,
        "only {saw_images} rounds got work done"
    );
}
