//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016):
//! 16 multiplications per 2×2 output tile and channel pair instead of 36.
//!
//! About five sixths of ResNet-18's multiply-adds are in such convolutions (13 of its 20), and
//! their value, their input gradient (a 3×3 stride-1 convolution with the filters transposed
//! and flipped) and, on maps of 14×14 and up, their weight gradient ([`weight_grad3x3`]) go
//! through here. Each image's input is cut into overlapping 4×4 tiles, transformed (`Bᵀ d B`), and
//! for each of the 16 transformed positions one matrix product with the transformed filters
//! (`G g Gᵀ`) combines the channels;
//! the output transform (`Aᵀ m A`) turns each tile back into 2×2 outputs.

use gemm::Parallelism;
use rayon::prelude::*;

use std::ops::Range;

use super::im2col::{each_chunk, group_slices, image_groups, matmul, sum_over_runs, Operand};
use super::{output, scratch};

/// Positions of a transformed 4×4 tile.
const POSITIONS: usize = 16;

/// Filters transformed for one convolution: `POSITIONS` matrices, each the transform of the
/// weights `w [O, C, 3, 3]` at one tile position, `[O × C]` row-major.
///
/// The adjoint in the input (a convolution from `O` channels to `C` with each filter flipped)
/// reads the same matrices: with `G` as below, `G·J = P·G` for the 3×3 reversal `J` and the
/// 4×4 permutation `P` swapping rows 0 and 3, so the flipped filter's transform at position
/// `(y, x)` is the filter's own at `(π y, π x)` (`π` swapping 0 and 3), transposed. Reading it
/// through the product's strides costs nothing, where building a transposed copy cost 7 % of a
/// ResNet-18 112 px step (a strided read of every weight).
pub(super) struct Filters {
    /// Output and input channels of the convolution these filters compute.
    o: usize,
    c: usize,
    adjoint: bool,
    data: Vec<f32>,
}

impl Filters {
    /// From `w [O, C, 3, 3]`, for the convolution itself.
    pub(super) fn forward(w: &[f32], o: usize, c: usize) -> Self {
        Self {
            o,
            c,
            adjoint: false,
            data: Self::transform(w, o, c),
        }
    }

    /// From `w [O, C, 3, 3]`, for its adjoint in the input: a convolution from `O` channels to `C`
    /// with each filter flipped.
    pub(super) fn adjoint(w: &[f32], o: usize, c: usize) -> Self {
        Self {
            o: c,
            c: o,
            adjoint: true,
            data: Self::transform(w, o, c),
        }
    }

    /// `G g Gᵀ` of every filter, position-major: `[POSITIONS, O, C]`.
    ///
    /// A block of filters at a time, tap-major in the block, so each step of the transform is
    /// one vector operation across the block and each position's values leave as one run (one
    /// filter at a time was scattered scalar stores: 4 % of a ResNet-18 step). Runs of blocks go
    /// to the threads: on one thread it was 5 % of a ResNet-18 112 px step with the other idle.
    fn transform(w: &[f32], o: usize, c: usize) -> Vec<f32> {
        const BLOCK: usize = 16;
        const RUN: usize = 64 * BLOCK;
        let filters = o * c;
        assert_eq!(w.len(), filters * 9);
        // Every element is written below.
        let mut data = super::output(POSITIONS * filters);
        // Each run's slice of every position's matrix.
        let mut runs: Vec<Vec<&mut [f32]>> = (0..filters.div_ceil(RUN))
            .map(|_| Vec::with_capacity(POSITIONS))
            .collect();
        for position in data.chunks_mut(filters.max(1)) {
            for (run, part) in runs.iter_mut().zip(position.chunks_mut(RUN)) {
                run.push(part);
            }
        }
        runs.into_par_iter().enumerate().for_each(|(r, mut out)| {
            let count = out[0].len();
            for start in (0..count).step_by(BLOCK) {
                let len = BLOCK.min(count - start);
                let first = r * RUN + start;
                let mut g = [[0f32; BLOCK]; 9];
                for (f, taps) in w[first * 9..(first + len) * 9].chunks_exact(9).enumerate() {
                    for (k, tap) in taps.iter().enumerate() {
                        g[k][f] = *tap;
                    }
                }
                // G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1], applied to three taps at a time.
                let apply = |a: &[f32; BLOCK], b: &[f32; BLOCK], d: &[f32; BLOCK]| {
                    let mut out = [[0f32; BLOCK]; 4];
                    for f in 0..BLOCK {
                        out[0][f] = a[f];
                        out[1][f] = 0.5 * (a[f] + b[f] + d[f]);
                        out[2][f] = 0.5 * (a[f] - b[f] + d[f]);
                        out[3][f] = d[f];
                    }
                    out
                };
                // G g: each of the 3 columns (taps x, 3 + x, 6 + x) to 4 rows.
                let cols: [[[f32; BLOCK]; 4]; 3] =
                    std::array::from_fn(|x| apply(&g[x], &g[3 + x], &g[6 + x]));
                // (G g) Gᵀ: each of the 4 rows (its 3 columns) to 4 positions.
                for y in 0..4 {
                    let u = apply(&cols[0][y], &cols[1][y], &cols[2][y]);
                    for (x, values) in u.iter().enumerate() {
                        for (d, v) in out[y * 4 + x][start..start + len].iter_mut().zip(values) {
                            *d = *v;
                        }
                    }
                }
            }
        });
        data
    }

