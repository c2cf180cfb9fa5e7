//! A counting global allocator for the allocation tests: counts allocations (and
//! reallocations) made on the calling thread ([`on_this_thread`]) or anywhere in the process
//! ([`in_process`]) while a closure runs. Each test binary that uses it declares it as its
//! global allocator:
//!
//! ```ignore
//! #[path = "support/counting.rs"]
//! mod counting;
//! #[global_allocator]
//! static ALLOCATOR: counting::Counting = counting::Counting;
//! ```
#![allow(dead_code)] // each test file uses one of the two counts

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct Counting;

thread_local! {
    static THREAD_COUNTING: Cell<bool> = const { Cell::new(false) };
    static THREAD_COUNT: Cell<u64> = const { Cell::new(0) };
}

static PROCESS_COUNTING: AtomicBool = AtomicBool::new(false);
static PROCESS_COUNT: AtomicU64 = AtomicU64::new(0);

fn note_allocation() {
    if PROCESS_COUNTING.load(Ordering::Relaxed) {
        PROCESS_COUNT.fetch_add(1, Ordering::Relaxed);
    }
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = THREAD_COUNTING.try_with(|on| {
        if on.get() {
            let _ = THREAD_COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// `GlobalAlloc` contract; the only additions are counters that never allocate (an atomic and
// const-initialised thread-local `Cell`s).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Allocations made on this thread while `f` runs.
pub fn on_this_thread(f: impl FnOnce()) -> u64 {
    THREAD_COUNT.with(|n| n.set(0));
    THREAD_COUNTING.with(|on| on.set(true));
    f();
    THREAD_COUNTING.with(|on| on.set(false));
    THREAD_COUNT.with(|n| n.get())
}

/// Allocations made by any thread of the process while `f` runs.
pub fn in_process(f: impl FnOnce()) -> u64 {
    PROCESS_COUNT.store(0, Ordering::SeqCst);
    PROCESS_COUNTING.store(true, Ordering::SeqCst);
    f();
    PROCESS_COUNTING.store(false, Ordering::SeqCst);
    PROCESS_COUNT.load(Ordering::SeqCst)
}
