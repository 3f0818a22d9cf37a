//! Bench-only programs for `bench/erofs.mjs`:
//!
//! - `erofs-anchor floor IN OUT [--no-sync]`: reads IN and writes the same
//!   bytes to OUT in 1 MiB pieces, then fsyncs OUT: the least any tar ->
//!   image writer does.
//! - `erofs-anchor erofs IN.tar OUT.erofs [--no-sync]`: this repository's
//!   writer (`erofs::Builder::build`), then an fsync of OUT.
//! - `erofs-anchor msb IN.tar OUT.erofs SPOOL`: microsandbox's own writer,
//!   `microsandbox_image::tar::ingest_compressed_tar` (uncompressed, with a
//!   spool file for large files) then `microsandbox_image::erofs::write_erofs`,
//!   then an fsync of OUT.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["floor", input, output] => floor(input, output, true),
        ["floor", input, output, "--no-sync"] => floor(input, output, false),
        ["erofs", input, output] => ours(input, output, true),
        ["erofs", input, output, "--no-sync"] => ours(input, output, false),
        ["msb", input, output, spool] => msb(input, output, spool),
        _ => {
            eprintln!("usage: erofs-anchor floor|erofs IN OUT [--no-sync] | msb IN.tar OUT.erofs SPOOL");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erofs-anchor: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn ours(input: &str, output: &str, sync: bool) -> Res {
    let mut o = File::create(output)?;
    erofs::Builder::new().build(File::open(input)?, &mut o)?;
    if sync {
        o.sync_all()?;
    }
    Ok(())
}

fn floor(input: &str, output: &str, sync: bool) -> Res {
    let mut i = File::open(input)?;
    let mut o = File::create(output)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = i.read(&mut buf)?;
        if n == 0 {
            break;
        }
        o.write_all(&buf[..n])?;
    }
    if sync {
        o.sync_all()?;
    }
    Ok(())
}

fn msb(input: &str, output: &str, spool: &str) -> Res {
    use microsandbox_image::tar::{ingest_compressed_tar, Compression};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let f = tokio::fs::File::open(input).await.map_err(|e| e.to_string())?;
        let limits = microsandbox_image::tree::ResourceLimits {
            max_total_size: u64::MAX,
            max_file_size: u64::MAX,
            max_entry_count: u64::MAX,
            ..Default::default()
        };
        ingest_compressed_tar(f, Compression::None, &limits, Some(Path::new(spool)))
            .await
            .map_err(|e| format!("ingest: {e}"))
    })?;
    microsandbox_image::erofs::write_erofs(&result.tree, Path::new(output))
        .map_err(|e| format!("write_erofs: {e}"))?;
    File::open(output)?.sync_all()?;
    Ok(())
}
