//! Process-wide settings the CPU kernels are measured fastest with, applied once at start-up.
//!
//! Measured with `cargo bench -p mpox-trainer --bench train_step` on the 2-core development
//! machine (docs/results.md, "Training throughput"):
//! - candle 0.11 runs element-wise ops on its own pool of spinning workers, beside rayon's pool
//!   where the trainer's kernels and candle's matrix products run; the two pools steal each
//!   other's cores. candle's element-wise pool is turned off (`CANDLE_NUM_THREADS=1`); matrix
//!   products keep every core.
//! - glibc returns allocations above 32 MiB to the system on every free, so each step faults
//!   in and zeroes its large activations again (58 % of the feature-caching pass in
//!   `clear_page_erms`). Keeping them in the heap took that pass from 1.94 to 1.00 s.
//!
//! The two together took the MobileNetV2 last-5-stages step from 1.25 to 0.63 s.

/// Applies the settings unless the environment already chose (`CANDLE_NUM_THREADS`, `MALLOC_*`).
///
/// Call it first thing in `main`, before any thread starts: it sets an environment variable,
/// which is only sound while the process has one thread.
pub fn configure() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: documented precondition: no other thread exists yet to read the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_")) {
        // SAFETY: mallopt only changes glibc's allocation policy; no memory is touched.
        unsafe {
            // Large blocks from the heap, not from mmap (which zeroes them on every reuse), and
            // the heap's top kept instead of trimmed: a training step's buffers are reused by
            // the next step.
            libc::mallopt(libc::M_MMAP_MAX, 0);
            // -1: never trim (mallopt(3)); a step of MobileNetV2 at 224 px frees over 2 GiB at once.
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
            libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        }
    }
}
