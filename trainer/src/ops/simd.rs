//! Runtime choice of the instruction set for the trainer's own loops.
//!
//! Rust compiles for baseline x86-64 (SSE2: 4 floats a vector) unless told otherwise, and a
//! binary built with `-C target-cpu` would not run on older CPUs. So the loops that sweep whole
//! planes (depthwise taps, BatchNorm, activations) run through [`wide`], which compiles them a
//! second time for AVX2 (8 floats a vector) and picks that copy where the CPU has it, as gemm
//! does for the matrix products. FMA is left off on purpose: without contraction both copies
//! round identically, so results do not depend on the CPU.

/// Runs `f`, compiled for AVX2 where this CPU has it (checked once per process by std).
///
/// `f` must be a closure that inlines (a loop over a slice, say): code it calls that does not
/// inline keeps its baseline instructions.
#[inline(always)]
pub(super) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the only feature `avx2` is compiled for.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    /// Both copies give the same bits for the kinds of loops the kernels run.
    #[test]
    fn wide_matches_baseline_bit_for_bit() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.173 - 8.0)
            .collect();
        let sweep = |x: &[f32]| -> (Vec<f32>, f32) {
            let y: Vec<f32> = x.iter().map(|&v| (v * 1.7 + 0.3).clamp(0.0, 6.0)).collect();
            let mut lanes = [0f32; 8];
            for c in x.chunks_exact(8) {
                for l in 0..8 {
                    lanes[l] += c[l] * c[l];
                }
            }
            (y, lanes.iter().sum())
        };
        assert_eq!(
            super::wide(
                #[inline(always)]
                || sweep(&x)
            ),
            sweep(&x)
        );
    }
}