    /// The `[o × c]` matrix of position `p`, as an operand of the products.
    fn position(&self, p: usize) -> Operand<'_> {
        let len = self.o * self.c;
        if self.adjoint {
            let swap = |i: usize| [3, 1, 2, 0][i];
            let q = swap(p / 4) * 4 + swap(p % 4);
            // The stored matrix is `[c × o]`: read it transposed.
            Operand::transposed(&self.data[q * len..][..len], self.o)
        } else {
            Operand::rows(&self.data[p * len..][..len], self.c)
        }
    }
}

/// Whether a window is one this module computes: 3×3, stride 1.
pub(super) fn applies(k: usize, stride: usize, padding: usize) -> bool {
    k == 3 && stride == 1 && padding <= 2
}

/// Tiles of one image.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    h: usize,
    w: usize,
    padding: usize,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
}

impl Tiling {
    fn new(h: usize, w: usize, padding: usize) -> Self {
        let (oh, ow) = (h + 2 * padding - 2, w + 2 * padding - 2);
        Self {
            h,
            w,
            padding,
            oh,
            ow,
            th: oh.div_ceil(2),
            tw: ow.div_ceil(2),
        }
    }

    fn tiles(&self) -> usize {
        self.th * self.tw
    }
}

/// Output channels per task of the output transform when a group's transforms are spread over
/// the threads.
const OUTPUT_BLOCK: usize = 16;

/// `x [n, c, h, w]` convolved with `filters` (3×3, stride 1, zero padding `padding`) into
/// `[n, o, h + 2p − 2, w + 2p − 2]`.
pub(super) fn conv3x3(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    filters: &Filters,
    padding: usize,
) -> Vec<f32> {
    assert_eq!(filters.c, c);
    assert_eq!(x.len(), n * c * h * w);
    let t = Tiling::new(h, w, padding);
    let o = filters.o;
    let (plane, out_len) = (t.oh * t.ow, o * t.oh * t.ow);
    let groups = image_groups(n, t.tiles());
    let threads = rayon::current_num_threads();
    // Few groups (small maps, several images each): the products, and the transforms around
    // them, run in parallel instead.
    let inner = groups.len() < threads && threads > 1;
    let mut out = output(n * out_len);
    group_slices(&mut out, &groups, out_len)
        .into_par_iter()
        .zip(groups)
        .for_each(|(dst, images)| {
            scratch::with(|[v, m]| {
                let tiles = images.len() * t.tiles();
                // Every element of both is written before it is read.
                let v = scratch::prefix(v, POSITIONS * c * tiles);
                let m = scratch::prefix(m, POSITIONS * o * tiles);
                each_chunk(v, POSITIONS * tiles, inner, |ch, vc| {
                    transform_input(x, (c, ch), images.clone(), &t, vc);
                });
                // Single-threaded products: either the groups or the positions run in parallel.
                each_chunk(m, o * tiles, inner, |p, mp| {
                    matmul(
                        (o, tiles, c),
                        mp,
                        false,
                        filters.position(p),
                        Operand::rows(&v[p * tiles..], POSITIONS * tiles),
                        Parallelism::None,
                    );
                });
                // Task `b` writes every image's output channels of block `b`.
                let block = if inner { OUTPUT_BLOCK.min(o) } else { o };
                let mut tasks: Vec<Vec<&mut [f32]>> = (0..o.div_ceil(block))
                    .map(|_| Vec::with_capacity(images.len()))
                    .collect();
                for image in dst.chunks_mut(out_len) {
                    for (task, part) in tasks.iter_mut().zip(image.chunks_mut(block * plane)) {
                        task.push(part);
                    }
                }
                let output = |(b, outs): (usize, Vec<&mut [f32]>)| {
                    let ocs = b * block..((b + 1) * block).min(o);
                    transform_output(m, (o, ocs), &t, tiles, outs);
                };
                if inner {
                    tasks.into_par_iter().enumerate().for_each(output);
                } else {
                    tasks.into_iter().enumerate().for_each(output);
                }
            })
        });
    out
}

