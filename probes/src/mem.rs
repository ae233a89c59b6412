//! Zero-filled tables whose memory the OS backs only where they are written.
//!
//! The agent's task table is sized for `max_tasks` up front (the hooks must never allocate), but an app with
//! few tasks should not pay for the capacity. A plain `alloc_zeroed` of cache-line-aligned entries does not
//! give that: the global allocator can only `calloc` at 16-byte alignment, so for 64-byte alignment it
//! allocates and then *writes* zeroes over every page. Anonymous `mmap` memory is zero-filled by the kernel
//! and page-aligned, and a page becomes resident only when first written.

use std::ops::Deref;
use std::ptr::NonNull;

/// A fixed-length slice of `T`, zero-initialized, backed by anonymous memory mapped on demand.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let t = loopscope_probes::mem::ZeroedSlice::<AtomicU64>::new(1 << 20);
/// assert_eq!(t.len(), 1 << 20);
/// t[12345].store(7, Ordering::Relaxed);
/// assert_eq!(t[12345].load(Ordering::Relaxed) + t[0].load(Ordering::Relaxed), 7);
/// ```
pub struct ZeroedSlice<T: bytemuck::Zeroable> {
    ptr: NonNull<T>,
    len: usize,
    /// Bytes mapped (0 when the slice came from the global allocator, see `new`).
    mapped: usize,
    /// The fallback allocation when mapping failed.
    fallback: Option<Box<[T]>>,
}

// SAFETY: a ZeroedSlice owns its elements like a Box<[T]> does; sending or sharing it is sound exactly when
// it is for T.
unsafe impl<T: bytemuck::Zeroable + Send> Send for ZeroedSlice<T> {}
// SAFETY: as above; `&ZeroedSlice<T>` only gives out `&T`.
unsafe impl<T: bytemuck::Zeroable + Sync> Sync for ZeroedSlice<T> {}

impl<T: bytemuck::Zeroable> ZeroedSlice<T> {
    /// `len` zeroed elements. Falls back to the global allocator (memory resident at once) if mapping fails
    /// or `T` needs more than page alignment.
    pub fn new(len: usize) -> Self {
        let size = std::mem::size_of::<T>().checked_mul(len).filter(|&s| s > 0);
        if let Some(size) = size
            && std::mem::align_of::<T>() <= 4096
        {
            // SAFETY: an anonymous private mapping with no address hint has no preconditions; failure is
            // MAP_FAILED, checked below.
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
            if p != libc::MAP_FAILED
                && let Some(ptr) = NonNull::new(p.cast::<T>())
            {
                return ZeroedSlice { ptr, len, mapped: size, fallback: None };
            }
        }
        let mut fallback: Box<[T]> = bytemuck::allocation::zeroed_slice_box(len);
        let ptr = NonNull::new(fallback.as_mut_ptr()).unwrap_or(NonNull::dangling());
        ZeroedSlice { ptr, len, mapped: 0, fallback: Some(fallback) }
    }
}

impl<T: bytemuck::Zeroable> Deref for ZeroedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        if let Some(f) = &self.fallback {
            return f;
        }
        // SAFETY: `ptr` points to `mapped` bytes we mapped read-write, page-aligned (so aligned for T, checked
        // in `new`), holding `len` elements that are valid as all-zero bytes (`T: Zeroable`); the mapping
        // lives until `drop`, and we only hand out shared references.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: bytemuck::Zeroable> Drop for ZeroedSlice<T> {
    fn drop(&mut self) {
        if self.mapped > 0 {
            // Elements are not dropped: the tables hold atomics and plain integers (no Drop), and Zeroable
            // types in general may not rely on drop for safety.
            // SAFETY: unmaps exactly the region `new` mapped; no reference into it outlives `&self`.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.mapped);
            }
        }
    }
}

impl<T: bytemuck::Zeroable> std::fmt::Debug for ZeroedSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroedSlice").field("len", &self.len).field("mapped", &self.mapped).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn rss_kb() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[repr(C, align(64))]
    #[derive(bytemuck::Zeroable)]
    struct Line([AtomicU64; 8]);

    #[test]
    fn untouched_capacity_is_not_resident() {
        let before = rss_kb();
        // 256 MiB of cache-line-aligned entries.
        let t = ZeroedSlice::<Line>::new(4 << 20);
        let after = rss_kb();
        assert!(after < before + 16 * 1024, "RSS grew from {before} to {after} kB for an untouched table");
        t[(4 << 20) - 1].0[7].store(1, Ordering::Relaxed);
        assert_eq!(t[(4 << 20) - 1].0[7].load(Ordering::Relaxed), 1);
        assert_eq!(t[0].0[0].load(Ordering::Relaxed), 0);
        assert_eq!(t.as_ptr() as usize % 64, 0);
    }

    #[test]
    fn empty_slices_work() {
        let t = ZeroedSlice::<AtomicU64>::new(0);
        assert!(t.is_empty());
    }
}
