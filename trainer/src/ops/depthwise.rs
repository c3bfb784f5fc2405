//! Depthwise 2-D convolution (`groups == channels`, one k×k filter per channel) for the CPU.
//!
//! candle runs a grouped convolution as one convolution per group, which makes MobileNetV2's
//! depthwise layers about ten times slower than they need to be. This op computes them directly,
//! plane by plane in parallel, with hand-written gradients for input and weight, each a few long
//! vectorised sweeps over a padded copy of the plane ([`Phases`]).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::wide;
use super::{cpu_slice, output, own_kernels};

/// Depthwise convolution of `x [N, C, H, W]` with `w [C, 1, k, k]`.
///
/// Uses the direct kernels on CPU tensors and on CUDA (`cuda/`, in builds with the `cuda` feature),
/// candle's grouped `conv2d` elsewhere, so the same model code runs on each.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if own_kernels(x) {
        x.apply_op2(w, DepthwiseConv { stride, padding })
    } else {
        let channels = x.dim(1)?;
        x.conv2d(w, padding, stride, 1, channels)
    }
}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(
        x: (usize, usize, usize, usize),
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (n, c, h, w) = x;
        if stride == 0 || h + 2 * padding < k || w + 2 * padding < k {
            bail!("depthwise conv: kernel {k} does not fit input {h}x{w} with padding {padding}");
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            stride,
            padding,
            oh: (h + 2 * padding - k) / stride + 1,
            ow: (w + 2 * padding - k) / stride + 1,
        })
    }

    /// The padded input's height and width.
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.padding, self.w + 2 * self.padding)
    }

    /// The same geometry for the CUDA kernels, with kernel size `k`.
    #[cfg(feature = "cuda")]
    fn window(&self, k: usize) -> super::cuda::Window {
        super::cuda::Window {
            n: self.n,
            c: self.c,
            h: self.h,
            w: self.w,
            k,
            stride: self.stride,
            padding: self.padding,
            oh: self.oh,
            ow: self.ow,
        }
    }
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

struct DepthwiseConv {
    stride: usize,
    padding: usize,
}

impl DepthwiseConv {
    /// The geometry of input `l1` and weight `l2`, and the kernel size; refuses a weight that does
    /// not fit the input.
    fn geometry(&self, l1: &Layout, l2: &Layout) -> Result<(Geometry, usize)> {
        let (c_w, one, k, k2) = dims4(l2)?;
        let g = Geometry::new(dims4(l1)?, k, self.stride, self.padding)?;
        if c_w != g.c || one != 1 || k != k2 {
            bail!(
                "depthwise conv: weight {:?} does not match {} channels",
                l2.shape(),
                g.c
            );
        }
        Ok((g, k))
    }
}