/// The weight gradient `[o, c, 3, 3]` of [`conv3x3`] with input `x [n, c, h, w]` and output
/// gradient `dy [n, o, oh, ow]`, through the same transforms: the value is
/// `Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A` for each tile, so the gradient of `G w Gᵀ` is
/// `Σ (A dY Aᵀ) ⊙ (Bᵀ d B)` over the tiles (one product per position, the tiles summed by the
/// product) and that of `w` is `Gᵀ · it · G`: 16 multiplications per 2×2 outputs and channel
/// pair instead of the im2col columns' 36.
///
/// Summed over the groups as the im2col weight gradient is (`sum_over_runs`): the same sum
/// whatever thread ran what.
pub(super) fn weight_grad3x3(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    dy: &[f32],
    o: usize,
    padding: usize,
) -> Vec<f32> {
    let t = Tiling::new(h, w, padding);
    assert_eq!(x.len(), n * c * h * w);
    assert_eq!(dy.len(), n * o * t.oh * t.ow);
    let du = sum_over_runs(
        &image_groups(n, t.tiles()),
        POSITIONS * o * c,
        |run, du, inner| {
            scratch::with(|[v, u]| {
                for images in run.iter() {
                    let tiles = images.len() * t.tiles();
                    // Every element of both is written before it is read.
                    let v = scratch::prefix(v, POSITIONS * c * tiles);
                    let u = scratch::prefix(u, POSITIONS * o * tiles);
                    each_chunk(v, POSITIONS * tiles, inner, |ch, vc| {
                        transform_input(x, (c, ch), images.clone(), &t, vc);
                    });
                    each_chunk(u, POSITIONS * tiles, inner, |oc, uc| {
                        transform_gradient(dy, (o, oc), images.clone(), &t, uc);
                    });
                    // The tiles summed by the product: `[o × tiles] · [tiles × c]` per position.
                    each_chunk(du, o * c, inner, |p, dp| {
                        matmul(
                            (o, c, tiles),
                            dp,
                            true,
                            Operand::rows(&u[p * tiles..], POSITIONS * tiles),
                            Operand::transposed(&v[p * tiles..], POSITIONS * tiles),
                            Parallelism::None,
                        );
                    });
                }
            })
        },
    );
    untransform_filters(&du, o * c)
}

/// `Gᵀ m G` (3×3) of each of `filters` 4×4 matrices stored position-major (`[POSITIONS,
/// filters]`), into `[filters, 3, 3]`: the adjoint of [`Filters`]' transform.
fn untransform_filters(m: &[f32], filters: usize) -> Vec<f32> {
    const RUN: usize = 1024;
    // Every element is written below.
    let mut out = output(filters * 9);
    out.par_chunks_mut(RUN * 9)
        .enumerate()
        .for_each(|(r, dst)| {
            for (i, taps) in dst.chunks_exact_mut(9).enumerate() {
                let f = r * RUN + i;
                let at = |y: usize, x: usize| m[(y * 4 + x) * filters + f];
                // Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1], applied to the 4 values of a row or column.
                let apply = |a: f32, b: f32, c: f32, d: f32| {
                    [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d]
                };
                // m G: each row's 4 columns to 3.
                let rows: [[f32; 3]; 4] =
                    std::array::from_fn(|y| apply(at(y, 0), at(y, 1), at(y, 2), at(y, 3)));
                // Gᵀ (m G): each of the 3 columns' 4 rows to 3.
                for x in 0..3 {
                    let col = apply(rows[0][x], rows[1][x], rows[2][x], rows[3][x]);
                    for (y, value) in col.into_iter().enumerate() {
                        taps[y * 3 + x] = value;
                    }
                }
            }
        });
    out
}

