//! Work an operation leaves for after its answer: freeing a view it
//! replaced, handing free heap pages back to the kernel.
//!
//! Freeing the 10,000 entries of a replaced catalog and trimming the heaps
//! take a few milliseconds that no caller waits for, so one thread of the
//! process does them, in the order they were asked for, while the caller
//! already has its answer (on two cores, while Node converts it).

use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;

enum Job {
    Drop(Box<dyn Send>),
    Trim,
    #[cfg(test)]
    Signal(Sender<()>),
}

fn run(job: Job) {
    match job {
        Job::Drop(value) => drop(value),
        Job::Trim => trim_now(),
        #[cfg(test)]
        Job::Signal(done) => {
            let _ = done.send(());
        }
    }
}

/// Hands `job` to the tidying thread, or does it here when that thread
/// cannot be started (the process is out of threads).
fn submit(job: Job) {
    static QUEUE: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("microsandbox-tidy".into())
            .spawn(move || rx.into_iter().for_each(run))
            .ok()
            .map(|_| tx)
    });
    let job = match queue {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            Err(back) => back.0,
        },
        None => job,
    };
    run(job);
}

/// Frees `value` off the caller's path.
pub fn drop_later<T: Send + 'static>(value: T) {
    submit(Job::Drop(Box::new(value)));
}

/// Gives the free pages of every malloc heap back to the kernel, off the
/// caller's path (after whatever was handed to [`drop_later`] before).
pub fn trim_later() {
    submit(Job::Trim);
}

fn trim_now() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    struct Tells(Sender<std::thread::ThreadId>);
    impl Drop for Tells {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn a_value_is_freed_on_another_thread_in_the_order_asked() {
        let (tx, rx) = channel();
        let shared = Arc::new(());
        let held = shared.clone();
        drop_later(Tells(tx));
        drop_later(held);
        trim_later();
        let (done, finished) = channel();
        submit(Job::Signal(done));
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the tidying thread runs its jobs");
        let freed_on = rx
            .try_recv()
            .expect("the value was dropped before the signal");
        assert_ne!(freed_on, std::thread::current().id());
        assert_eq!(
            Arc::strong_count(&shared),
            1,
            "the second value was dropped too"
        );
    }
}
