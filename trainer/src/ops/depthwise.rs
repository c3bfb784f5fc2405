//! Depthwise 2-D convolution (`groups == channels`, one k×k filter per channel) for the CPU.
//!
//! candle runs a grouped convolution as one convolution per group, which makes MobileNetV2's
//! depthwise layers about ten times slower than they need to be. This op computes them directly,
//! plane by plane in parallel, with hand-written gradients for input and weight.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, on_cpu, valid_range};

/// Depthwise convolution of `x [N, C, H, W]` with `w [C, 1, k, k]`.
///
/// Uses the direct CPU kernel on CPU tensors and candle's grouped `conv2d` elsewhere (CUDA), so the
/// same model code runs on both.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if on_cpu(x) {
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

    /// Output columns `ox` whose input column `ox·s + kx − p` lies inside `0..w`.
    fn valid_cols(&self, kx: usize) -> std::ops::Range<usize> {
        valid_range(kx, self.stride, self.padding, self.w, self.ow)
    }

    fn valid_rows(&self, ky: usize) -> std::ops::Range<usize> {
        valid_range(ky, self.stride, self.padding, self.h, self.oh)
    }
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

struct DepthwiseConv {
    stride: usize,
    padding: usize,
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
        let (c_w, one, k, k2) = dims4(l2)?;
        let g = Geometry::new(dims4(l1)?, k, self.stride, self.padding)?;
        if c_w != g.c || one != 1 || k != k2 {
            bail!(
                "depthwise conv: weight {:?} does not match {} channels",
                l2.shape(),
                g.c
            );
        }
        let mut out = vec![0f32; g.n * g.c * g.oh * g.ow];
        out.par_chunks_mut(g.oh * g.ow)
            .enumerate()
            .for_each(|(plane, o)| {
                let c = plane % g.c;
                let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
                let wp = &wt[c * k * k..(c + 1) * k * k];
                for ky in 0..k {
                    for oy in g.valid_rows(ky) {
                        let iy = oy * g.stride + ky - g.padding;
                        let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                        let orow = &mut o[oy * g.ow..(oy + 1) * g.ow];
                        for kx in 0..k {
                            let wv = wp[ky * k + kx];
                            let cols = g.valid_cols(kx);
                            let base = kx as isize - g.padding as isize;
                            if g.stride == 1 {
                                let start = (cols.start as isize + base) as usize;
                                let src = &xrow[start..start + cols.len()];
                                for (dst, s) in orow[cols].iter_mut().zip(src) {
                                    *dst += wv * s;
                                }
                            } else {
                                for ox in cols {
                                    let ix = (ox * g.stride) as isize + base;
                                    orow[ox] += wv * xrow[ix as usize];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.c, g.oh, g.ow))))
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
        let gx = grad.apply_op2_no_bwd(
            &w.contiguous()?,
            &InputGrad {
                stride: self.stride,
                padding: self.padding,
                h,
                w: wd,
            },
        )?;
        let gw = x.contiguous()?.apply_op2_no_bwd(
            &grad,
            &WeightGrad {
                stride: self.stride,
                padding: self.padding,
                k: w.dim(2)?,
            },
        )?;
        Ok((Some(gx), Some(gw)))
    }
}

/// dL/dx from dL/dy (arg 1) and the weight (arg 2).
struct InputGrad {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
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
        let (n, c, oh, ow) = dims4(l1)?;
        let (_, _, k, _) = dims4(l2)?;
        let g = Geometry::new((n, c, self.h, self.w), k, self.stride, self.padding)?;
        if (g.oh, g.ow) != (oh, ow) {
            bail!("depthwise conv grad: gradient {oh}x{ow} does not match input");
        }
        let mut gx = vec![0f32; n * c * g.h * g.w];
        gx.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(plane, dx)| {
                let ch = plane % c;
                let dy = &gy[plane * oh * ow..(plane + 1) * oh * ow];
                let wp = &wt[ch * k * k..(ch + 1) * k * k];
                for ky in 0..k {
                    for oy in g.valid_rows(ky) {
                        let iy = oy * g.stride + ky - g.padding;
                        let dyrow = &dy[oy * ow..(oy + 1) * ow];
                        let dxrow = &mut dx[iy * g.w..(iy + 1) * g.w];
                        for kx in 0..k {
                            let wv = wp[ky * k + kx];
                            let base = kx as isize - g.padding as isize;
                            for ox in g.valid_cols(kx) {
                                let ix = ((ox * g.stride) as isize + base) as usize;
                                dxrow[ix] += wv * dyrow[ox];
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, c, g.h, g.w))))
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
        let mut gw = vec![0f32; g.c * k * k];
        gw.par_chunks_mut(k * k).enumerate().for_each(|(ch, dw)| {
            for b in 0..g.n {
                let plane = b * g.c + ch;
                let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
                let dy = &gy[plane * g.oh * g.ow..(plane + 1) * g.oh * g.ow];
                for ky in 0..k {
                    for kx in 0..k {
                        let base = kx as isize - g.padding as isize;
                        let cols = g.valid_cols(kx);
                        let mut acc = 0f32;
                        for oy in g.valid_rows(ky) {
                            let iy = oy * g.stride + ky - g.padding;
                            let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                            let dyrow = &dy[oy * g.ow..(oy + 1) * g.ow];
                            for ox in cols.clone() {
                                let ix = ((ox * g.stride) as isize + base) as usize;
                                acc += dyrow[ox] * xrow[ix];
                            }
                        }
                        dw[ky * k + kx] += acc;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(gw), Shape::from((g.c, 1, k, k))))
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
    /// ones (odd sizes, stride 2 with padding, 5×5 kernels), and against candle's grouped conv2d
    /// where candle's own backward handles the shape (it fails on odd widths with stride 2).
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
