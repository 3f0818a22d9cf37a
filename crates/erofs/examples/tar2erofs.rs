//! `tar2erofs IN.tar OUT.erofs`: an EROFS layer image of an uncompressed
//! tar (`-` reads standard input), like `mkfs.erofs --tar=f --aufs OUT IN`.
//! The output appears only when the build succeeded.

use std::fs::File;
use std::io;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = &args[..] else {
        eprintln!("usage: tar2erofs IN.tar|- OUT.erofs");
        return ExitCode::from(2);
    };
    match run(input, output) {
        Ok(info) => {
            println!("{output}: {} blocks, {} inodes", info.blocks, info.inodes);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tar2erofs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &str, output: &str) -> erofs::Result<erofs::ImageInfo> {
    let tmp = format!("{output}.partial");
    let mut out = File::create(&tmp)?;
    let built = if input == "-" {
        erofs::Builder::new().build(io::stdin().lock(), &mut out)
    } else {
        erofs::Builder::new().build(File::open(input)?, &mut out)
    };
    let info = match built.and_then(|i| out.sync_all().map(|_| i).map_err(Into::into)) {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, output)?;
    Ok(info)
}
