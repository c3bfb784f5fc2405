//! The matrix product behind the SDK's dense convolutions, read straight from the image: output
//! channel `m` at point `x` is `bias[m] + Σ_k w[m][k] · src[offsets[k] + x]`. A 1×1 convolution's
//! offsets are its input channels; a 3×3 one's are the nine taps of each channel's bordered planes
//! (see `Planes`). Nothing is copied into an im2col matrix and nothing is packed: the kernels read
//! the activations where they lie and the weights as the model file holds them (`[m][k]`, OIHW),
//! eight rows at a time, so loading a model costs no repacking and no second copy of its weights.
//!
//! tract packs both operands of every product; on MobileNetV2 that packing of the activations
//! cost 13 % of an inference, and its matrix kernels ran the few-channel 112×112 products of the
//! first two blocks at 36–63 GFLOP/s (`cargo bench -p mpox-e2e --bench sdk_profile`).

use super::Isa;

/// The function applied to each output value before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// None.
    Linear,
    /// `max(v, 0)`.
    Relu,
    /// `min(max(v, 0), 6)`.
    Relu6,
}

impl Activation {
    /// The activation of one value (NaN passes through `Linear` only).
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Linear => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }
}

/// A convolution's weights as the product reads them.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// Output channels.
    pub m: usize,
    /// Multiply-adds per output.
    pub k: usize,
    /// `[m][k]`, row-major.
    pub weights: &'a [f32],
    /// `[m]`.
    pub bias: &'a [f32],
}

/// One tile's inputs: the first of its rows of weights, where its `k` source rows start and how
/// its results are stored.
pub(super) struct Tile<'a> {
    /// `[m][k]` weights.
    pub weights: &'a [f32],
    /// `[m]` biases.
    pub bias: &'a [f32],
    /// Multiply-adds per output (the weights' row length).
    pub k: usize,
    /// The tile's first output channel.
    pub row0: usize,
    /// Output channels from `row0` that exist (at least 1); the kernels compute their whole
    /// height, repeating the last row for the missing ones.
    pub rows: usize,
    /// The source; row `kk` of the tile starts at `src[offsets[kk]]` and `nr` values are read.
    pub src: &'a [f32],
    /// One offset per multiply-add.
    pub offsets: &'a [usize],
    /// Applied before the store.
    pub act: Activation,
}

impl Tile<'_> {
    /// The weights row and bias of tile row `r`.
    pub fn row(&self, r: usize) -> (&[f32], f32) {
        let m = self.row0 + r.min(self.rows - 1);
        (&self.weights[m * self.k..][..self.k], self.bias[m])
    }
}