impl CustomOp2 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "depthwise conv", "input")?;
        let wt = cpu_slice(s2, l2, "depthwise conv", "weight")?;
        let (g, k) = self.geometry(l1, l2)?;
        let taps = k * k;
        let mut out = output(g.n * g.c * g.oh * g.ow);
        out.par_chunks_mut(g.oh * g.ow).enumerate().for_each_init(
            || (Phases::default(), Vec::new()),
            |(src, run), (plane, o)| {
                let c = plane % g.c;
                src.input(x, plane, &g);
                run.resize(src.run_len(g.oh, g.ow), 0.0);
                correlate(src, &wt[c * taps..][..taps], k, run);
                compact(run, src.wq, g.ow, o);
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.c, g.oh, g.ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (g, k) = self.geometry(l1, l2)?;
        super::cuda::depthwise((s1, l1), (s2, l2), &g.window(k))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        // Only gradients that go somewhere: none for a frozen stem's output or frozen weights.
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(
                &w.contiguous()?,
                &InputGrad {
                    stride: self.stride,
                    padding: self.padding,
                    h,
                    w: wd,
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.contiguous()?.apply_op2_no_bwd(
                &grad,
                &WeightGrad {
                    stride: self.stride,
                    padding: self.padding,
                    k: w.dim(2)?,
                },
            )?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// dL/dx from dL/dy (arg 1) and the weight (arg 2).
struct InputGrad {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl InputGrad {
    /// The forward geometry for gradient `l1` and weight `l2`, and the kernel size.
    fn geometry(&self, l1: &Layout, l2: &Layout) -> Result<(Geometry, usize)> {
        let (n, c, oh, ow) = dims4(l1)?;
        let (_, _, k, _) = dims4(l2)?;
        let g = Geometry::new((n, c, self.h, self.w), k, self.stride, self.padding)?;
        if (g.oh, g.ow) != (oh, ow) {
            bail!("depthwise conv grad: gradient {oh}x{ow} does not match input");
        }
        Ok((g, k))
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gy = cpu_slice(s1, l1, "depthwise conv", "gradient")?;
        let wt = cpu_slice(s2, l2, "depthwise conv", "weight")?;
        let (g, k) = self.geometry(l1, l2)?;
        let (n, c, oh, ow) = (g.n, g.c, g.oh, g.ow);
        // The adjoint of a strided window is a stride-1 window with the taps reversed over the
        // gradient spread out by the stride (zeros between) and padded by `k − 1 − p`.
        let taps = k * k;
        let flipped: Vec<f32> = (0..c * taps)
            .map(|i| wt[i / taps * taps + taps - 1 - i % taps])
            .collect();
        let q = k as isize - 1 - self.padding as isize;
        let spread = (g.h + k - 1, g.w + k - 1);
        let mut gx = output(n * c * g.h * g.w);
        gx.par_chunks_mut(g.h * g.w).enumerate().for_each_init(
            || (Phases::default(), Vec::new()),
            |(src, run), (plane, dx)| {
                let ch = plane % c;
                let dy = &gy[plane * oh * ow..(plane + 1) * oh * ow];
                src.fill(dy, (oh, ow), g.stride, q, spread, 1);
                run.resize(src.run_len(g.h, g.w), 0.0);
                correlate(src, &flipped[ch * taps..][..taps], k, run);
                compact(run, src.wq, g.w, dx);
            },
        );
        Ok((CpuStorage::F32(gx), Shape::from((n, c, g.h, g.w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (g, k) = self.geometry(l1, l2)?;
        super::cuda::depthwise_grad_input((s1, l1), (s2, l2), &g.window(k))
    }
}

/// dL/dw from the input (arg 1) and dL/dy (arg 2).
struct WeightGrad {
    stride: usize,
    padding: usize,
    k: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "depthwise conv", "input")?;
        let gy = cpu_slice(s2, l2, "depthwise conv", "gradient")?;
        let k = self.k;
        let g = Geometry::new(dims4(l1)?, k, self.stride, self.padding)?;
        let ohw = g.oh * g.ow;
        let mut gw = vec![0f32; g.c * k * k];
        gw.par_chunks_mut(k * k).enumerate().for_each_init(
            || (Phases::default(), Vec::new()),
            |(src, dy_run), (ch, dw)| {
                for b in 0..g.n {
                    let plane = b * g.c + ch;
                    src.input(x, plane, &g);
                    // The gradient as wide as the input's runs, zeros past each row's end.
                    dy_run.clear();
                    dy_run.resize(src.run_len(g.oh, g.ow), 0.0);
                    for (oy, row) in gy[plane * ohw..][..ohw].chunks_exact(g.ow).enumerate() {
                        dy_run[oy * src.wq..][..g.ow].copy_from_slice(row);
                    }
                    add_tap_dots(dy_run, src, k, dw);
                }
            },
        );
        Ok((CpuStorage::F32(gw), Shape::from((g.c, 1, k, k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = Geometry::new(dims4(l1)?, self.k, self.stride, self.padding)?;
        super::cuda::depthwise_grad_weight((s1, l1), (s2, l2), &g.window(self.k))
    }
}

/// A plane laid out so that a sliding window's every tap is one contiguous run: padded with zeros
/// and split into its `s × s` phases (rows and columns by their remainder mod the stride `s`),
/// each `hq × wq`. Tap `(ky, kx)` of output `(oy, ox)` reads phase `(ky % s, kx % s)` at
/// `(oy + ky / s)·wq + ox + kx / s`, so for a whole plane of outputs, computed `wq` wide (the
/// columns past `ow` are discarded), each tap is one long run of multiply-adds instead of one
/// short one per output row: most of MobileNetV2's maps are 7 to 28 wide.
#[derive(Default)]
struct Phases {
    s: usize,
    hq: usize,
    wq: usize,
    data: Vec<f32>,
}

impl Phases {
    /// Lays out `plane` (`h × w`) with element `(i, j)` at padded position
    /// `(q + i·d, q + j·d)` of an `hp × wp` plane (`d > 1` dilates it, as the input gradient of a
    /// strided window needs; positions outside are dropped), in phases of stride `s`.
    fn fill(
        &mut self,
        plane: &[f32],
        (h, w): (usize, usize),
        d: usize,
        q: isize,
        (hp, wp): (usize, usize),
        s: usize,
    ) {
        self.s = s;
        self.hq = hp.div_ceil(s);
        self.wq = wp.div_ceil(s);
        let (hq, wq) = (self.hq, self.wq);
        self.data.clear();
        self.data.resize(s * s * hq * wq, 0.0);
        let inside = |i: usize, len: usize| {
            let r = q + (i * d) as isize;
            (r >= 0 && (r as usize) < len).then_some(r as usize)
        };
        for (i, src) in plane.chunks_exact(w).take(h).enumerate() {
            let Some(r) = inside(i, hp) else { continue };
            let (ry, a) = (r % s, r / s);
            // The networks' cases, each as one tight loop: stride 1 (a plain copy), stride 2
            // (a row split into its even and odd columns), and the stride-2 input gradient (a
            // row spread out by the dilation).
            if q >= 0 && q as usize + (w - 1) * d < wp {
                let q = q as usize;
                if s == 1 {
                    let row = &mut self.data[a * wq + q..][..(w - 1) * d + 1];
                    if d == 1 {
                        row.copy_from_slice(src);
                    } else {
                        for (dst, &v) in row.chunks_mut(d).zip(src) {
                            dst[0] = v;
                        }
                    }
                    continue;
                }
                if s == 2 && d == 1 {
                    // Column q + j goes to phase (q + j) % 2 at (q + j) / 2.
                    let at = |c: usize| ((ry * 2 + c % 2) * hq + a) * wq + c / 2;
                    let (first, second) =
                        two_runs(&mut self.data, (at(q), w.div_ceil(2)), (at(q + 1), w / 2));
                    for ((pair, x0), x1) in src.chunks_exact(2).zip(first.iter_mut()).zip(second) {
                        *x0 = pair[0];
                        *x1 = pair[1];
                    }
                    if w % 2 == 1 {
                        first[w / 2] = src[w - 1];
                    }
                    continue;
                }
            }
            // Columns j ≡ j0 (mod s) all land in one phase, d apart: one strided copy each.
            for j0 in 0..s.min(w) {
                let c0 = q + (j0 * d) as isize;
                let skip = if c0 >= 0 {
                    0
                } else {
                    c0.unsigned_abs().div_ceil(s * d)
                };
                let c = (c0 + (skip * s * d) as isize) as usize;
                let (rx, b0) = (c % s, c / s);
                if c >= wp {
                    continue;
                }
                // Padded columns c, c + s·d, … up to wp.
                let count = (wp - c).div_ceil(s * d);
                let row = &mut self.data[((ry * s + rx) * hq + a) * wq..][..wq];
                let sources = src.iter().skip(j0 + skip * s).step_by(s);
                for (dst, &v) in row[b0..].iter_mut().step_by(d).zip(sources).take(count) {
                    *dst = v;
                }
            }
        }
    }

    /// Lays out input plane `plane` of `x` (`[N, C, h, w]`) for the window `g`.
    fn input(&mut self, x: &[f32], plane: usize, g: &Geometry) {
        let hw = g.h * g.w;
        let q = g.padding as isize;
        self.fill(
            &x[plane * hw..][..hw],
            (g.h, g.w),
            1,
            q,
            g.padded(),
            g.stride,
        );
    }

    /// Tap `(ky, kx)`'s run of `len` values.
    #[inline(always)]
    fn tap(&self, ky: usize, kx: usize, len: usize) -> &[f32] {
        let (s, plane) = (self.s, self.hq * self.wq);
        let phase = (ky % s) * s + kx % s;
        let start = phase * plane + (ky / s) * self.wq + kx / s;
        &self.data[start..start + len]
    }

    /// The length of a `oh × ow` output computed `wq` wide.
    fn run_len(&self, oh: usize, ow: usize) -> usize {
        (oh - 1) * self.wq + ow
    }
}

/// The runs `data[a..a + la]` and `data[b..b + lb]`, which must not overlap.
fn two_runs(
    data: &mut [f32],
    (a, la): (usize, usize),
    (b, lb): (usize, usize),
) -> (&mut [f32], &mut [f32]) {
    if a < b {
        let (lo, hi) = data.split_at_mut(b);
        (&mut lo[a..][..la], &mut hi[..lb])
    } else {
        let (second, first) = two_runs(data, (b, lb), (a, la));
        (first, second)
    }
}

/// Lanes of the sweeps below: vectorisable fixed-size blocks, and f32 sums in a fixed order.
const LANES: usize = 8;

/// `out[j] += w[0]·a[j] + w[1]·b[j] + w[2]·c[j]`: three taps in one sweep of `out` (zipped
/// slices, which the compiler vectorises; indexing an array of runs it did not).
#[inline(always)]
fn axpy3(out: &mut [f32], [a, b, c]: [&[f32]; 3], [wa, wb, wc]: [f32; 3]) {
    for (((o, a), b), c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o += wa * a + wb * b + wc * c;
    }
}

/// `out[j] = w[0]·a[j] + w[1]·b[j] + w[2]·c[j]`.
#[inline(always)]
fn set3(out: &mut [f32], [a, b, c]: [&[f32]; 3], [wa, wb, wc]: [f32; 3]) {
    for (((o, a), b), c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = wa * a + wb * b + wc * c;
    }
}

/// `out[j] += w·a[j]`.
#[inline(always)]
fn axpy1(out: &mut [f32], a: &[f32], w: f32) {
    for (o, a) in out.iter_mut().zip(a) {
        *o += w * a;
    }
}

/// `Σ_j a[j]·r[j]` for three runs `r` at once (one read of `a`), summed in [`LANES`] lanes.
#[inline(always)]
fn dots3(a: &[f32], [r0, r1, r2]: [&[f32]; 3]) -> [f32; 3] {
    let mut acc = [[0f32; LANES]; 3];
    fn lanes(x: &[f32]) -> std::slice::ChunksExact<'_, f32> {
        x.chunks_exact(LANES)
    }
    for (((av, x), y), z) in lanes(a).zip(lanes(r0)).zip(lanes(r1)).zip(lanes(r2)) {
        for l in 0..LANES {
            acc[0][l] += av[l] * x[l];
            acc[1][l] += av[l] * y[l];
            acc[2][l] += av[l] * z[l];
        }
    }
    let n = a.len() / LANES * LANES;
    let tail = |r: &[f32]| -> f32 { a[n..].iter().zip(&r[n..]).map(|(x, y)| x * y).sum() };
    [
        acc[0].iter().sum::<f32>() + tail(r0),
        acc[1].iter().sum::<f32>() + tail(r1),
        acc[2].iter().sum::<f32>() + tail(r2),
    ]
}

/// `Σ_j a[j]·r[j]`, summed in [`LANES`] lanes.
#[inline(always)]
fn dot1(a: &[f32], r: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (av, x) in a.chunks_exact(LANES).zip(r.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += av[l] * x[l];
        }
    }
    let n = a.len() / LANES * LANES;
    acc.iter().sum::<f32>() + a[n..].iter().zip(&r[n..]).map(|(x, y)| x * y).sum::<f32>()
}

/// The taps `t = ky·k + kx` of a `k × k` window in groups of up to three: one sweep each (three
/// for the networks' 3×3 windows).
#[inline(always)]
fn tap_groups(k: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..k * k).step_by(3).map(move |t| t..(t + 3).min(k * k))
}

/// `out[j] = Σ_t w[t]·src.tap(t)[j]` over the `k × k` taps of the weights `w`.
fn correlate(src: &Phases, w: &[f32], k: usize, out: &mut [f32]) {
    wide(
        #[inline(always)]
        || {
            let len = out.len();
            for group in tap_groups(k) {
                let t0 = group.start;
                let run = |i: usize| src.tap((t0 + i) / k, (t0 + i) % k, len);
                let wt = |i: usize| w[t0 + i];
                if t0 == 0 && group.len() == 3 {
                    // The first three taps write `out`: no zero fill to add them to.
                    set3(out, [run(0), run(1), run(2)], [wt(0), wt(1), wt(2)]);
                    continue;
                }
                if t0 == 0 {
                    out.fill(0.0);
                }
                if group.len() == 3 {
                    axpy3(out, [run(0), run(1), run(2)], [wt(0), wt(1), wt(2)]);
                } else {
                    for i in 0..group.len() {
                        axpy1(out, run(i), wt(i));
                    }
                }
            }
        },
    )
}

/// Adds `Σ_j a[j]·src.tap(t)[j]` to `dw[t]` for every tap `t` of a `k × k` window.
fn add_tap_dots(a: &[f32], src: &Phases, k: usize, dw: &mut [f32]) {
    wide(
        #[inline(always)]
        || {
            let len = a.len();
            for group in tap_groups(k) {
                let t0 = group.start;
                let run = |i: usize| src.tap((t0 + i) / k, (t0 + i) % k, len);
                let dst = &mut dw[group.clone()];
                if group.len() == 3 {
                    for (d, v) in dst.iter_mut().zip(dots3(a, [run(0), run(1), run(2)])) {
                        *d += v;
                    }
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d += dot1(a, run(i));
                    }
                }
            }
        },
    )
}

/// Copies the `oh × ow` outputs out of a run computed `wq` wide.
fn compact(run: &[f32], wq: usize, ow: usize, dst: &mut [f32]) {
    for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
        row.copy_from_slice(&run[oy * wq..oy * wq + ow]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Direct loops: output, input gradient and weight gradient for upstream gradient `up`.
    #[allow(clippy::type_complexity)]
    fn naive(
        x: &[f32],
        w: &[f32],
        up: &[f32],
        (n, c, h, wd): (usize, usize, usize, usize),
        (k, s, p): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (wd + 2 * p - k) / s + 1;
        let mut y = vec![0f32; n * c * oh * ow];
        let mut gx = vec![0f32; x.len()];
        let mut gw = vec![0f32; w.len()];
        for b in 0..n {
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let o = ((b * c + ch) * oh + oy) * ow + ox;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let i = ((b * c + ch) * h + iy as usize) * wd + ix as usize;
                                let wi = (ch * k + ky) * k + kx;
                                y[o] += w[wi] * x[i];
                                gx[i] += w[wi] * up[o];
                                gw[wi] += x[i] * up[o];
                            }
                        }
                    }
                }
            }
        }
        (y, gx, gw)
    }

    fn close(a: &Tensor, b: &[f32], tol: f32) -> bool {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

    /// Values and both gradients against direct loops for the shapes MobileNetV2 uses and awkward
    /// ones (odd sizes, stride 2 with padding, 5×5 and 2×2 kernels, 1×1 maps, padding wider than
    /// the kernel), and against candle's grouped conv2d where candle's own backward handles the
    /// shape (it fails on odd widths with stride 2).
    #[test]
    fn matches_direct_loops_and_candle() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, h, w, k, s, p, candle_ok) in &[
            (2, 3, 7, 9, 3, 1, 1, true),
            (2, 4, 8, 8, 3, 2, 1, true),
            (1, 5, 9, 7, 3, 2, 1, false),
            (3, 2, 6, 6, 5, 1, 2, true),
            (1, 3, 5, 5, 3, 1, 0, true),
            (2, 2, 10, 11, 5, 2, 2, false),
            (2, 8, 16, 16, 3, 2, 1, true),
            (2, 3, 28, 28, 3, 1, 1, true),
            (1, 2, 29, 27, 3, 2, 1, false),
            (2, 3, 1, 1, 3, 1, 1, true),
            (1, 2, 2, 3, 3, 2, 1, false),
            (1, 2, 6, 6, 3, 1, 3, false),
            (1, 2, 7, 8, 2, 2, 0, false),
        ] {
            let x = Var::randn(0f32, 1f32, (n, c, h, w), &dev)?;
            let wt = Var::randn(0f32, 1f32, (c, 1, k, k), &dev)?;
            let ours = depthwise_conv2d(x.as_tensor(), wt.as_tensor(), s, p)?;
            // A random upstream gradient, so every output position matters.
            let up = Tensor::randn(0f32, 1f32, ours.shape(), &dev)?;
            let (y, gx, gw) = naive(
                &x.flatten_all()?.to_vec1()?,
                &wt.flatten_all()?.to_vec1()?,
                &up.flatten_all()?.to_vec1()?,
                (n, c, h, w),
                (k, s, p),
            );
            let case = format!("{n} {c} {h} {w} k{k} s{s} p{p}");
            assert!(close(&ours, &y, 1e-5), "forward {case}");
            let g = (&ours * &up)?.sum_all()?.backward()?;
            assert!(
                close(g.get(x.as_tensor()).unwrap(), &gx, 1e-5),
                "input grad {case}"
            );
            assert!(
                close(g.get(wt.as_tensor()).unwrap(), &gw, 1e-4),
                "weight grad {case}"
            );
            let reference = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, c)?;
            assert!(close(&reference, &y, 1e-5), "candle forward {case}");
            if candle_ok {
                let g2 = (reference * &up)?.sum_all()?.backward()?;
                assert!(
                    close(g2.get(x.as_tensor()).unwrap(), &gx, 1e-5),
                    "candle input grad {case}"
                );
                assert!(
                    close(g2.get(wt.as_tensor()).unwrap(), &gw, 1e-4),
                    "candle weight grad {case}"
                );
            }
        }
        Ok(())
    }
}
