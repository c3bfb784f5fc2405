//! Dense convolutions and transposed convolutions as im2col + matrix product, with fast gradients.
//!
//! candle computes the input gradient of a dense convolution with a naive transposed-convolution
//! loop, which dominates ResNet and DCGAN training time on a CPU. Here both directions go through
//! two memory-bound reshuffles, `im2col` and its adjoint `col2im` (each is the other's gradient),
//! and everything arithmetic is a matrix product, whose gradient candle already computes with gemm.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, on_cpu, valid_range};

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
    fn valid(&self, kk: usize, len: usize, out: usize) -> std::ops::Range<usize> {
        valid_range(kk, self.stride, self.padding, len, out)
    }
}

/// `[N, C, H, W]` → `[C·k·k, N·oh·ow]` (the batch size is the second field).
struct Im2Col(Window, usize);

/// The adjoint: `[C·k·k, N·oh·ow]` → `[N, C, H, W]`, summing overlapping windows.
struct Col2Im(Window, usize);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "im2col", "input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let g = self.0;
        if (h, w) != (g.h, g.w) {
            bail!(
                "im2col: input {h}x{w} differs from the window's {}x{}",
                g.h,
                g.w
            );
        }
        let (k, l_out) = (g.k, g.oh * g.ow);
        let mut out = vec![0f32; c * k * k * n * l_out];
        // Row (c, ky, kx) holds that kernel tap for every image and output position, so the whole
        // batch is one matrix product with the weights (no per-image products to sum afterwards).
        out.par_chunks_mut(n * l_out)
            .enumerate()
            .for_each(|(row_index, row)| {
                let ch = row_index / (k * k);
                let (ky, kx) = ((row_index / k) % k, row_index % k);
                let cols = g.valid(kx, w, g.ow);
                for b in 0..n {
                    let xp = &x[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                    let dst_img = &mut row[b * l_out..(b + 1) * l_out];
                    for oy in g.valid(ky, h, g.oh) {
                        let iy = oy * g.stride + ky - g.padding;
                        let dst = &mut dst_img[oy * g.ow..(oy + 1) * g.ow];
                        let src_row = &xp[iy * w..(iy + 1) * w];
                        if g.stride == 1 {
                            let start = cols.start + kx - g.padding;
                            dst[cols.clone()].copy_from_slice(&src_row[start..start + cols.len()]);
                        } else {
                            for ox in cols.clone() {
                                dst[ox] = src_row[ox * g.stride + kx - g.padding];
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((c * k * k, n * l_out))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(col2im(&grad.contiguous()?, self.0, self.1)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = cpu_slice(s, l, "im2col", "input")?;
        let (ckk, nl) = l.shape().dims2()?;
        let g = self.0;
        let n = self.1;
        let (k, h, w) = (g.k, g.h, g.w);
        let l_in = g.oh * g.ow;
        if ckk % (k * k) != 0 || nl != n * l_in {
            bail!(
                "col2im: columns {:?} do not match the window {g:?}",
                l.shape()
            );
        }
        let c = ckk / (k * k);
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(plane, xp)| {
                let (b, ch) = (plane / c, plane % c);
                for ky in 0..k {
                    for kx in 0..k {
                        let row =
                            &cols[(ch * k * k + ky * k + kx) * nl..][b * l_in..(b + 1) * l_in];
                        let span = g.valid(kx, w, g.ow);
                        for oy in g.valid(ky, h, g.oh) {
                            let iy = oy * g.stride + ky - g.padding;
                            let src = &row[oy * g.ow..(oy + 1) * g.ow];
                            let dst = &mut xp[iy * w..(iy + 1) * w];
                            if g.stride == 1 {
                                let start = span.start + kx - g.padding;
                                for (d, s) in dst[start..start + span.len()]
                                    .iter_mut()
                                    .zip(&src[span.clone()])
                                {
                                    *d += s;
                                }
                            } else {
                                for ox in span.clone() {
                                    dst[ox * g.stride + kx - g.padding] += src[ox];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2Col(self.0, self.1))?))
    }
}

fn col2im(cols: &Tensor, g: Window, n: usize) -> Result<Tensor> {
    cols.apply_op1(Col2Im(g, n))
}

/// `[N, C, H, W]` → `[C, N·H·W]`: channels first, so a 1×1 convolution of the whole batch is one
/// matrix product.
pub(crate) fn channels_first(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h * w))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((c, n * h * w))
}

/// `[C, N·H·W]` → `[N, C, H, W]`.
pub(crate) fn batch_first(y: &Tensor, n: usize, h: usize, w: usize) -> Result<Tensor> {
    let c = y.dim(0)?;
    y.reshape((c, n, h * w))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, c, h, w))
}

/// A 1×1, stride-1 convolution as one matrix product over the whole batch.
pub fn conv1x1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let o = w.dim(0)?;
    let y = w.reshape((o, c))?.matmul(&channels_first(x)?)?;
    batch_first(&y, n, h, wd)
}

/// Dense `conv2d(x [N, C, H, W], w [O, C, k, k])`, stride and zero padding, no dilation or groups.
///
/// On the CPU it runs as im2col + gemm (fast in both directions); elsewhere it is candle's conv2d.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !on_cpu(x) {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (o, ci, k, k2) = w.dims4()?;
    if ci != c || k != k2 {
        bail!(
            "conv2d: weight {:?} does not fit input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let g = Window::new(h, wd, k, stride, padding)?;
    let cols = x.contiguous()?.apply_op1(Im2Col(g, n))?;
    let y = w.reshape((o, c * k * k))?.matmul(&cols)?;
    batch_first(&y, n, g.oh, g.ow)
}

/// `conv_transpose2d(x [N, C, H, W], w [C, O, k, k])` (PyTorch layout), stride and padding,
/// no output padding: the output side is `(H − 1)·s − 2p + k`.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !on_cpu(x) {
        return x.conv_transpose2d(w, padding, 0, stride, 1);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (ci, o, k, k2) = w.dims4()?;
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
    let (out_h, out_w) = (out_h - 2 * padding, out_w - 2 * padding);
    // The transposed convolution is the adjoint of a convolution over the output's geometry.
    let g = Window::new(out_h, out_w, k, stride, padding)?;
    if (g.oh, g.ow) != (h, wd) {
        bail!("conv_transpose2d: inconsistent geometry {g:?} for input {h}x{wd}");
    }
    let wt = w.reshape((c, o * k * k))?.t()?;
    let cols = wt.matmul(&channels_first(x)?)?;
    col2im(&cols, g, n)
}

#[cfg(test)]
mod tests {
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

    /// Values and gradients against candle's own conv2d, where candle's backward is correct
    /// (even sizes; its transposed-conv input gradient breaks on odd sizes with stride 2).
    #[test]
    fn conv2d_matches_candle() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, h, w, o, k, s, p) in &[
            (2, 3, 8, 8, 4, 3, 1, 1),
            (2, 4, 8, 10, 5, 3, 2, 1),
            (1, 3, 16, 16, 8, 7, 2, 3),
            (2, 6, 8, 8, 4, 1, 2, 0),
            (2, 6, 5, 5, 4, 1, 1, 0),
            (3, 2, 6, 6, 3, 4, 2, 1),
            (1, 2, 5, 7, 3, 3, 1, 0),
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

    /// ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩: the two reshuffles are adjoint, so each is the other's gradient.
    #[test]
    fn im2col_and_col2im_are_adjoint() -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w, k, s, p) in &[
            (7, 5, 3, 2, 1),
            (6, 6, 4, 2, 1),
            (5, 5, 3, 1, 0),
            (9, 4, 5, 3, 2),
        ] {
            let g = Window::new(h, w, k, s, p)?;
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let y = Tensor::randn(0f32, 1.0, (3 * k * k, 2 * g.oh * g.ow), &dev)?;
            let lhs = (x.apply_op1(Im2Col(g, 2))? * &y)?
                .sum_all()?
                .to_scalar::<f32>()?;
            let rhs = (col2im(&y, g, 2)? * &x)?.sum_all()?.to_scalar::<f32>()?;
            assert!(
                (lhs - rhs).abs() < 1e-3 * (1.0 + lhs.abs()),
                "{lhs} vs {rhs}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod conv1x1_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn conv1x1_matches_candle_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (3, 5, 4, 6), &dev)?;
        let w = Var::randn(0f32, 1.0, (7, 5, 1, 1), &dev)?;
        let ours = conv1x1(x.as_tensor(), w.as_tensor())?;
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