/// Writes `A dY Aᵀ` of each 2×2 tile of output gradient channel `oc` of `images` (of
/// `dy [n, o, oh, ow]`) into `uc`: `POSITIONS` rows, each the group's tiles in [`row_of_tiles`]
/// order, as [`transform_input`] lays out its tiles. Outputs past the map's edge count as zero.
///
/// A row of tiles of every image at a time: its two output rows split into even and odd columns,
/// then combined in sweeps over all the group's images.
fn transform_gradient(
    dy: &[f32],
    (o, oc): (usize, usize),
    images: Range<usize>,
    t: &Tiling,
    uc: &mut [f32],
) {
    let tw = t.tw;
    let tiles = uc.len() / POSITIONS;
    let run = images.len() * tw;
    // The tile rows' even and odd columns (zero past the edge), then `A` applied down them.
    let mut rows = vec![[vec![0f32; run], vec![0f32; run]]; 2];
    let mut down = vec![[vec![0f32; run], vec![0f32; run]]; 4];
    for ty in 0..t.th {
        for (r, [even, odd]) in rows.iter_mut().enumerate() {
            let y = 2 * ty + r;
            if y >= t.oh {
                even.fill(0.0);
                odd.fill(0.0);
                continue;
            }
            for (j, b) in images.clone().enumerate() {
                let src = &dy[((b * o + oc) * t.oh + y) * t.ow..][..t.ow];
                let at = j * tw..(j + 1) * tw;
                for (dst, skip) in [(&mut even[at.clone()], 0), (&mut odd[at], 1)] {
                    // An odd width leaves the last tile's odd column past the edge.
                    dst.fill(0.0);
                    for (d, v) in dst.iter_mut().zip(src.iter().skip(skip).step_by(2)) {
                        *d = *v;
                    }
                }
            }
        }
        // A = [1 0; 1 1; 1 −1; 0 −1]: a pair (p, q) becomes (p, p + q, p − q, −q).
        for half in 0..2 {
            let (d0, d1) = (&rows[0][half], &rows[1][half]);
            for (k, (&p, &q)) in d0.iter().zip(d1.iter()).enumerate() {
                down[0][half][k] = p;
                down[1][half][k] = p + q;
                down[2][half][k] = p - q;
                down[3][half][k] = -q;
            }
        }
        // Then across: tile tx's pair is (even[tx], odd[tx]).
        let col = row_of_tiles(t, images.len(), ty);
        for (i, [e, od]) in down.iter().enumerate() {
            let row = |q: usize| (i * 4 + q) * tiles + col;
            uc[row(0)..][..run].copy_from_slice(e);
            for (d, (&p, &q)) in uc[row(1)..][..run].iter_mut().zip(e.iter().zip(od)) {
                *d = p + q;
            }
            for (d, (&p, &q)) in uc[row(2)..][..run].iter_mut().zip(e.iter().zip(od)) {
                *d = p - q;
            }
            for (d, &q) in uc[row(3)..][..run].iter_mut().zip(od) {
                *d = -q;
            }
        }
    }
}

