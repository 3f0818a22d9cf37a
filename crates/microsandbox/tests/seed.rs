//! The code of microsandbox's Rust SDK page for images
//! (`../shared/seeds/microsandbox-rust-image-api.txt`), block by block and
//! verbatim, inside the async functions the page's `?` needs: it must
//! compile against this crate, and it runs on a real cache that holds
//! `python:3.12` and `old:tag`.

mod common;

use common::*;
use microsandbox::MicrosandboxResult;

// "use microsandbox::{Image, ImagePruneReport};"
#[allow(unused_imports)]
use microsandbox::{Image, ImagePruneReport};

async fn typical_flow() -> MicrosandboxResult<()> {
    use microsandbox::Image;

    for image in Image::list().await? {
        println!("{} ({} layers)", image.reference(), image.layer_count());
    }

    let detail = Image::inspect("python:3.12").await?;
    println!(
        "{:?}",
        detail
            .config
            .as_ref()
            .and_then(|c| c.working_dir.as_deref())
    );

    let report = Image::prune().await?;
    println!("removed {} refs", report.image_refs_removed);
    Ok(())
}

async fn get() -> MicrosandboxResult<()> {
    let image = Image::get("python:3.12").await?;
    println!("{:?}", image.manifest_digest());
    Ok(())
}

async fn list() -> MicrosandboxResult<()> {
    for image in Image::list().await? {
        println!("{}", image.reference());
    }
    Ok(())
}

async fn inspect() -> MicrosandboxResult<()> {
    let detail = Image::inspect("python:3.12").await?;
    for layer in &detail.layers {
        println!("{} {}", layer.position, layer.diff_id);
    }
    Ok(())
}

async fn remove() -> MicrosandboxResult<()> {
    Image::remove("old:tag", false).await?;
    Ok(())
}

async fn prune() -> MicrosandboxResult<()> {
    let report = Image::prune().await?;
    println!("{:?}", report.bytes_reclaimed);
    Ok(())
}

async fn explicit_local() -> MicrosandboxResult<()> {
    use microsandbox::{Image, LocalBackend};

    let backend = LocalBackend::builder()
        .home("/tmp/msb-home")
        .build()
        .await?;

    let image = Image::get_local(&backend, "python:3.12").await?;
    let images = Image::list_local(&backend).await?;
    let detail = Image::inspect_local(&backend, image.reference()).await?;
    Image::remove_local(&backend, detail.handle.reference(), false).await?;
    let report = Image::prune_local(&backend).await?;
    let _ = (images, report);
    Ok(())
}

/// Fills `backend`'s home with `python:3.12` and `old:tag` (the rich and
/// pair/app fixtures under those names).
fn seed(backend: &microsandbox::LocalBackend, scratch: &std::path::Path) {
    for (fixture, name) in [("rich", "python:3.12"), ("pair", "old:tag")] {
        let options = microsandbox::LoadOptions {
            reference: Some(name.parse().unwrap()),
            ..Default::default()
        };
        let src = if fixture == "pair" {
            // A single-image source for the rename: the app image alone.
            let dir = scratch.join("app-only");
            std::process::Command::new("skopeo")
                .args(["copy", "--insecure-policy"])
                .arg(format!("oci:{}:app", fixtures().join("pair").display()))
                .arg(format!("oci:{}:x", dir.display()))
                .status()
                .unwrap();
            dir
        } else {
            fixtures().join(fixture)
        };
        backend.load_images(&src, &options).unwrap();
    }
}

/// A fresh temporary home, seeded, and made the ambient one.
fn ambient() -> Home {
    let h = home();
    seed(&h.backend, h.dir.path());
    // The ambient calls read MSB_HOME at each call; this binary's tests
    // run one after another (a single test).
    std::env::set_var("MSB_HOME", h.dir.path());
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_pages_code_runs_on_a_real_cache() {
    let h = ambient();
    typical_flow().await.unwrap();
    // The page's prune took every reference no sandbox uses.
    assert!(h.refs().is_empty());

    let h = ambient();
    get().await.unwrap();
    list().await.unwrap();
    inspect().await.unwrap();
    remove().await.unwrap();
    assert_eq!(h.refs(), ["python:3.12"]);
    prune().await.unwrap();
    assert!(h.refs().is_empty());

    // The explicit variants, on the page's own home.
    let fixed = std::path::Path::new("/tmp/msb-home");
    let _ = std::fs::remove_dir_all(fixed);
    let scratch = tempfile::tempdir().unwrap();
    let backend = microsandbox::LocalBackend::builder()
        .home(fixed)
        .build_blocking()
        .unwrap();
    seed(&backend, scratch.path());
    explicit_local().await.unwrap();
    let left: Vec<String> = backend
        .list_images()
        .unwrap()
        .iter()
        .map(|i| i.reference().to_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(fixed).unwrap();
}
