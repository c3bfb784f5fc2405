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

/// A plane's rows split by column phase for a strided window: phase `φ` of a row holds its
/// columns `φ, φ + s, φ + 2s, …`, each phase `width` long (the last ones padded), so that one tap
/// over a row of outputs reads one contiguous run instead of every `s`-th value. With stride 1 a
/// split row is the row itself. (The depthwise convolution pads and splits both axes, for runs
/// over whole planes; the convolutions and the max pool here go a row of outputs at a time.)
#[derive(Clone, Copy)]
struct SplitRows {
    stride: usize,
    padding: usize,
    w: usize,
    /// Values per phase.
    width: usize,
    /// Values per split row: `stride · width`.
    row: usize,
}

impl SplitRows {
    /// For rows `w` wide under a window of stride `stride` and zero padding `padding`.
    fn new(w: usize, stride: usize, padding: usize) -> Self {
        let width = w.div_ceil(stride);
        Self {
            stride,
            padding,
            w,
            width,
            row: if stride == 1 { w } else { stride * width },
        }
    }

    /// Where, in a split row, the run of tap `kx` starts for `outputs` (those whose tap reads
    /// inside the row, from [`valid_range`]).
    fn start(&self, kx: usize, outputs: &std::ops::Range<usize>) -> usize {
        if outputs.is_empty() {
            return 0;
        }
        let col = outputs.start * self.stride + kx - self.padding;
        (col % self.stride) * self.width + col / self.stride
    }

    /// A plane (`[h, w]`) into split rows (`[h, row]`).
    fn split(&self, plane: &[f32], dst: &mut [f32]) {
        for (src, out) in plane
            .chunks_exact(self.w)
            .zip(dst.chunks_exact_mut(self.row))
        {
            for (phase, out) in out.chunks_exact_mut(self.width).enumerate() {
                let column = src[phase.min(self.w)..].iter().step_by(self.stride);
                for (d, v) in out.iter_mut().zip(column) {
                    *d = *v;
                }
            }
        }
    }

    /// Split rows (`[h, row]`) back into a plane (`[h, w]`).
    fn merge(&self, split: &[f32], plane: &mut [f32]) {
        for (src, out) in split
            .chunks_exact(self.row)
            .zip(plane.chunks_exact_mut(self.w))
        {
            for (phase, src) in src.chunks_exact(self.width).enumerate() {
                let column = out[phase.min(self.w)..].iter_mut().step_by(self.stride);
                for (d, v) in column.zip(src) {
                    *d = *v;
                }
            }
        }
    }
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

    /// Each tap's run in the split rows holds the columns the window reads, and merging gives
    /// the rows back.
    #[test]
    fn split_rows_give_each_tap_one_run() {
        for (w, k, s, p) in [
            (9, 3, 2, 1),
            (8, 4, 2, 1),
            (10, 5, 3, 2),
            (7, 3, 1, 1),
            (5, 1, 2, 0),
        ] {
            let h = 3;
            let plane: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
            let rows = super::SplitRows::new(w, s, p);
            let mut split = vec![f32::NAN; h * rows.row];
            rows.split(&plane, &mut split);
            let ow = (w + 2 * p - k) / s + 1;
            for kx in 0..k {
                let outputs = super::valid_range(kx, s, p, w, ow);
                let start = rows.start(kx, &outputs);
                for y in 0..h {
                    let run = &split[y * rows.row + start..][..outputs.len()];
                    for (ox, v) in outputs.clone().zip(run) {
                        assert_eq!(*v, plane[y * w + ox * s + kx - p], "w{w} k{k} s{s} p{p}");
                    }
                }
            }
            let mut back = vec![f32::NAN; h * w];
            rows.merge(&split, &mut back);
            assert_eq!(back, plane);
        }
    }
}
