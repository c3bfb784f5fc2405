//! Max pooling with a kernel larger than its stride (ResNet's 3×3/2), trainable on every device.
//!
//! candle's `max_pool2d` backward supports only kernel == stride. On the CPU and on CUDA (`cuda/`)
//! direct kernels route each output's gradient to the first maximum of its window (as PyTorch
//! does); on other devices the pool is the element-wise maximum of its k·k strided views, whose
//! gradient candle knows.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, output, own_kernels};

/// `MaxPool2d(kernel, stride, padding)` over `x [N, C, H, W]`, padding with −∞ as PyTorch does.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if stride == 0 || kernel == 0 || h + 2 * padding < kernel || w + 2 * padding < kernel {
        bail!("max pool {kernel}/{stride}/{padding} does not fit a {h}x{w} input");
    }
    if own_kernels(x) {
        x.contiguous()?.apply_op1(Pool {
            kernel,
            stride,
            padding,
        })
    } else {
        max_pool2d_views(x, kernel, stride, padding)
    }
}

#[derive(Clone, Copy)]
struct Pool {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Pool {
    fn out(&self, len: usize) -> usize {
        (len + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The window over input `l` for the CUDA kernels.
    #[cfg(feature = "cuda")]
    fn window(&self, l: &Layout) -> Result<super::cuda::Window> {
        let (n, c, h, w) = l.shape().dims4()?;
        Ok(super::cuda::Window {
            n,
            c,
            h,
            w,
            k: self.kernel,
            stride: self.stride,
            padding: self.padding,
            oh: self.out(h),
            ow: self.out(w),
        })
    }

    /// Index (within the plane) of the first maximum of output (oy, ox)'s window.
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> usize {
        let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
        let y0 = (oy * self.stride) as isize - self.padding as isize;
        let x0 = (ox * self.stride) as isize - self.padding as isize;
        for iy in y0.max(0)..(y0 + self.kernel as isize).min(h as isize) {
            for ix in x0.max(0)..(x0 + self.kernel as isize).min(w as isize) {
                let i = iy as usize * w + ix as usize;
                if plane[i] > best || at == usize::MAX {
                    best = plane[i];
                    at = i;
                }
            }
        }
        at
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "max pool", "input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = (self.out(h), self.out(w));
        let mut y = output(n * c * oh * ow);
        y.par_chunks_mut(oh * ow).enumerate().for_each(|(p, out)| {
            let plane = &x[p * h * w..(p + 1) * h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    out[oy * ow + ox] = plane[self.argmax(plane, h, w, oy, ox)];
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::max_pool(s, l, &self.window(l)?)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &PoolGrad(*self))?,
        ))
    }
}

/// Scatters each output gradient to its window's first maximum.
struct PoolGrad(Pool);

impl CustomOp2 for PoolGrad {
    fn name(&self) -> &'static str {
        "max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "max pool", "input")?;
        let g = cpu_slice(s2, l2, "max pool", "gradient")?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let (oh, ow) = (self.0.out(h), self.0.out(w));
        if g.len() != n * c * oh * ow {
            bail!(
                "max pool: gradient {:?} for input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let mut gx = vec![0f32; n * c * h * w];
        gx.par_chunks_mut(h * w).enumerate().for_each(|(p, dx)| {
            let plane = &x[p * h * w..(p + 1) * h * w];
            let dy = &g[p * oh * ow..(p + 1) * oh * ow];
            for oy in 0..oh {
                for ox in 0..ow {
                    dx[self.0.argmax(plane, h, w, oy, ox)] += dy[oy * ow + ox];
                }
            }
        });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::max_pool_grad((s1, l1), (s2, l2), &self.0.window(l1)?)
    }
}

/// The device-independent formulation: element-wise maximum of the k·k strided views.
fn max_pool2d_views(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let oh = (h + 2 * padding - kernel) / stride + 1;
    let ow = (w + 2 * padding - kernel) / stride + 1;
    // Each view starts at ky and spans stride·oh rows, so the padded input needs that much room.
    let hp = (kernel - 1 + stride * oh).max(h + padding);
    let wp = (kernel - 1 + stride * ow).max(w + padding);
    let xp = pad_min(x, 2, padding, hp - h - padding)?;
    let xp = pad_min(&xp, 3, padding, wp - w - padding)?;
    let mut out: Option<Tensor> = None;
    for ky in 0..kernel {
        let rows = xp.narrow(2, ky, stride * oh)?;
        for kx in 0..kernel {
            let view = rows
                .narrow(3, kx, stride * ow)?
                .reshape((n, c, oh, stride, ow, stride))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((n, c, oh, ow))?;
            out = Some(match out {
                None => view,
                Some(acc) => acc.maximum(&view)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("empty max pool kernel".into()))
}

fn pad_min(x: &Tensor, dim: usize, left: usize, right: usize) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let mut dims = x.dims().to_vec();
    if left > 0 {
        dims[dim] = left;
        parts.push(Tensor::full(f32::MIN, dims.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    parts.push(x.clone());
    if right > 0 {
        dims[dim] = right;
        parts.push(Tensor::full(f32::MIN, dims.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    Tensor::cat(&parts, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Reference max pool and its gradient (to the first maximum of each window) by direct loops.
    fn reference(
        x: &[f32],
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> (Vec<f32>, Vec<usize>) {
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let mut out = vec![f32::MIN; oh * ow];
        let mut arg = vec![0; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let i = iy as usize * w + ix as usize;
                        if x[i] > out[oy * ow + ox] {
                            out[oy * ow + ox] = x[i];
                            arg[oy * ow + ox] = i;
                        }
                    }
                }
            }
        }
        (out, arg)
    }

    #[test]
    fn matches_loops_in_value_and_gradient() -> Result<()> {
        for &(h, w) in &[(7usize, 7usize), (8, 9), (112, 112), (5, 4)] {
            // Distinct values so the maximum of each window is unique.
            let vals: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % (h * w)) as f32).collect();
            let x = Var::from_vec(vals.clone(), (1, 1, h, w), &Device::Cpu)?;
            let y = max_pool2d(x.as_tensor(), 3, 2, 1)?;
            let (expected, arg) = reference(&vals, h, w, 3, 2, 1);
            assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, expected);
            let grads = y.sum_all()?.backward()?;
            let g = grads
                .get(x.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut want = vec![0f32; h * w];
            for i in arg {
                want[i] += 1.0;
            }
            assert_eq!(g, want, "{h}x{w}");
            // The device-independent formulation agrees (no ties here, so gradients match too).
            let x2 = Var::from_vec(vals.clone(), (1, 1, h, w), &Device::Cpu)?;
            let y2 = max_pool2d_views(x2.as_tensor(), 3, 2, 1)?;
            assert_eq!(y2.flatten_all()?.to_vec1::<f32>()?, expected);
            let g2 = y2.sum_all()?.backward()?;
            assert_eq!(
                g2.get(x2.as_tensor())
                    .unwrap()
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                want
            );
        }
        Ok(())
    }

    /// Other windows, several planes, and ties: each output's gradient goes to the first maximum
    /// of its window in row-major order, and only there.
    #[test]
    fn routes_each_gradient_to_the_first_maximum() -> Result<()> {
        for &(h, w, k, s, p) in &[
            (7usize, 7usize, 3usize, 2usize, 1usize),
            (6, 9, 2, 2, 0),
            (5, 7, 3, 1, 1),
            (10, 11, 3, 3, 1),
            (9, 8, 5, 2, 2),
        ] {
            let planes = 3;
            // Few distinct values: most windows hold their maximum more than once.
            let vals: Vec<f32> = (0..planes * h * w).map(|i| ((i * 37) % 5) as f32).collect();
            let x = Var::from_vec(vals.clone(), (1, planes, h, w), &Device::Cpu)?;
            let y = max_pool2d(x.as_tensor(), k, s, p)?;
            let (oh, ow) = (y.dim(2)?, y.dim(3)?);
            // Small integer weights: sums of them are exact in any order.
            let up: Vec<f32> = (0..planes * oh * ow)
                .map(|i| (i % 7) as f32 + 1.0)
                .collect();
            let up_t = Tensor::from_vec(up.clone(), y.shape(), &Device::Cpu)?;
            let g = (&y * &up_t)?.sum_all()?.backward()?;
            let g = g
                .get(x.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let ys = y.flatten_all()?.to_vec1::<f32>()?;
            for plane in 0..planes {
                let xs = &vals[plane * h * w..][..h * w];
                let (expected, arg) = reference(xs, h, w, k, s, p);
                let case = format!("{h}x{w} k{k} s{s} p{p} plane {plane}");
                assert_eq!(&ys[plane * oh * ow..][..oh * ow], expected, "{case}");
                let mut want = vec![0f32; h * w];
                for (o, i) in arg.into_iter().enumerate() {
                    want[i] += up[plane * oh * ow + o];
                }
                assert_eq!(&g[plane * h * w..][..h * w], want, "{case}");
            }
        }
        Ok(())
    }
}
