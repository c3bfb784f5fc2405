//! Dense convolutions and transposed convolutions as im2col + matrix products, with fast
//! gradients, in the batch-first layout the networks use.
//!
//! candle computes the input gradient of a dense convolution with a naive transposed-convolution
//! loop, which dominates ResNet and DCGAN training time on a CPU. Here the three products of a
//! convolution (its value, its adjoint with respect to the input, the weight gradient) are each
//! one op ([`Conv`], [`ConvData`], [`ConvFilter`]) whose gradients are the other two, so a
//! transposed convolution is [`ConvData`] and the same kernels serve both.
//!
//! Each op works on groups of images: their windows are laid out as columns (`im2col`, or the
//! image itself for a 1×1 convolution with stride 1), multiplied with the weights by `gemm`, and
//! the result lands in place in `[N, C, H, W]`. Groups are as small as keeps the product wide
//! ([`GROUP_COLUMNS`]): a single image at the networks' early, large feature maps (no reshuffle
//! of the output at all), several at the small late ones. Groups run in parallel when there are
//! enough of them (as many images for each thread); otherwise the product itself is parallel,
//! and so is the layout work around it.

use std::ops::Range;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::winograd::{self, Filters};
use super::{cpu_slice, on_cpu, output, scratch, valid_range, SplitRows};

/// Output positions a group of images should at least offer a matrix product: below this the
/// products are too thin for `gemm`'s register tiles. Measured with the `train_step` bench:
/// 1024 made the ResNet-18, MobileNetV2 and DCGAN steps 5–14 % slower, 256 changed nothing
/// beyond the noise.
const GROUP_COLUMNS: usize = 512;

/// Output positions per image from which a 3×3 stride-1 weight gradient goes through Winograd's
/// transforms rather than the columns. Measured with the `train_step` bench (ResNet-18, 16
/// images, seconds at 112 / 224 px, two runs): columns everywhere 0.266, 0.263 / 0.808, 0.811;
/// Winograd everywhere 0.271, 0.274 / 0.759, 0.757; from 14×14 maps on 0.261, 0.262 / 0.764,
/// 0.763; from 28×28 on 0.259, 0.265 / 0.764, 0.773. On the small maps the transforms cost more
/// than the products they save.
const WINOGRAD_WEIGHT_GRADIENT: usize = 14 * 14;

/// The groups of images, in order, for `n` images of `columns` output positions (or tiles)
/// each: each as few images as give [`GROUP_COLUMNS`], and when there are at least as many
/// groups as threads, as many images for each thread (rayon halves the list of groups, so each
/// thread takes one run). Cut without the runs, 16 images of 49 positions (ResNet-18's third
/// stage at 112 px) made groups of 11 and 5, and one thread waited a third of the layer.
pub(super) fn image_groups(n: usize, columns: usize) -> Vec<Range<usize>> {
    let most = GROUP_COLUMNS.div_ceil(columns.max(1)).clamp(1, n.max(1));
    let threads = rayon::current_num_threads().max(1);
    let runs = if n.div_ceil(most) >= threads {
        threads
    } else {
        1
    };
    even_split(0..n, runs)
        .flat_map(|run| {
            let parts = run.len().div_ceil(most);
            even_split(run, parts)
        })
        .collect()
}

/// `range` cut into `parts` consecutive, non-empty ranges whose lengths differ by at most one.
fn even_split(range: Range<usize>, parts: usize) -> impl Iterator<Item = Range<usize>> {
    let len = range.len();
    let parts = parts.clamp(1, len.max(1));
    (0..parts)
        .map(move |i| range.start + i * len / parts..range.start + (i + 1) * len / parts)
        .filter(|r| !r.is_empty())
}

/// `data` (`per_image` values for each image) cut into the slices of `groups`.
pub(super) fn group_slices<'a>(
    mut data: &'a mut [f32],
    groups: &[Range<usize>],
    per_image: usize,
) -> Vec<&'a mut [f32]> {
    groups
        .iter()
        .map(|g| {
            let (head, rest) = std::mem::take(&mut data).split_at_mut(g.len() * per_image);
            data = rest;
            head
        })
        .collect()
}

