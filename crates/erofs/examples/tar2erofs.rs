//! `tar2erofs IN.tar OUT.erofs`: an EROFS layer image of an uncompressed
//! tar (`-` reads standard input), like `mkfs.erofs --tar=f --aufs OUT IN`.
//! The output appears only when the build succeeded, fsynced.
//!
//! The data area is written front to back, so each finished piece of it
//! is handed to the kernel's writeback as the build goes on
//! (`sync_file_range`, without waiting): the disk writes while the tar is
//! still being read, and the fsync at the end waits for the tail only.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
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
    let mut out = Writeback::new(File::create(&tmp)?);
    let built = if input == "-" {
        erofs::Builder::new().build(io::stdin().lock(), &mut out)
    } else {
        erofs::Builder::new().build(File::open(input)?, &mut out)
    };
    let info = match built.and_then(|i| out.file.sync_all().map(|_| i).map_err(Into::into)) {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, output)?;
    Ok(info)
}

/// How much written data is handed to writeback at a time.
const STEP: u64 = 8 << 20;
/// How many steps may be under writeback before the oldest is waited for
/// and dropped from the page cache.
const DEPTH: usize = 4;

/// A file whose sequential writes are handed to writeback every [`STEP`]
/// bytes. Once more than [`DEPTH`] steps are in flight, the oldest is
/// waited for and its (now clean) pages dropped from the page cache: the
/// image occupies a few dozen MiB of memory, not its size, and its later
/// writes reuse pages just freed instead of taking them from other files'
/// cache. Writes after a seek start a new run from there; what is not
/// handed over (the metadata, the superblock) the final fsync writes, and
/// the fsync is what makes the whole image durable.
struct Writeback {
    file: File,
    /// Where the next write goes.
    pos: u64,
    /// The start of what has been written but not handed over.
    from: u64,
    /// Ranges under writeback, oldest first.
    flight: std::collections::VecDeque<(u64, u64)>,
}

impl Writeback {
    fn new(file: File) -> Writeback {
        Writeback {
            file,
            pos: 0,
            from: 0,
            flight: Default::default(),
        }
    }

    fn hand_over(&mut self) {
        if self.pos > self.from {
            let range = (self.from, self.pos - self.from);
            start_writeback(&self.file, range.0, range.1);
            self.flight.push_back(range);
        }
        self.from = self.pos;
        while self.flight.len() > DEPTH {
            let (at, len) = self.flight.pop_front().expect("a range in flight");
            wait_and_drop(&self.file, at, len);
        }
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        if self.pos - self.from >= STEP {
            self.hand_over();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Writeback {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.hand_over();
        self.pos = self.file.seek(to)?;
        self.from = self.pos;
        Ok(self.pos)
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk,
/// without waiting for them.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    sync_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE);
}

/// Waits until `len` bytes at `offset` are on disk, then drops them from
/// the page cache.
#[cfg(target_os = "linux")]
fn wait_and_drop(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    let all = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    if sync_range(file, offset, len, all) {
        // SAFETY: advice on a descriptor this File owns; the pages are
        // clean, so dropping them loses nothing.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as i64,
                len as i64,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

/// `sync_file_range`; false when it failed (the fsync at the end still
/// writes everything).
#[cfg(target_os = "linux")]
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> bool {
    use std::os::unix::io::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return false;
    };
    // SAFETY: a call on a descriptor this File owns, no memory passed.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(not(target_os = "linux"))]
fn wait_and_drop(_file: &File, _offset: u64, _len: u64) {}