/// Writes the transformed tiles of channel `ch` of `images` (of `x [n, c, h, w]`) into `vc`:
/// `POSITIONS` rows, each the group's tiles in [`row_of_tiles`] order (a row of tiles of every
/// image, then the next row).
///
/// Each padded input row is combined across once (`· B`: tile `tx` reads its columns `2·tx` to
/// `2·tx + 3`) into four runs holding that row of every image, then each row of tiles combines
/// its four input rows down (`Bᵀ ·`) in sweeps over all the group's images at once: on the small
/// maps (a 4×4 map has rows of 2 tiles) a sweep over one image's row was too short to vectorise,
/// and each input row was split twice, once for each row of tiles reading it.
fn transform_input(
    x: &[f32],
    (c, ch): (usize, usize),
    images: Range<usize>,
    t: &Tiling,
    vc: &mut [f32],
) {
    let (tw, p) = (t.tw, t.padding);
    let tiles = vc.len() / POSITIONS;
    let run = images.len() * tw;
    let rows = 2 * t.th + 2;
    // Rows past the map's edge stay zero.
    let mut across = vec![0f32; rows * 4 * run];
    // One input row with its zero padding: `2·tw + 2 ≥ w + 2p` columns.
    let mut padded = vec![0f32; 2 * tw + 2];
    for (yy, dst) in across.chunks_exact_mut(4 * run).enumerate() {
        let Some(y) = yy.checked_sub(p).filter(|&y| y < t.h) else {
            continue;
        };
        let (d0, rest) = dst.split_at_mut(run);
        let (d1, rest) = rest.split_at_mut(run);
        let (d2, d3) = rest.split_at_mut(run);
        for (j, b) in images.clone().enumerate() {
            padded[p..p + t.w].copy_from_slice(&x[((b * c + ch) * t.h + y) * t.w..][..t.w]);
            let at = j * tw..(j + 1) * tw;
            // B = Bᵀ transposed: a tile's columns (a, b, c, d) become (a − c, b + c, c − b, b − d).
            for ((((e0, e1), e2), e3), d) in d0[at.clone()]
                .iter_mut()
                .zip(&mut d1[at.clone()])
                .zip(&mut d2[at.clone()])
                .zip(&mut d3[at])
                .zip(padded.windows(4).step_by(2))
            {
                *e0 = d[0] - d[2];
                *e1 = d[1] + d[2];
                *e2 = d[2] - d[1];
                *e3 = d[1] - d[3];
            }
        }
    }
    // Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1] down the four rows of each row of tiles.
    for ty in 0..t.th {
        let row = |k: usize, q: usize| &across[((2 * ty + k) * 4 + q) * run..][..run];
        for q in 0..4 {
            let [d0, d1, d2, d3] = [0, 1, 2, 3].map(|k| row(k, q));
            for (r, (a, b, add)) in [
                (d0, d2, false),
                (d1, d2, true),
                (d2, d1, false),
                (d1, d3, false),
            ]
            .into_iter()
            .enumerate()
            {
                let dst = &mut vc[(r * 4 + q) * tiles + row_of_tiles(t, images.len(), ty)..][..run];
                if add {
                    for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
                        *d = a + b;
                    }
                } else {
                    for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
                        *d = a - b;
                    }
                }
            }
        }
    }
}

/// First column of row of tiles `ty` in a group's transformed rows: rows of tiles outermost,
/// then images, then tiles, so that a row of tiles of every image of the group is one run.
fn row_of_tiles(t: &Tiling, images: usize, ty: usize) -> usize {
    ty * images * t.tw
}

