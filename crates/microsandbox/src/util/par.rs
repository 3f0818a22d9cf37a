//! A small helper to run blocking work on a few threads: unlinks and
//! fsyncs spend their time waiting in the kernel, and decompression uses
//! the cores a single stream leaves idle.

use crate::error::MicrosandboxResult;

/// Runs `f` over `items` on up to 8 threads, in order of `items`; the first
/// error wins. Unlinks on a synced file system spend most of their time
/// waiting in the kernel (journal, discard), so a handful in flight at once
/// finish two to three times sooner.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> MicrosandboxResult<R> + Sync,
) -> MicrosandboxResult<Vec<R>> {
    const THREADS: usize = 8;
    const MIN_PER_THREAD: usize = 64;
    let threads = (items.len() / MIN_PER_THREAD).clamp(1, THREADS);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<MicrosandboxResult<Vec<R>>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for w in workers {
            out.extend(w.join().expect("a sweep thread panicked")?);
        }
        Ok(out)
    })
}

/// How many threads this process may run at once, as the system said
/// the first time it was asked (it reads `/sys` and the cgroup's quota:
/// three system calls that every inspect paid); `None` if it could not
/// tell. Kept for the life of the process: a later change of the CPU
/// quota or affinity is not seen.
pub fn cores() -> Option<usize> {
    static CORES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().ok().map(|n| n.get()))
}

/// Runs `f` over `items` on the machine's cores (up to 8), in order of
/// `items`, for CPU work on many small items (parsing 10,000 index
/// entries); fewer than 1,024 items per core run on the caller's thread.
pub fn on_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const MIN_PER_THREAD: usize = 1024;
    let cores = cores().map_or(1, |n| n.min(8));
    let threads = (items.len() / MIN_PER_THREAD).clamp(1, cores);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    // Each thread writes its results straight into its own stretch of the
    // output: no per-thread vectors to allocate and copy.
    let mut out: Vec<R> = Vec::with_capacity(items.len());
    std::thread::scope(|scope| {
        let slots = &mut out.spare_capacity_mut()[..items.len()];
        let mut parts = items.chunks(chunk).zip(slots.chunks_mut(chunk));
        let first = parts.next();
        let f = &f;
        let workers: Vec<_> = parts
            .map(|(part, slots)| scope.spawn(move || fill(part, slots, f)))
            .collect();
        if let Some((part, slots)) = first {
            fill(part, slots, f);
        }
        for w in workers {
            w.join().expect("a parsing thread panicked");
        }
    });
    // SAFETY: the chunks of `items` and of the first `items.len()` slots
    // pair up one to one, and every chunk was filled whole: a panic in any
    // thread leaves the scope (and this function) before this line, the
    // results written so far leaked, never read.
    unsafe { out.set_len(items.len()) };
    out
}

fn fill<T, R>(items: &[T], slots: &mut [std::mem::MaybeUninit<R>], f: &impl Fn(&T) -> R) {
    for (item, slot) in items.iter().zip(slots) {
        slot.write(f(item));
    }
}

/// Runs `f` over `items` on `threads` threads that take the next item as
/// they finish one (items of very different lengths, such as downloads);
/// results come in order of `items`. After the first error no new item
/// starts, and that error is returned.
pub fn queue<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> MicrosandboxResult<R> + Sync,
) -> MicrosandboxResult<Vec<R>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<MicrosandboxResult<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                if failed.load(Ordering::Acquire) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::AcqRel);
                let Some(item) = items.get(i) else { return };
                let r = f(item);
                if r.is_err() {
                    failed.store(true, Ordering::Release);
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    // The first error in the order of items, among those that ran.
    let mut out = Vec::with_capacity(items.len());
    let mut first_err = None;
    for r in results {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorKind, MicrosandboxError};

    #[test]
    fn on_cores_keeps_the_order_of_every_length() {
        // Around the thread threshold and an uneven last chunk; owned
        // results, so a slot written twice or never would show.
        for n in [0, 1, 1023, 1024, 2048, 2049, 5001] {
            let items: Vec<usize> = (0..n).collect();
            let out = on_cores(&items, |i| format!("item {i}"));
            assert_eq!(out.len(), n);
            assert!(out
                .iter()
                .enumerate()
                .all(|(i, s)| *s == format!("item {i}")));
        }
    }

    #[test]
    fn a_queue_keeps_the_order_and_stops_at_an_error() {
        let items: Vec<u64> = (0..50).collect();
        let out = queue(&items, 4, |&i| {
            std::thread::sleep(std::time::Duration::from_millis(50 - i));
            Ok(i * 2)
        })
        .unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let err = queue(&items, 2, |&i| {
            ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            if i == 3 {
                Err(MicrosandboxError::new(ErrorKind::Busy, "three"))
            } else {
                Ok(i)
            }
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst) < 10);
    }
}
