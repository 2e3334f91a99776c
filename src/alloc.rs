//! Allocator settings for the toolkit's programs.
//!
//! A training step allocates and frees buffers of a few to tens of MB
//! (im2col columns, activations, gradients). glibc's malloc serves blocks
//! above its mmap threshold with fresh `mmap`s and returns them with
//! `munmap`, so every step pays page faults, the kernel zeroing the pages
//! and TLB shootdowns across threads: on a 2-core machine that was about a
//! third of a ResNet-8 training step (`cascade bench --model resnet-8`:
//! 190 ms per step, 108 ms with the settings below).
//!
//! [`keep_freed_memory`] raises the mmap threshold to its maximum (32 MiB on
//! 64-bit) and stops trimming the heap, so freed buffers are reused. The
//! price is that the process keeps its peak heap until it exits. Call it
//! once at the start of `main`, before other threads run.

/// Tunes glibc's malloc to keep and reuse freed memory (see the module
/// docs). Does nothing on other platforms or C libraries. Returns whether
/// the settings were applied.
pub fn keep_freed_memory() -> bool {
    imp::keep_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    /// glibc's largest mmap threshold on 64-bit targets.
    const MMAP_THRESHOLD_MAX: libc::c_int = 32 * 1024 * 1024;

    pub(super) fn keep_freed_memory() -> bool {
        // SAFETY: mallopt only changes malloc's parameters; it is called
        // with documented options and in-range values.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn keep_freed_memory() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn settings_are_accepted_and_allocation_still_works() {
        assert!(super::keep_freed_memory());
        let v = vec![1u8; 64 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
    }
}
