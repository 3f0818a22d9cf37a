//! Progress of long operations (load now; pull later), reported to a
//! callback the caller gives.
//!
//! The callback runs on the worker thread doing the work and must not
//! block; the Node binding hands each event to a threadsafe function in
//! non-blocking mode. Byte counts are reported every [`STEP`] bytes and at
//! the end of each stream, never per read.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

/// How many bytes pass between two events of one stream.
pub const STEP: u64 = 8 << 20;

/// What a load is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading an archive (bytes of the archive file).
    Read,
    /// Writing one blob into `tmp/`, hashing it (bytes of that blob).
    Write,
    /// Decompressing a gzip layer to check its diff_id (compressed bytes).
    Verify,
    /// Committing verified blobs and references (bytes committed).
    Commit,
}

impl Phase {
    /// `read`, `write` or `commit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Write => "write",
            Phase::Verify => "verify",
            Phase::Commit => "commit",
        }
    }
}

/// One progress event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub phase: Phase,
    /// The blob concerned, for [`Phase::Write`].
    pub digest: Option<String>,
    /// Bytes done so far in this phase (of this blob, for `Write`).
    pub bytes: u64,
    /// Bytes in all, when known.
    pub total_bytes: Option<u64>,
}

/// A progress callback.
#[derive(Clone)]
pub struct ProgressFn(Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressFn {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&Progress) + Send + Sync + 'static) -> ProgressFn {
        ProgressFn(Arc::new(f))
    }

    /// Reports one event.
    pub fn report(&self, event: &Progress) {
        (self.0)(event)
    }
}

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn")
    }
}

/// A reader that reports the bytes read through it.
pub struct ProgressReader<R> {
    inner: R,
    progress: Option<ProgressFn>,
    event: Progress,
    next: u64,
    done: bool,
}

impl<R> ProgressReader<R> {
    /// Reports `phase` events for `inner` to `progress`, if any.
    pub fn new(
        inner: R,
        progress: Option<ProgressFn>,
        phase: Phase,
        digest: Option<String>,
        total_bytes: Option<u64>,
    ) -> Self {
        ProgressReader {
            inner,
            progress,
            event: Progress {
                phase,
                digest,
                bytes: 0,
                total_bytes,
            },
            next: STEP,
            done: false,
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            self.event.bytes += n as u64;
            let finished = n == 0 && !self.done;
            if self.event.bytes >= self.next || finished {
                self.next = self.event.bytes + STEP;
                self.done |= n == 0;
                p.report(&self.event);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn reports_every_step_and_once_at_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = ProgressFn::new(move |e| s.lock().unwrap().push(e.bytes));
        let data = vec![0u8; (STEP * 2 + 5) as usize];
        let mut r = ProgressReader::new(
            &data[..],
            Some(p),
            Phase::Read,
            None,
            Some(data.len() as u64),
        );
        io::copy(&mut r, &mut io::sink()).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.last(), Some(&(data.len() as u64)));
        assert_eq!(seen.iter().filter(|&&b| b == data.len() as u64).count(), 1);
        assert!(seen.len() >= 3, "{seen:?}");
    }
}
