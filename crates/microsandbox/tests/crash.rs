//! Real kills. A child process loads, pulls from a real registry, leases,
//! removes and prunes (with each policy) in a loop and is killed with
//! SIGKILL at random moments, 200 times; after every kill `verify()` finds
//! no violation (only a dead writer's files in `tmp/`, which the next
//! prune sweeps). Then every fault point of the core is armed in turn: the
//! child aborts exactly there (after an fsync, before or after a rename),
//! and the cache is again sound and serves a retry.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::*;
use common::*;
use microsandbox::{LocalBackend, PruneOptions, PullOptions, PullPolicy, VerifyOptions};

const HOME_VAR: &str = "MSB_CRASH_TEST_HOME";
const REGISTRY_VAR: &str = "MSB_CRASH_TEST_REGISTRY";
const ONCE_VAR: &str = "MSB_CRASH_TEST_ONCE";

/// The child's work; runs only when the parent starts it. With ONCE_VAR,
/// one pass of every operation (for the fault points); else a loop.
#[test]
#[ignore = "run by the tests below as their child"]
fn crash_child() {
    let Some(home) = std::env::var_os(HOME_VAR) else {
        return;
    };
    let registry = std::env::var(REGISTRY_VAR).unwrap_or_default();
    let once = std::env::var_os(ONCE_VAR).is_some();
    let b = LocalBackend::builder()
        .home(Path::new(&home))
        .build_blocking()
        .unwrap();
    let fixtures = fixtures();
    let always = PullOptions {
        policy: PullPolicy::Always,
        ..Default::default()
    };
    let materializing = PullOptions {
        policy: PullPolicy::Always,
        materialize: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0u32;
    while Instant::now() < deadline {
        let _ = b.load_images(&fixtures.join("pair"), &Default::default());
        if once {
            // The VM disk's points first: a disk made from scratch.
            let _ = b.materialize("app", &Default::default());
        }
        if !registry.is_empty() {
            let rich = if i.is_multiple_of(2) {
                &materializing
            } else {
                &always
            };
            let _ = b.pull_image(&format!("{registry}/team/rich:1"), rich);
            let _ = b.pull_image(&format!("{registry}/team/multi:1"), &always);
        }
        let _ = b.load_images(&fixtures.join("rich"), &Default::default());
        let _ = b.materialize("base", &Default::default());
        let _ = b.materialize("rich", &Default::default());
        if let Ok(lease) = b.acquire_lease("rich", &Default::default()) {
            if i.is_multiple_of(2) {
                let _ = b.release_lease(&lease.id);
            }
        }
        let _ = b.remove_image("app", i.is_multiple_of(3));
        let policy = match i % 5 {
            0 => PruneOptions::default(),
            1 => PruneOptions {
                dangling: true,
                ..Default::default()
            },
            2 => PruneOptions {
                max_bytes: Some(10_000),
                ..Default::default()
            },
            3 => PruneOptions {
                unused_for: Some(Duration::ZERO),
                ..Default::default()
            },
            _ => PruneOptions {
                vm_only: true,
                ..Default::default()
            },
        };
        let _ = b.prune_images_with(&policy);
        if once {
            // Every fault point is on this path: take a prune that deletes.
            let _ = b.load_images(&fixtures.join("pair"), &Default::default());
            let _ = b.remove_image("base", true);
            let _ = b.prune_images();
            return;
        }
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

fn child(h: &Home, registry: &str, fault: Option<&str>) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(HOME_VAR, h.dir.path())
        .env(REGISTRY_VAR, registry)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(point) = fault {
        c.env(microsandbox::testing::FAULT_VAR, point)
            .env(ONCE_VAR, "1");
    }
    c
}

/// After a crash: no reference broken, no blob corrupt, no lease unreadable;
/// what the dead writer left in tmp/ (or half-renamed) is allowed.
fn assert_sound(h: &Home, when: &str) {
    let r = h.backend.verify(&VerifyOptions::default()).unwrap();
    assert!(r.corrupt_blobs.is_empty(), "{when}: {r:?}");
    assert!(r.dangling_references.is_empty(), "{when}: {r:?}");
    assert!(r.missing_blobs.is_empty(), "{when}: {r:?}");
    assert!(r.bad_leases.is_empty(), "{when}: {r:?}");
    // No partial or broken VM artifact is ever visible.
    assert!(r.corrupt_artifacts.is_empty(), "{when}: {r:?}");
    h.assert_invariants();
}

/// Releases every lease and prunes: nothing of a dead writer may be left.
fn assert_prune_sweeps(h: &Home, when: &str) {
    for lease in h.backend.list_leases().unwrap() {
        h.backend.release_lease(&lease.id).unwrap();
    }
    h.backend.prune_images().unwrap();
    assert!(h.tmp_names().is_empty(), "{when}: {:?}", h.tmp_names());
    let r = h.backend.verify(&VerifyOptions::default()).unwrap();
    assert!(r.is_clean(), "{when}: {r:?}");
}

#[test]
fn killed_writers_never_break_the_cache() {
    fixtures();
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    push(&reg, "multiarch:multi", "team/multi:1", true);
    let h = home();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let rounds = 200;
    let mut saw_images = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let mut c = child(&h, &reg.addr, None).spawn().unwrap();
        // Startup of the test binary takes a few ms; kill within the work.
        std::thread::sleep(Duration::from_millis(5 + next(&mut seed) % 250));
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        assert_sound(&h, &format!("round {round}"));
        if !h.backend.list_images().unwrap().is_empty() {
            saw_images += 1;
        }
        if round % 10 == 9 {
            assert_prune_sweeps(&h, &format!("round {round}"));
        }
    }
    // The kills landed while the child was working, not before it began.
    assert!(
        saw_images > rounds / 4,
        "only {saw_images} rounds got work done"
    );
    eprintln!(
        "{rounds} kills in {:.1} s, {saw_images} with images in the cache",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_crash_at_every_fault_point_leaves_a_sound_cache() {
    fixtures();
    let reg = registry();
    push(&reg, "rich:rich", "team/rich:1", false);
    push(&reg, "multiarch:multi", "team/multi:1", true);
    for point in microsandbox::testing::POINTS {
        let h = home();
        let status = child(&h, &reg.addr, Some(point)).status().unwrap();
        // The child died at the point (SIGABRT), not by finishing.
        assert!(
            !status.success(),
            "{point}: the child never reached the point"
        );
        assert_sound(&h, point);
        // A retry of the interrupted work succeeds.
        h.load("rich");
        h.backend
            .pull_image(&format!("{}/team/rich:1", reg.addr), &Default::default())
            .unwrap();
        assert_sound(&h, point);
        assert_prune_sweeps(&h, point);
    }
}
