//! Tensor operations candle lacks or runs too slowly for training on a CPU.

mod activation;
mod batchnorm;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod cuda_host;
mod depthwise;
mod im2col;
mod maxpool;
pub mod runtime;
mod scratch;
mod simd;
mod upsample;
mod winograd;

pub use activation::{activate, leaky_relu, relu, relu6, residual, Activation};
pub use batchnorm::{batch_norm, channel_stats};
pub use depthwise::depthwise_conv2d;
pub use im2col::{conv2d, conv_transpose2d};
pub use maxpool::max_pool2d;
pub use upsample::upsample_nearest2x;

use candle_core::{bail, CpuStorage, DType, Layout, Result, Tensor};

/// The f32 values of a contiguous CPU tensor's storage (the CPU kernels here read nothing else).
fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("{op}: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: {what} must be contiguous"),
    }
}

/// A vector of `len` values for a kernel that writes every one of them before anything reads
/// them, without the zero-fill of `vec![0.0; len]`: that fill is one more sweep over a step's
/// largest buffers (`memset` was 6 % of a MobileNetV2 112 px step). Unit tests get NaN instead,
/// so a kernel that leaves an element unwritten fails its value tests.
pub(crate) fn output(len: usize) -> Vec<f32> {
    if cfg!(test) {
        return vec![f32::NAN; len];
    }
    let mut v = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`; every caller overwrites all `len` elements before any is
    // read (the NaN fill above checks that in the unit tests), as candle's own CPU kernels do
    // with their outputs.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// Whether a tensor can go to the CPU kernels (else the ops fall back to candle's own).
fn on_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Whether a tensor can go to this module's own kernels: f32 on the CPU, or on a CUDA device in
/// builds with the `cuda` feature (`cuda/`). Elsewhere the ops fall back to candle's own ops.
fn own_kernels(x: &Tensor) -> bool {
    on_cpu(x) || (cfg!(feature = "cuda") && x.device().is_cuda() && x.dtype() == DType::F32)
}

/// For a sliding window with stride `s` and zero padding `p` over an axis of length `len` with
/// `out` outputs: the outputs `o` whose tap `kk` reads inside the axis, `0 <= o·s + kk − p < len`.
fn valid_range(kk: usize, s: usize, p: usize, len: usize, out: usize) -> std::ops::Range<usize> {
    let lo = if kk >= p { 0 } else { (p - kk).div_ceil(s) };
    // o·s + kk − p <= len − 1  <=>  o <= (len − 1 + p − kk) / s
    let hi = if len + p > kk {
        ((len - 1 + p - kk) / s + 1).min(out)
    } else {
        0
    };
    lo..hi.max(lo)
}

#[cfg(test)]
mod tests {
    #[test]
    fn valid_ranges() {
        // w = 5, p = 1, s = 2, k = 3 -> ow = 3; kx = 0 reaches column -1 at ox = 0.
        assert_eq!(super::valid_range(0, 2, 1, 5, 3), 1..3);
        assert_eq!(super::valid_range(1, 2, 1, 5, 3), 0..3);
        assert_eq!(super::valid_range(2, 2, 1, 5, 3), 0..2);
    }
}