/// Runs `f(i, chunk)` on each `size`-long chunk of `data`, across the threads when `spread`:
/// with fewer groups of images than threads, a group's layout work (columns, transforms) is
/// shared out instead of keeping the other threads waiting for the product.
pub(super) fn each_chunk(
    data: &mut [f32],
    size: usize,
    spread: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if spread {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Sums `add(run, partial, spread)` over a fixed split of `groups` into one run per thread, each
/// adding into its own zeroed partial of `size` values, and adds the partials in order: the same
/// sum whatever thread ran what. `spread` says the runs are fewer than the threads, so each run's
/// work is to be spread over them.
pub(super) fn sum_over_runs(
    groups: &[Range<usize>],
    size: usize,
    add: impl Fn(&[Range<usize>], &mut [f32], bool) + Sync + Send,
) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    let runs: Vec<&[Range<usize>]> = groups
        .chunks(groups.len().div_ceil(threads).max(1))
        .collect();
    let spread = runs.len() < threads && threads > 1;
    let partials: Vec<Vec<f32>> = runs
        .par_iter()
        .map(|run| {
            let mut partial = vec![0f32; size];
            add(run, &mut partial, spread);
            partial
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![0f32; size]);
    for part in parts {
        for (a, b) in sum.iter_mut().zip(&part) {
            *a += b;
        }
    }
    sum
}

/// Geometry of a square-kernel convolution over an `h`×`w` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    k: usize,
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Window {
    fn new(h: usize, w: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        if stride == 0 || k == 0 || h + 2 * padding < k || w + 2 * padding < k {
            bail!("conv window {k}/{stride}/{padding} does not fit a {h}x{w} input");
        }
        Ok(Self {
            k,
            stride,
            padding,
            h,
            w,
            oh: (h + 2 * padding - k) / stride + 1,
            ow: (w + 2 * padding - k) / stride + 1,
        })
    }

    /// Outputs along an axis whose tap `kk` reads inside it.
    fn valid(&self, kk: usize, len: usize, out: usize) -> Range<usize> {
        valid_range(kk, self.stride, self.padding, len, out)
    }

    /// Whether the columns of an image are the image itself (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.padding == 0
    }
}

/// One convolution's sizes: `n` images of `c` channels, `o` output channels, and the window.
#[derive(Clone, Copy, Debug)]
struct Plan {
    g: Window,
    n: usize,
    c: usize,
    o: usize,
}

impl Plan {
    fn new(g: Window, n: usize, c: usize, o: usize) -> Self {
        Self { g, n, c, o }
    }

    /// Output positions per image.
    fn l(&self) -> usize {
        self.g.oh * self.g.ow
    }

    /// Rows of the columns: `c·k·k`.
    fn k(&self) -> usize {
        self.c * self.g.k * self.g.k
    }

    fn in_len(&self) -> usize {
        self.c * self.g.h * self.g.w
    }

    fn out_len(&self) -> usize {
        self.o * self.l()
    }

    fn groups(&self) -> Vec<Range<usize>> {
        image_groups(self.n, self.l())
    }

    /// The parallelism left to `gemm` when `jobs` independent products run at once, and whether
    /// the layout work around each product is to be spread over the threads too.
    fn parallelism(jobs: usize) -> (Parallelism, bool) {
        let threads = rayon::current_num_threads();
        if jobs >= threads || threads == 1 {
            (Parallelism::None, false)
        } else {
            (Parallelism::Rayon(threads), true)
        }
    }

    /// The columns of images `images` (`[c·k·k, G·l]`): the input itself when it can be, else
    /// laid out in `buf` (across the threads when `spread`).
    ///
    /// A strided window reads its input rows split by phase first ([`SplitRows`]), so that each
    /// tap's part of a row is one contiguous copy, not a gather of every `stride`-th value
    /// (13 % of a DCGAN step).
    fn columns<'a>(
        &self,
        x: &'a [f32],
        images: &Range<usize>,
        buf: &'a mut Vec<f32>,
        spread: bool,
    ) -> &'a [f32] {
        if self.g.is_pointwise() && images.len() == 1 {
            return &x[images.start * self.in_len()..images.end * self.in_len()];
        }
        let (g, l, gl) = (self.g, self.l(), images.len() * self.l());
        let phases = SplitRows::new(g.w, g.stride, g.padding);
        let buf = scratch::prefix(buf, self.k() * gl);
        scratch::with(|[split]| {
            let src = &x[images.start * self.in_len()..images.end * self.in_len()];
            let src = if g.stride == 1 {
                src
            } else {
                let split = scratch::prefix(split, images.len() * self.c * g.h * phases.row);
                each_chunk(split, g.h * phases.row, spread, |plane, dst| {
                    phases.split(&src[plane * g.h * g.w..][..g.h * g.w], dst);
                });
                split
            };
            each_chunk(buf, gl, spread, |row_index, row| {
                let ch = row_index / (g.k * g.k);
                let (ky, kx) = ((row_index / g.k) % g.k, row_index % g.k);
                let cols = g.valid(kx, g.w, g.ow);
                let start = phases.start(kx, &cols);
                for (j, dst_img) in row.chunks_mut(l).enumerate() {
                    let plane = &src[(j * self.c + ch) * g.h * phases.row..][..g.h * phases.row];
                    // Zeros only where the window reads the padding: the buffer is reused, and
                    // filling all of it first would write every element twice.
                    let rows = g.valid(ky, g.h, g.oh);
                    dst_img[..rows.start * g.ow].fill(0.0);
                    dst_img[rows.end * g.ow..].fill(0.0);
                    for oy in rows {
                        let src_row = &plane[(oy * g.stride + ky - g.padding) * phases.row..];
                        let dst = &mut dst_img[oy * g.ow..(oy + 1) * g.ow];
                        dst[..cols.start].fill(0.0);
                        dst[cols.end..].fill(0.0);
                        dst[cols.clone()].copy_from_slice(&src_row[start..start + cols.len()]);
                    }
                }
            });
        });
        buf
    }

    /// Adds columns `cols` (`[c·k·k, G·l]`) into the images they came from (`dst`: the group's
    /// `[G, c, h, w]`, overwritten), summing overlapping windows: the adjoint of
    /// [`Self::columns`]. A strided window sums into split rows, as [`Self::columns`] reads them,
    /// and merges them at the end.
    fn add_columns(&self, cols: &[f32], images: usize, dst: &mut [f32], spread: bool) {
        let (g, l, gl) = (self.g, self.l(), images * self.l());
        let phases = SplitRows::new(g.w, g.stride, g.padding);
        each_chunk(dst, g.h * g.w, spread, |plane_index, xp| {
            let (j, ch) = (plane_index / self.c, plane_index % self.c);
            let sum = |plane: &mut [f32]| {
                plane.fill(0.0);
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        let row = &cols[(ch * g.k * g.k + ky * g.k + kx) * gl + j * l..][..l];
                        let span = g.valid(kx, g.w, g.ow);
                        let start = phases.start(kx, &span);
                        for oy in g.valid(ky, g.h, g.oh) {
                            let iy = oy * g.stride + ky - g.padding;
                            let src = &row[oy * g.ow..(oy + 1) * g.ow];
                            let out = &mut plane[iy * phases.row + start..][..span.len()];
                            for (d, s) in out.iter_mut().zip(&src[span.clone()]) {
                                *d += s;
                            }
                        }
                    }
                }
            };
            if g.stride == 1 {
                sum(xp);
            } else {
                scratch::with(|[split]| {
                    let split = scratch::prefix(split, g.h * phases.row);
                    sum(split);
                    phases.merge(split, xp);
                });
            }
        });
    }

    /// The group's `[o, G·l]` matrix of an `[N, o, l]` tensor: in place for one image, else
    /// gathered into `buf` (across the threads when `spread`).
    fn gather<'a>(
        &self,
        y: &'a [f32],
        images: &Range<usize>,
        buf: &'a mut Vec<f32>,
        spread: bool,
    ) -> &'a [f32] {
        let (l, ol) = (self.l(), self.out_len());
        if images.len() == 1 {
            return &y[images.start * ol..images.end * ol];
        }
        let gl = images.len() * l;
        let buf = scratch::prefix(buf, self.o * gl);
        each_chunk(buf, gl, spread, |oc, row| {
            for (j, b) in images.clone().enumerate() {
                row[j * l..][..l].copy_from_slice(&y[b * ol + oc * l..][..l]);
            }
        });
        buf
    }

    /// Writes a group's `[o, G·l]` product into its images' `[G, o, l]` slice (across the
    /// threads when `spread`).
    fn scatter(&self, product: &[f32], dst: &mut [f32], spread: bool) {
        let (l, ol) = (self.l(), self.out_len());
        let gl = dst.len() / ol * l;
        each_chunk(dst, ol, spread, |j, image| {
            for (oc, plane) in image.chunks_mut(l).enumerate() {
                plane.copy_from_slice(&product[oc * gl + j * l..][..l]);
            }
        });
    }
}

