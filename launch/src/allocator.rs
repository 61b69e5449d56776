//! glibc allocator tuning at start-up. With glibc's defaults every large libtorch tensor is a fresh mmap and
//! its pages fault in on each training step; a high mmap threshold and a high trim threshold keep freed
//! blocks in the heap for the next step (docs/TOOLCHAIN.md measured the paper CPU step 13–17 % faster).
//! `MALLOC_MMAP_THRESHOLD_` (or `STORM_DEFAULT_MALLOC=1`) in the environment leaves glibc's defaults alone.

const MMAP_THRESHOLD: libc::c_int = 32 << 20;
const TOP_PAD: libc::c_int = 1 << 30;

pub fn tune() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("STORM_DEFAULT_MALLOC").is_some_and(|v| v == "1")
    {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; this runs first in main, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}