/// Turns the products `m` (`POSITIONS` matrices `[o × tiles]`) of a group's tiles into the
/// output channels `ocs` of each of its images (`outs[j]`: `[ocs.len(), oh, ow]` of image `j`),
/// a row of tiles of every image at a time: the sweeps run over all the images, which on the
/// small maps are many and their rows of tiles short.
fn transform_output(
    m: &[f32],
    (o, ocs): (usize, Range<usize>),
    t: &Tiling,
    tiles: usize,
    mut outs: Vec<&mut [f32]>,
) {
    let (tw, plane) = (t.tw, t.oh * t.ow);
    let run = outs.len() * tw;
    let row = || {
        [
            vec![0f32; run],
            vec![0f32; run],
            vec![0f32; run],
            vec![0f32; run],
        ]
    };
    let mut s = [row(), row()];
    let (mut even, mut odd) = (vec![0f32; run], vec![0f32; run]);
    for (i, oc) in ocs.enumerate() {
        for ty in 0..t.th {
            let col = row_of_tiles(t, outs.len(), ty);
            let run_of = |r: usize, q: usize| &m[((r * 4 + q) * o + oc) * tiles + col..][..run];
            // Aᵀ m, Aᵀ = [1 1 1 0; 0 1 −1 −1], for each of the tile's 4 columns.
            for q in 0..4 {
                let (a, b, c, d) = (run_of(0, q), run_of(1, q), run_of(2, q), run_of(3, q));
                let [s0, s1] = &mut s;
                for (((((s0, s1), a), b), c), d) in s0[q]
                    .iter_mut()
                    .zip(s1[q].iter_mut())
                    .zip(a)
                    .zip(b)
                    .zip(c)
                    .zip(d)
                {
                    *s0 = a + b + c;
                    *s1 = b - c - d;
                }
            }
            // (Aᵀ m) A: each tile's two outputs of the row, interleaved into each image's row.
            for (r, [a, b, c, d]) in s.iter().enumerate() {
                let y = 2 * ty + r;
                if y >= t.oh {
                    continue;
                }
                for (((((e, od), a), b), c), d) in even
                    .iter_mut()
                    .zip(odd.iter_mut())
                    .zip(a)
                    .zip(b)
                    .zip(c)
                    .zip(d)
                {
                    *e = a + b + c;
                    *od = b - c - d;
                }
                for (out, (even, odd)) in outs
                    .iter_mut()
                    .zip(even.chunks_exact(tw).zip(odd.chunks_exact(tw)))
                {
                    let row = &mut out[i * plane + y * t.ow..][..t.ow];
                    for ((pair, e), od) in row.chunks_mut(2).zip(even).zip(odd) {
                        pair[0] = *e;
                        if let Some(x) = pair.get_mut(1) {
                            *x = *od;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::im2col::tests::on_threads;
    use super::*;

    /// Direct loops: `x [n, c, h, w]` with `w [o, c, 3, 3]`, stride 1, padding `p`.
    fn direct(
        x: &[f32],
        w: &[f32],
        (n, c, h, wd): (usize, usize, usize, usize),
        o: usize,
        p: usize,
    ) -> Vec<f32> {
        let (oh, ow) = (h + 2 * p - 2, wd + 2 * p - 2);
        let mut y = vec![0f32; n * o * oh * ow];
        for b in 0..n {
            for oc in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0f64;
                        for ch in 0..c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (oy + ky) as isize - p as isize;
                                    let ix = (ox + kx) as isize - p as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    acc += (x[((b * c + ch) * h + iy as usize) * wd + ix as usize]
                                        * w[((oc * c + ch) * 3 + ky) * 3 + kx])
                                        as f64;
                                }
                            }
                        }
                        y[((b * o + oc) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // A fixed pseudo-random sequence in [−1, 1).
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The convolution and its adjoint against direct loops, for even, odd and tiny maps, every
    /// padding it takes, one image per group and many (the 7×7 maps gather several images), the
    /// transforms on one thread and spread over three (more output channels than a block); the
    /// weight gradient too.
    #[test]
    fn matches_direct_loops() {
        on_threads(1, cases);
        on_threads(3, cases);
    }

    fn cases() {
        for &(n, c, o, h, w, p) in &[
            (2, 3, 4, 8, 8, 1),
            (1, 5, 2, 7, 9, 1),
            (3, 4, 3, 1, 1, 1),
            (2, 2, 3, 6, 5, 0),
            (1, 3, 2, 5, 4, 2),
            (40, 6, 5, 7, 7, 1),
            (2, 16, 8, 30, 29, 1),
            (3, 4, 20, 6, 6, 1),
        ] {
            let x = values(n * c * h * w, 1 + h as u32);
            let wt = values(o * c * 9, 7 + c as u32);
            let case = format!("n{n} c{c} o{o} {h}x{w} p{p}");
            let ours = conv3x3(&x, (n, c, h, w), &Filters::forward(&wt, o, c), p);
            let want = direct(&x, &wt, (n, c, h, w), o, p);
            assert_eq!(ours.len(), want.len(), "{case}");
            for (a, b) in ours.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()) * c as f32,
                    "{case}: {a} vs {b}"
                );
            }
            // The adjoint: <conv(x), y> = <x, adjoint(y)> for any y.
            let (oh, ow) = (h + 2 * p - 2, w + 2 * p - 2);
            let y = values(n * o * oh * ow, 3);
            let back = conv3x3(&y, (n, o, oh, ow), &Filters::adjoint(&wt, o, c), 2 - p);
            assert_eq!(back.len(), x.len(), "{case}");
            let lhs: f64 = want.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
                "{case}: {lhs} vs {rhs}"
            );
            // The weight gradient against direct loops: dw[o, c, ky, kx] = Σ y · x shifted.
            let dw = weight_grad3x3(&x, (n, c, h, w), &y, o, p);
            for (f, taps) in dw.chunks_exact(9).enumerate() {
                let (oc, ch) = (f / c, f % c);
                for (tap, got) in taps.iter().enumerate() {
                    let (ky, kx) = (tap / 3, tap % 3);
                    let mut acc = 0f64;
                    for b in 0..n {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let iy = (oy + ky) as isize - p as isize;
                                let ix = (ox + kx) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                acc += (y[((b * o + oc) * oh + oy) * ow + ox]
                                    * x[((b * c + ch) * h + iy as usize) * w + ix as usize])
                                    as f64;
                            }
                        }
                    }
                    let scale = (n * oh * ow) as f64;
                    assert!(
                        (*got as f64 - acc).abs() <= 1e-5 * (1.0 + acc.abs()) * scale.sqrt(),
                        "{case}: weight gradient {oc} {ch} {ky} {kx}: {got} vs {acc}"
                    );
                }
            }
        }
    }
}