/// Computes `out[r·ldo + j] = act(bias[m] + Σ_k w[m][k]·src[offsets[k] + j])` for every output
/// channel `m` (row `r` of `out`) and point `j < n`.
///
/// Every `offsets[k] + n` must lie within `src`: tiles that would read past a row's end are
/// copied out first.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    isa: Isa,
    weights: Weights,
    src: &[f32],
    offsets: &[usize],
    n: usize,
    act: Activation,
    out: &mut [f32],
    ldo: usize,
) {
    let (mr, nr) = isa.tile();
    let (m, k) = (weights.m, weights.k);
    let panels = m.div_ceil(mr);
    assert!(weights.weights.len() == m * k && weights.bias.len() == m);
    assert_eq!(offsets.len(), k);
    assert!(offsets.iter().all(|&o| o + n <= src.len()));
    assert!(m == 0 || (m - 1) * ldo + n <= out.len());
    if m == 0 || n == 0 {
        return;
    }
    // The last partial tile, when there is one and the kernel cannot mask it, reads from a copy
    // padded to the full width.
    let full = n / nr * nr;
    let masked = full < n && isa.masks_tails();
    let mut tail_src = Vec::new();
    let mut tail_offsets = Vec::new();
    if full < n && !masked {
        tail_src = vec![0f32; k * nr];
        for (kk, &o) in offsets.iter().enumerate() {
            tail_src[kk * nr..kk * nr + n - full].copy_from_slice(&src[o + full..o + n]);
        }
        tail_offsets = (0..k).map(|kk| kk * nr).collect();
    }
    let out_ptr = SendPtr(out.as_mut_ptr());
    // Columns `tiles` (in units of `nr`) of every panel; the last partial tile with the last
    // range. Workers write disjoint columns of `out`.
    let columns = |tiles: std::ops::Range<usize>| {
        let out = out_ptr;
        let mut scratch = vec![0f32; mr * nr];
        for p in 0..panels {
            let rows = (m - p * mr).min(mr);
            let tile = |src, offsets| Tile {
                weights: weights.weights,
                bias: weights.bias,
                k,
                row0: p * mr,
                rows,
                src,
                offsets,
                act,
            };
            // Output columns `at..at + cols` of the panel, from source column `x` of `t`:
            // straight into `out` where the tile fits, else through `scratch`.
            let mut emit = |t: &Tile, x: usize, at: usize, cols: usize| {
                // SAFETY: rows p·mr.. p·mr + rows and columns at..at + cols lie within `out`
                // ((m - 1)·ldo + n <= len, checked above) and no other worker writes them; every
                // source row of `t` holds `nr` values from `x` (x + nr <= n, or the padded
                // copy), or `cols` under the masked kernel.
                unsafe {
                    let dst = out.0.add(p * mr * ldo + at);
                    // A partial tile runs masked where the kernel can, else whole on the copy.
                    let run = |dst: *mut f32, ld: usize| {
                        if cols < nr && masked {
                            isa.tail_kernel(t, x, cols, dst, ld)
                        } else {
                            isa.tile_kernel(t, x, dst, ld)
                        }
                    };
                    if rows == mr && (cols == nr || masked) {
                        run(dst, ldo);
                    } else {
                        run(scratch.as_mut_ptr(), nr);
                        for r in 0..rows {
                            let from = scratch.as_ptr().add(r * nr);
                            std::ptr::copy_nonoverlapping(from, dst.add(r * ldo), cols);
                        }
                    }
                }
            };
            let t = tile(src, offsets);
            for x in tiles.clone().map(|i| i * nr).filter(|&x| x < full) {
                emit(&t, x, x, nr);
            }
            if full < n && tiles.end * nr > full {
                if masked {
                    emit(&t, full, full, n - full);
                } else {
                    emit(&tile(&tail_src, &tail_offsets), 0, full, n - full);
                }
            }
        }
    };
    let tiles = n.div_ceil(nr);
    #[cfg(feature = "threads")]
    if let tract_linalg::multithread::Executor::MultiThread(pool) =
        tract_linalg::multithread::current_tract_executor()
    {
        use rayon::prelude::*;
        let threads = pool.current_num_threads();
        if threads > 1 && tiles > 1 {
            let per = tiles.div_ceil(threads * 2).max(1);
            pool.install(|| {
                (0..tiles.div_ceil(per))
                    .into_par_iter()
                    .for_each(|c| columns(c * per..((c + 1) * per).min(tiles)));
            });
            return;
        }
    }
    columns(0..tiles);
}

/// The output pointer, shared by the workers that write disjoint columns through it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: workers write disjoint elements only.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// The portable tile: `MR` × `NR` in plain Rust, which the compiler vectorises for the baseline.
pub(super) mod portable {
    use super::Tile;

    /// Rows of the portable tile.
    pub const MR: usize = 4;
    /// Columns of the portable tile.
    pub const NR: usize = 8;

    /// # Safety
    /// Every `src[offsets[k] + x..][..NR]` lies within `src`; `out` is writable at `r·ldo + j`
    /// for `r < MR`, `j < NR`.
    pub unsafe fn tile(t: &Tile, x: usize, out: *mut f32, ldo: usize) {
        let rows: [(&[f32], f32); MR] = std::array::from_fn(|r| t.row(r));
        let mut acc: [[f32; NR]; MR] = std::array::from_fn(|r| [rows[r].1; NR]);
        for (kk, &o) in t.offsets.iter().enumerate() {
            let s = &t.src[o + x..][..NR];
            for (a, (w, _)) in acc.iter_mut().zip(&rows) {
                let wr = w[kk];
                for (v, &sv) in a.iter_mut().zip(s) {
                    *v += wr * sv;
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (j, &v) in a.iter().enumerate() {
                *out.add(r * ldo + j) = t.act.apply(v);
            }
        }
    }
}
