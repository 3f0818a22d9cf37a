//! An allocator for a process that embeds the cache: Rust's allocations of
//! 256 KiB and more are pages of their own, mapped from the kernel and given
//! back the moment they are freed; everything smaller is the system
//! allocator's.
//!
//! The large ones are mostly short-lived: the bytes of `index.json` while
//! it is parsed, the entries of a view while they are collected, a
//! census's tables while they grow. glibc maps such blocks too, but once
//! one is freed it raises its mapping threshold to that size, and from
//! then on serves blocks of up to a few megabytes from its per-thread
//! heaps, which keep the pages after a free: a list and a disk usage on a
//! cache of 10,000 references left several MiB of such pages resident in
//! each heap. A growing table
//! moves with `mremap`, so its growth copies nothing.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks from this size up are mapped pages of their own (glibc's own
/// threshold before it starts raising it is 128 KiB).
pub const LARGE: usize = 256 << 10;

/// The allocator (`#[global_allocator]` of the Node addon).
#[derive(Debug, Default, Clone, Copy)]
pub struct LargeInPages;

fn is_large(size: usize, align: usize) -> bool {
    // A mapping is aligned to the page, at least 4 KiB.
    cfg!(target_os = "linux") && size >= LARGE && align <= 4096
}

#[cfg(target_os = "linux")]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address the kernel picks;
    // no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

#[cfg(not(target_os = "linux"))]
fn map(_size: usize) -> *mut u8 {
    unreachable!("is_large is false off Linux")
}

// SAFETY: every block is either the system allocator's (small, or aligned
// past a page) or a mapping of exactly its size; which one is decided by
// the layout alone, which Rust passes back unchanged to `dealloc` and
// `realloc`, so a block always goes back the way it came.
unsafe impl GlobalAlloc for LargeInPages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            // Fresh anonymous pages read as zeros.
            map(layout.size())
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            #[cfg(target_os = "linux")]
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by
            // `map` (the same layout decided it), unmapped once.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let was = is_large(layout.size(), layout.align());
        let will = is_large(new_size, layout.align());
        match (was, will) {
            // SAFETY: the caller's contract, passed on.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            #[cfg(target_os = "linux")]
            (true, true) => {
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes; the
                // kernel moves or grows it whole, or fails and leaves it.
                let p = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            _ => {
                // SAFETY: the alignment is the old layout's, valid; the
                // size is the caller's, non-zero by contract.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: as above; the old block is read before it is
                // freed, and only its first `min` bytes.
                unsafe {
                    let p = self.alloc(new_layout);
                    if !p.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    p
                }
            }
        }
    }
}

/// How long an operation runs before [`after_operation`] gives the free
/// memory of every heap back: only operations that long (a list that
/// builds its view, disk usage, prune) make megabytes of short-lived
/// blocks; a trim takes 0.2-0.6 ms on a cache of 10,000 references, and
/// runs after the answer.
pub const TRIM_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// Called when an operation of `took` has ended: after a long one, has
/// the free pages of every malloc heap handed back to the kernel (off the
/// caller's path, see [`crate::util::tidy`]). glibc keeps a heap per
/// thread and keeps the pages a thread freed; the thread pool's threads
/// take turns, so each heap would hold its own copy of the last large
/// operation's garbage.
pub fn after_operation(took: std::time::Duration) {
    if took >= TRIM_AFTER {
        crate::util::tidy::trim_later();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn blocks_keep_their_bytes_across_every_kind_of_growth() {
        let a = LargeInPages;
        // Small -> small -> large -> larger -> small, checking the bytes
        // written first survive each move.
        let sizes = [64, 4096, LARGE + 1, 3 * LARGE + 17, 100];
        // SAFETY: each block is used within its size and freed once.
        unsafe {
            let mut p = a.alloc(layout(sizes[0]));
            assert!(!p.is_null());
            for i in 0..64 {
                *p.add(i) = i as u8;
            }
            for w in sizes.windows(2) {
                p = a.realloc(p, layout(w[0]), w[1]);
                assert!(!p.is_null());
                for i in 0..64 {
                    assert_eq!(*p.add(i), i as u8, "growth {} -> {}", w[0], w[1]);
                }
                // The whole new block is writable.
                *p.add(w[1] - 1) = 0xAB;
            }
            a.dealloc(p, layout(*sizes.last().unwrap()));
        }
    }

    #[test]
    fn large_zeroed_blocks_are_zero_and_page_aligned() {
        let a = LargeInPages;
        let l = Layout::from_size_align(LARGE, 4096).unwrap();
        // SAFETY: read within the block, freed once with its layout.
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % 4096, 0);
            assert!((0..LARGE).step_by(4093).all(|i| *p.add(i) == 0));
            a.dealloc(p, l);
        }
        // Past a page of alignment, the system allocator's.
        assert!(!is_large(LARGE, 8192));
        assert!(!is_large(LARGE - 1, 8));
    }
}
