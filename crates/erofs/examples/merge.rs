//! `merge [--vmdk OUT.vmdk] FSMETA.erofs L0.erofs [L1.erofs ...]`: the
//! merged metadata-only image of layer images (bottom first) and, with
//! `--vmdk`, the descriptor of one disk of the fsmeta followed by the
//! layers, its paths relative to the descriptor; like `mkfs.erofs` in its
//! rebuild mode with `--vmdk-desc`. Each layer's device tag is its file name
//! (cut to 64 bytes). Outputs appear only when all succeeded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut vmdk = None;
    if args.first().map(String::as_str) == Some("--vmdk") && args.len() > 1 {
        vmdk = Some(PathBuf::from(args.remove(1)));
        args.remove(0);
    }
    if args.len() < 2 || args.iter().any(|a| a.starts_with("--")) {
        eprintln!("usage: merge [--vmdk OUT.vmdk] FSMETA.erofs L0.erofs [L1.erofs ...]");
        return ExitCode::from(2);
    }
    let fsmeta = PathBuf::from(&args[0]);
    let layers: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
    match run(&fsmeta, &layers, vmdk.as_deref()) {
        Ok(info) => {
            println!(
                "{}: {} blocks, {} inodes, {} layers",
                fsmeta.display(),
                info.blocks,
                info.inodes,
                info.devices.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("merge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn run(fsmeta: &Path, layers: &[PathBuf], vmdk: Option<&Path>) -> erofs::Result<erofs::ImageInfo> {
    let files = layers
        .iter()
        .map(File::open)
        .collect::<Result<Vec<_>, _>>()?;
    let mut m = erofs::Merger::new();
    for (path, file) in layers.iter().zip(&files) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tag = &name.as_bytes()[..name.len().min(64)];
        m.add_layer(file, tag)?;
    }
    let tmp = with_suffix(fsmeta, ".partial");
    let mut out = File::create(&tmp)?;
    let info = match m
        .finish(&mut out)
        .and_then(|i| Ok(out.sync_all().map(|_| i)?))
    {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Some(vmdk) = vmdk {
        let dir = absolute(vmdk.parent().unwrap_or(Path::new("")))?;
        let mut disk = vec![erofs::vmdk::File {
            path: erofs::vmdk::relative_path(&dir, &absolute(fsmeta)?),
            size: info.size_bytes(),
        }];
        for (path, file) in layers.iter().zip(&files) {
            disk.push(erofs::vmdk::File {
                path: erofs::vmdk::relative_path(&dir, &absolute(path)?),
                size: file.metadata()?.len(),
            });
        }
        let text = erofs::vmdk::descriptor(&disk)?;
        let vtmp = with_suffix(vmdk, ".partial");
        std::fs::write(&vtmp, text)?;
        std::fs::rename(&vtmp, vmdk)?;
    }
    std::fs::rename(&tmp, fsmeta)?;
    Ok(info)
}

fn absolute(p: &Path) -> erofs::Result<PathBuf> {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    Ok(std::path::absolute(p)?)
}