/// A strided matrix operand of [`matmul`].
#[derive(Clone, Copy)]
pub(super) struct Operand<'a> {
    data: &'a [f32],
    /// Row stride.
    rs: usize,
    /// Column stride.
    cs: usize,
}

impl<'a> Operand<'a> {
    /// A row-major matrix whose rows start `stride` values apart (its width, or more).
    pub(super) fn rows(data: &'a [f32], stride: usize) -> Self {
        Self {
            data,
            rs: stride,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix of `width` columns.
    pub(super) fn transposed(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: width,
        }
    }

    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len());
        }
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` with row-major `dst`; accumulates when `accumulate`.
pub(super) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n);
    lhs.check(m, k);
    rhs.check(k, n);
    // SAFETY: the bounds of all three matrices were checked above against their slices, and
    // `dst` is borrowed mutably, so nothing else reads or writes it during the product.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn check_weight(w: &Layout, p: &Plan, op: &str) -> Result<()> {
    let expected = (p.o, p.c, p.g.k, p.g.k);
    if w.shape().dims4()? != expected {
        bail!("{op}: weight {:?} does not fit {expected:?}", w.shape());
    }
    Ok(())
}

/// The operands of a gradient, cut from the graph: a gradient built from tracked tensors would
/// keep the whole step's graph alive through the optimiser's moments, step after step.
fn detached(a: &Tensor, b: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    Ok((a.detach(), b.detach(), grad.detach().contiguous()?))
}

/// A gradient only for an operand that is trained or depends on something trained: the first
/// convolution's input gradient (the photos') is as costly as its value and goes nowhere.
fn when(wanted: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    wanted.then(f).transpose()
}

/// The convolution: `x [N, C, H, W]` and `w [O, C, k, k]` → `[N, O, oh, ow]`.
#[derive(Clone, Copy)]
struct Conv(Window);

/// Its adjoint in the input: `dy [N, O, oh, ow]` and `w [O, C, k, k]` → `[N, C, H, W]` (also
/// the transposed convolution).
#[derive(Clone, Copy)]
struct ConvData(Window);

/// Its weight gradient: `x [N, C, H, W]` and `dy [N, O, oh, ow]` → `[O, C, k, k]`.
#[derive(Clone, Copy)]
struct ConvFilter(Window);

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (
            cpu_slice(xs, xl, "conv2d", "input")?,
            cpu_slice(ws, wl, "conv2d", "weight")?,
        );
        let (n, c, h, wd) = xl.shape().dims4()?;
        let g = self.0;
        if (h, wd) != (g.h, g.w) {
            bail!(
                "conv2d: input {h}x{wd} differs from the window's {}x{}",
                g.h,
                g.w
            );
        }
        let p = Plan::new(g, n, c, wl.shape().dims4()?.0);
        check_weight(wl, &p, "conv2d")?;
        if winograd::applies(g.k, g.stride, g.padding) {
            let y = winograd::conv3x3(x, (n, c, h, wd), &Filters::forward(w, p.o, c), g.padding);
            return Ok((CpuStorage::F32(y), Shape::from((n, p.o, g.oh, g.ow))));
        }
        let groups = p.groups();
        let (par, spread) = Plan::parallelism(groups.len());
        let mut out = output(n * p.out_len());
        group_slices(&mut out, &groups, p.out_len())
            .into_par_iter()
            .zip(groups)
            .for_each(|(dst, images)| {
                scratch::with(|[cols_buf, product]| {
                    let gl = images.len() * p.l();
                    let cols = p.columns(x, &images, cols_buf, spread);
                    let shape = (p.o, gl, p.k());
                    let (w, cols) = (Operand::rows(w, p.k()), Operand::rows(cols, gl));
                    if images.len() == 1 {
                        matmul(shape, dst, false, w, cols, par);
                    } else {
                        let product = scratch::prefix(product, p.o * gl);
                        matmul(shape, product, false, w, cols, par);
                        p.scatter(product, dst, spread);
                    }
                })
            });
        Ok((CpuStorage::F32(out), Shape::from((n, p.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let wanted = (x.track_op(), w.track_op());
        let (x, w, dy) = detached(x, w, dy)?;
        Ok((
            when(wanted.0, || dy.apply_op2(&w, ConvData(self.0)))?,
            when(wanted.1, || x.apply_op2(&dy, ConvFilter(self.0)))?,
        ))
    }
}

impl CustomOp2 for ConvData {
    fn name(&self) -> &'static str {
        "conv2d-data"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "conv2d-data";
        let (dy, w) = (
            cpu_slice(ys, yl, op, "gradient")?,
            cpu_slice(ws, wl, op, "weight")?,
        );
        let (n, o, oh, ow) = yl.shape().dims4()?;
        let g = self.0;
        if (oh, ow) != (g.oh, g.ow) {
            bail!(
                "{op}: input {oh}x{ow} differs from the window's output {}x{}",
                g.oh,
                g.ow
            );
        }
        let (wo, c, _, _) = wl.shape().dims4()?;
        if wo != o {
            bail!("{op}: weight {:?} does not fit {o} channels", wl.shape());
        }
        let p = Plan::new(g, n, c, o);
        check_weight(wl, &p, op)?;
        if winograd::applies(g.k, g.stride, g.padding) {
            // The adjoint of a 3×3 stride-1 window: the same window over the gradient with the
            // filters transposed and flipped, and the padding that gives back the input's size.
            let filters = Filters::adjoint(w, o, c);
            let dx = winograd::conv3x3(dy, (n, o, oh, ow), &filters, 2 - g.padding);
            return Ok((CpuStorage::F32(dx), Shape::from((n, c, g.h, g.w))));
        }
        let groups = p.groups();
        let (par, spread) = Plan::parallelism(groups.len());
        // Every element is written: by the product, or zeroed by `add_columns` first.
        let mut dx = output(n * p.in_len());
        group_slices(&mut dx, &groups, p.in_len())
            .into_par_iter()
            .zip(groups)
            .for_each(|(dst, images)| {
                scratch::with(|[dy_buf, cols]| {
                    let gl = images.len() * p.l();
                    let dyg = Operand::rows(p.gather(dy, &images, dy_buf, spread), gl);
                    let wt = Operand::transposed(w, p.k());
                    let shape = (p.k(), gl, p.o);
                    if p.g.is_pointwise() && images.len() == 1 {
                        matmul(shape, dst, false, wt, dyg, par);
                    } else {
                        let cols = scratch::prefix(cols, p.k() * gl);
                        matmul(shape, cols, false, wt, dyg, par);
                        p.add_columns(cols, images.len(), dst, spread);
                    }
                })
            });
        Ok((CpuStorage::F32(dx), Shape::from((n, c, g.h, g.w))))
    }

    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _dx: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let wanted = (dy.track_op(), w.track_op());
        let (dy, w, grad) = detached(dy, w, grad)?;
        Ok((
            when(wanted.0, || grad.apply_op2(&w, Conv(self.0)))?,
            when(wanted.1, || grad.apply_op2(&dy, ConvFilter(self.0)))?,
        ))
    }
}

impl CustomOp2 for ConvFilter {
    fn name(&self) -> &'static str {
        "conv2d-filter"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "conv2d-filter";
        let (x, dy) = (
            cpu_slice(xs, xl, op, "input")?,
            cpu_slice(ys, yl, op, "gradient")?,
        );
        let (n, c, h, wd) = xl.shape().dims4()?;
        let (ny, o, oh, ow) = yl.shape().dims4()?;
        let g = self.0;
        if (h, wd, oh, ow) != (g.h, g.w, g.oh, g.ow) || ny != n {
            bail!(
                "{op}: input {:?} and gradient {:?} do not fit {g:?}",
                xl.shape(),
                yl.shape()
            );
        }
        if winograd::applies(g.k, g.stride, g.padding) && g.oh * g.ow >= WINOGRAD_WEIGHT_GRADIENT {
            let dw = winograd::weight_grad3x3(x, (n, c, h, wd), dy, o, g.padding);
            return Ok((CpuStorage::F32(dw), Shape::from((o, c, g.k, g.k))));
        }
        let p = Plan::new(g, n, c, o);
        let dw = sum_over_runs(&p.groups(), p.o * p.k(), |run, dw, spread| {
            let par = if spread {
                Parallelism::Rayon(rayon::current_num_threads())
            } else {
                Parallelism::None
            };
            scratch::with(|[cols_buf, dy_buf]| {
                for images in run.iter() {
                    let gl = images.len() * p.l();
                    let cols = Operand::transposed(p.columns(x, images, cols_buf, spread), gl);
                    let dyg = Operand::rows(p.gather(dy, images, dy_buf, spread), gl);
                    matmul((p.o, p.k(), gl), dw, true, dyg, cols, par);
                }
            })
        });
        Ok((CpuStorage::F32(dw), Shape::from((o, c, g.k, g.k))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _dw: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let wanted = (x.track_op(), dy.track_op());
        let (x, dy, grad) = detached(x, dy, grad)?;
        Ok((
            when(wanted.0, || dy.apply_op2(&grad, ConvData(self.0)))?,
            when(wanted.1, || x.apply_op2(&grad, Conv(self.0)))?,
        ))
    }
}

/// Dense `conv2d(x [N, C, H, W], w [O, C, k, k])`, stride and zero padding, no dilation or groups.
///
/// On the CPU it runs on the kernels above (fast in both directions); elsewhere it is candle's
/// conv2d.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !on_cpu(x) {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let (_, c, h, wd) = x.dims4()?;
    let (_, ci, k, k2) = w.dims4()?;
    if ci != c || k != k2 {
        bail!(
            "conv2d: weight {:?} does not fit input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let g = Window::new(h, wd, k, stride, padding)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, Conv(g))
}

/// `conv_transpose2d(x [N, C, H, W], w [C, O, k, k])` (PyTorch layout), stride and padding,
/// no output padding: the output side is `(H − 1)·s − 2p + k`.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !on_cpu(x) {
        return x.conv_transpose2d(w, padding, 0, stride, 1);
    }
    let (_, c, h, wd) = x.dims4()?;
    let (ci, _, k, k2) = w.dims4()?;
    if ci != c || k != k2 {
        bail!(
            "conv_transpose2d: weight {:?} does not fit input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let out_h = (h - 1) * stride + k;
    let out_w = (wd - 1) * stride + k;
    if out_h < 2 * padding + 1 || out_w < 2 * padding + 1 {
        bail!("conv_transpose2d: padding {padding} too large");
    }
    // The transposed convolution is the adjoint of a convolution over the output's geometry,
    // whose weight `[O_conv = C, C_conv = O, k, k]` is PyTorch's transposed layout as it is.
    let g = Window::new(out_h - 2 * padding, out_w - 2 * padding, k, stride, padding)?;
    if (g.oh, g.ow) != (h, wd) {
        bail!("conv_transpose2d: inconsistent geometry {g:?} for input {h}x{wd}");
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, ConvData(g))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let s = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        d / s.max(1.0)
    }

    /// Runs `f` on a pool of `threads` threads: with 3, a single group of images spreads its
    /// layout work over the threads; with 1, nothing is spread.
    pub(in crate::ops) fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn groups_cover_the_images_in_order_with_as_many_for_each_thread() {
        let groups = |threads, n, columns| on_threads(threads, || image_groups(n, columns));
        // ResNet-18 at 112 px, 16 images: its stem, second, third and last stages.
        assert_eq!(
            groups(2, 16, 3136),
            (0..16).map(|b| b..b + 1).collect::<Vec<_>>()
        );
        assert_eq!(
            groups(2, 16, 196),
            [0..2, 2..5, 5..8, 8..10, 10..13, 13..16]
        );
        assert_eq!(groups(2, 16, 49), [0..8, 8..16]);
        assert_eq!(groups(2, 16, 16), vec![Range { start: 0, end: 16 }]);
        assert_eq!(
            groups(3, 16, 196),
            [0..2, 2..5, 5..7, 7..10, 10..13, 13..16]
        );
        for threads in 1..5 {
            for n in 0..40 {
                for columns in [1, 7, 49, 100, 511, 512, 513, 4000] {
                    let g = groups(threads, n, columns);
                    let most = GROUP_COLUMNS.div_ceil(columns).max(1);
                    assert_eq!(g.iter().map(|r| r.len()).sum::<usize>(), n);
                    for pair in g.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start);
                    }
                    assert!(g.iter().all(|r| !r.is_empty() && r.len() <= most));
                }
            }
        }
    }

    /// Values and gradients against candle's own conv2d, where candle's backward is correct
    /// (even sizes; its transposed-conv input gradient breaks on odd sizes with stride 2), with
    /// the layout work on one thread and spread over three.
    #[test]
    fn conv2d_matches_candle() -> Result<()> {
        on_threads(1, conv2d_cases)?;
        on_threads(3, conv2d_cases)
    }

    fn conv2d_cases() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, h, w, o, k, s, p) in &[
            (2, 3, 8, 8, 4, 3, 1, 1),
            (2, 4, 8, 10, 5, 3, 2, 1),
            (1, 3, 16, 16, 8, 7, 2, 3),
            (2, 6, 8, 8, 4, 1, 2, 0),
            (2, 6, 5, 5, 4, 1, 1, 0),
            (3, 2, 6, 6, 3, 4, 2, 1),
            (1, 2, 5, 7, 3, 3, 1, 0),
            // Several groups of several images, and single images of more than 512 positions.
            (70, 3, 4, 4, 5, 3, 1, 1),
            (3, 3, 24, 24, 4, 3, 1, 1),
            (33, 4, 6, 6, 3, 1, 1, 0),
        ] {
            let x = Var::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let wt = Var::randn(0f32, 1.0, (o, c, k, k), &dev)?;
            let ours = conv2d(x.as_tensor(), wt.as_tensor(), s, p)?;
            let theirs = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1)?;
            let case = format!("{n} {c} {h} {w} {o} k{k} s{s} p{p}");
            assert!(max_rel(&ours, &theirs) < 1e-5, "forward {case}");
            let up = Tensor::randn(0f32, 1.0, ours.shape(), &dev)?;
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for v in [&x, &wt] {
                let (a, b) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(max_rel(a, b) < 1e-5, "gradient {case}");
            }
        }
        Ok(())
    }

    #[test]
    fn conv_transpose2d_matches_candle() -> Result<()> {
        on_threads(1, conv_transpose2d_cases)?;
        on_threads(3, conv_transpose2d_cases)
    }

    fn conv_transpose2d_cases() -> Result<()> {
        let dev = Device::Cpu;
        // DCGAN's shapes: 1→4 (k4 s1 p0), then doubling (k4 s2 p1).
        for &(n, c, h, o, k, s, p) in &[
            (2, 8, 1, 6, 4, 1, 0),
            (2, 6, 4, 3, 4, 2, 1),
            (1, 3, 5, 2, 3, 2, 1),
            (2, 4, 3, 5, 3, 1, 1),
        ] {
            let x = Var::randn(0f32, 1.0, (n, c, h, h), &dev)?;
            let wt = Var::randn(0f32, 1.0, (c, o, k, k), &dev)?;
            let ours = conv_transpose2d(x.as_tensor(), wt.as_tensor(), s, p)?;
            let theirs = x.as_tensor().conv_transpose2d(wt.as_tensor(), p, 0, s, 1)?;
            let case = format!("{n} {c} {h} {o} k{k} s{s} p{p}");
            assert!(max_rel(&ours, &theirs) < 1e-5, "forward {case}");
            let up = Tensor::randn(0f32, 1.0, ours.shape(), &dev)?;
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for v in [&x, &wt] {
                let (a, b) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(max_rel(a, b) < 1e-5, "gradient {case}");
            }
        }
        Ok(())
    }

    /// ⟨conv(x, w), y⟩ = ⟨x, data(y, w)⟩ = ⟨w, filter(x, y)⟩: the three ops are one bilinear
    /// form read three ways, for single images and groups, pointwise and padded windows.
    #[test]
    fn the_three_products_are_adjoint() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, o, h, w, k, s, p) in &[
            (2, 3, 4, 7, 5, 3, 2, 1),
            (3, 2, 3, 6, 6, 4, 2, 1),
            (5, 3, 2, 5, 5, 3, 1, 0),
            (2, 4, 3, 9, 4, 5, 3, 2),
            (40, 3, 5, 4, 4, 1, 1, 0),
            (1, 6, 5, 30, 30, 1, 1, 0),
            (9, 2, 2, 12, 12, 3, 1, 1),
        ] {
            let g = Window::new(h, w, k, s, p)?;
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev)?;
            let y = Tensor::randn(0f32, 1.0, (n, o, g.oh, g.ow), &dev)?;
            let dot = |a: &Tensor, b: &Tensor| -> Result<f32> { (a * b)?.sum_all()?.to_scalar() };
            let a = dot(&x.apply_op2(&wt, Conv(g))?, &y)?;
            let b = dot(&x, &y.apply_op2(&wt, ConvData(g))?)?;
            let d = dot(&wt, &x.apply_op2(&y, ConvFilter(g))?)?;
            let tol = 1e-4 * (1.0 + a.abs());
            let case = format!("{n} {c} {o} {h}x{w} k{k} s{s} p{p}");
            assert!(
                (a - b).abs() < tol && (a - d).abs() < tol,
                "{case}: {a} {b} {d}"
            );
        }
        Ok(())
    }

    /// Gradients carry no graph: one that did would keep each step's activations alive through
    /// the optimiser's moments (memory grew by gigabytes per MobileNetV2 step before the fix).
    #[test]
    fn gradients_do_not_track_the_graph() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (2, 3, 6, 6), &dev)?;
        let w1 = Var::randn(0f32, 1.0, (4, 3, 3, 3), &dev)?;
        let w2 = Var::randn(0f32, 1.0, (4, 5, 4, 4), &dev)?;
        // A convolution, then a transposed one on its tracked output.
        let h = conv2d(x.as_tensor(), w1.as_tensor(), 1, 1)?;
        let y = conv_transpose2d(&h, w2.as_tensor(), 2, 1)?;
        let grads = y.sqr()?.sum_all()?.backward()?;
        for v in [&x, &w1, &w2] {
            assert!(!grads.get(v).unwrap().track_op());
        }
        Ok(())
    }

    /// The weight gradient sums over the batch in a fixed order, whatever the threads do
    /// (bit-identical resume depends on it).
    #[test]
    fn the_weight_gradient_is_deterministic() -> Result<()> {
        let dev = Device::Cpu;
        let g = Window::new(6, 6, 3, 1, 1)?;
        let x = Tensor::randn(0f32, 1.0, (37, 4, 6, 6), &dev)?;
        let y = Tensor::randn(0f32, 1.0, (37, 5, 6, 6), &dev)?;
        let first = x
            .apply_op2(&y, ConvFilter(g))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for _ in 0..5 {
            let again = x
                .apply_op2(&y, ConvFilter(g))?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert_eq!(first, again);
        }
        Ok(())
    }
}

#[cfg(test)]
mod pointwise_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn pointwise_conv_matches_candle_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (3, 5, 4, 6), &dev)?;
        let w = Var::randn(0f32, 1.0, (7, 5, 1, 1), &dev)?;
        let ours = conv2d(x.as_tensor(), w.as_tensor(), 1, 0)?;
        let theirs = x.as_tensor().conv2d(w.as_tensor(), 0, 1, 1, 1)?;
        let up = Tensor::randn(0f32, 1.0, ours.shape(), &dev)?;
        let d = |a: &Tensor, b: &Tensor| -> Result<f32> {
            (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
        };
        assert!(d(&ours, &theirs)? < 1e-5);
        let g1 = (ours * &up)?.sum_all()?.backward()?;
        let g2 = (theirs * &up)?.sum_all()?.backward()?;
        assert!(d(g1.get(&x).unwrap(), g2.get(&x).unwrap())? < 1e-4);
        assert!(d(g1.get(&w).unwrap(), g2.get(&w).unwrap())? < 1e-4);
        Ok(())
    }
}
