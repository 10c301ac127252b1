//! The node's memory allocator: mimalloc, asked the way Rust's own `System` allocator asks malloc.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`. In mimalloc 3, once the page of a size
//! runs out of free blocks, that call serves a size that is not a power of two (96 bytes at alignment 8, say) by
//! over-allocating from the next size class, so the size's own page is never refilled and every later
//! allocation of it takes the same slow path (microsoft/mimalloc#889): about 180 instructions instead of 25, a
//! little over one allocation per request on a cluster node under `SET -P 16` (callgrind, gdb on
//! `mi_theap_malloc_zero_aligned_at_overalloc`). Plain `mi_malloc` already aligns every block to 16 bytes, or to
//! its size if smaller (on 64-bit targets its size classes are multiples of 16 from 16 bytes up; the test below
//! checks it wherever it runs), so layouts within that go there; larger alignments keep going to
//! `mi_malloc_aligned`. No crate offers this.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{mi_free, mi_malloc, mi_realloc, mi_zalloc};
use mimalloc::MiMalloc;

/// The alignment `mi_malloc` gives any block of at least that many bytes (C's `max_align_t`).
const MALLOC_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module doc).
pub struct Allocator;

impl Allocator {
    /// Whether `mi_malloc` of `size` bytes is aligned enough for `align`.
    fn malloc_aligns(align: usize, size: usize) -> bool {
        align <= MALLOC_ALIGN && align <= size
    }
}

// SAFETY: each call is mimalloc's, for a layout it aligns as asked (see `malloc_aligns`); every block, however
// allocated, is freed by `mi_free`, which takes any pointer mimalloc returned.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::malloc_aligns(layout.align(), layout.size()) {
            // SAFETY: a plain allocation; the caller's contract (non-zero size) is passed on.
            unsafe { mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract is passed on.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::malloc_aligns(layout.align(), layout.size()) {
            // SAFETY: as `alloc`.
            unsafe { mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract is passed on.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::malloc_aligns(layout.align(), new_size) {
            // SAFETY: `ptr` came from mimalloc; the block it returns is aligned as `alloc`'s.
            unsafe { mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            // SAFETY: the caller's contract is passed on.
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size from 1 to 3 KiB at every alignment from 1 to 256, allocated, zeroed, grown and shrunk many times
    /// over (so pages run out and refill): each block is aligned as asked and holds what was written.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let allocator = Allocator;
        for align in (0..=8).map(|shift| 1usize << shift) {
            for size in (1..3072).step_by(7) {
                let layout = Layout::from_size_align(size, align).expect("a layout");
                let blocks: Vec<*mut u8> = (0..40)
                    .map(|i| {
                        // SAFETY: a non-zero size; each block is freed below with its layout.
                        let block = unsafe {
                            match i % 2 {
                                0 => allocator.alloc(layout),
                                _ => allocator.alloc_zeroed(layout),
                            }
                        };
                        assert!(!block.is_null());
                        assert_eq!(block as usize % align, 0, "size {size}, align {align}");
                        if i % 2 == 1 {
                            // SAFETY: `size` bytes were allocated at `block`.
                            assert!(unsafe { std::slice::from_raw_parts(block, size) }
                                .iter()
                                .all(|&b| b == 0));
                        }
                        // SAFETY: as above.
                        unsafe { block.write_bytes(i as u8, size) };
                        block
                    })
                    .collect();
                for (i, block) in blocks.into_iter().enumerate() {
                    let new_size = if i % 3 == 0 { size * 2 + 1 } else { size.div_ceil(2) };
                    // SAFETY: `block` came from `alloc` with `layout`; `new_size` is non-zero.
                    let moved = unsafe { allocator.realloc(block, layout, new_size) };
                    assert_eq!(moved as usize % align, 0, "realloc to {new_size}, align {align}");
                    // SAFETY: the first `min(size, new_size)` bytes were kept.
                    let kept = unsafe { std::slice::from_raw_parts(moved, size.min(new_size)) };
                    assert!(
                        kept.iter().all(|&b| b == i as u8),
                        "size {size} → {new_size}, align {align}"
                    );
                    let new_layout = Layout::from_size_align(new_size, align).expect("a layout");
                    // SAFETY: `moved` is this allocator's, of `new_layout`.
                    unsafe { allocator.dealloc(moved, new_layout) };
                }
            }
        }
    }
}
