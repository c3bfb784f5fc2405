//! Fused 2-D BatchNorm for the CPU.
//!
//! candle's BatchNorm is a chain of broadcast element-wise ops (and so is its backward); in a
//! MobileNetV2 training step they took most of the time, ahead of the convolutions. Here the
//! forward pass is one sweep over the data and the backward pass uses the closed-form gradient.
//! The activation after it (ReLU, ReLU6, LeakyReLU) runs in the same sweeps, each way.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::activation::{per_activation, Fixed};
use super::simd::wide;
use super::{activate, cpu_slice, output, own_kernels, Activation};

/// Per-channel mean and biased variance of `x [N, C, H, W]` as a `[2, C]` tensor (no gradient).
pub fn channel_stats(x: &Tensor) -> Result<Tensor> {
    if !own_kernels(x) {
        let x = x.detach();
        let mean = x.mean_keepdim((0, 2, 3))?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
        return Tensor::stack(&[mean.flatten_all()?, var.flatten_all()?], 0);
    }
    x.contiguous()?.apply_op1_no_bwd(&ChannelStats)
}

struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "bn-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "batch norm", "input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let plane = h * w;
        let count = (n * plane) as f64;
        let stats: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                // Two passes (the variance of activations far from zero stays exact), each plane
                // summed in f32 lanes and the planes in f64.
                let planes = (0..n).map(|b| &x[(b * c + ch) * plane..(b * c + ch + 1) * plane]);
                let mean = planes
                    .clone()
                    .map(|p| {
                        wide(
                            #[inline(always)]
                            || plane_sum(p, |v| v),
                        )
                    })
                    .sum::<f64>()
                    / count;
                let m = mean as f32;
                let sq: f64 = planes
                    .map(|p| {
                        wide(
                            #[inline(always)]
                            || plane_sum(p, |v| (v - m) * (v - m)),
                        )
                    })
                    .sum();
                (mean, sq / count)
            })
            .collect();
        let mut out: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
        out.extend(stats.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::channel_stats(s, l)
    }
}

/// `γ·(x − μ)/√(σ² + ε) + β` per channel, with `params = [γ; β; μ; σ²]` of shape `[4, C]`.
///
/// With `batch_stats`, μ and σ² are the batch's own statistics (training): the input gradient then
/// includes their dependence on `x`, and μ, σ² themselves receive none. Otherwise they are constants
/// (running statistics, evaluation). The gradient of `params` has zero rows for μ and σ².
/// `activation`, if any, is applied to the result.
pub fn batch_norm(
    x: &Tensor,
    params: &Tensor,
    eps: f64,
    batch_stats: bool,
    activation: Option<Activation>,
) -> Result<Tensor> {
    if !own_kernels(x) {
        let c = x.dim(1)?;
        let p = |i: usize| params.get(i)?.reshape((1, c, 1, 1));
        let (g, b, m, v) = (p(0)?, p(1)?, p(2)?, p(3)?);
        let xhat = x.broadcast_sub(&m)?.broadcast_div(&(v + eps)?.sqrt()?)?;
        return activate(xhat.broadcast_mul(&g)?.broadcast_add(&b)?, activation);
    }
    x.contiguous()?.apply_op2(
        &params.contiguous()?,
        BatchNormOp {
            eps,
            batch_stats,
            activation,
        },
    )
}

#[derive(Clone, Copy)]
struct BatchNormOp {
    eps: f64,
    batch_stats: bool,
    activation: Option<Activation>,
}

impl CustomOp2 for BatchNormOp {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "batch norm", "input")?;
        let p = cpu_slice(s2, l2, "batch norm", "params")?;
        let (_, c, h, w) = l1.shape().dims4()?;
        if l2.shape().dims() != [4, c] {
            bail!("batch norm: params {:?}, expected [4, {c}]", l2.shape());
        }
        let plane = h * w;
        let mut y = output(x.len());
        y.par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
            let ch = i % c;
            let scale = p[ch] / (f64::from(p[3 * c + ch]) + self.eps).sqrt() as f32;
            let shift = p[c + ch] - p[2 * c + ch] * scale;
            let src = &x[i * plane..(i + 1) * plane];
            match self.activation {
                None => wide(
                    #[inline(always)]
                    || {
                        for (o, &v) in out.iter_mut().zip(src) {
                            *o = v * scale + shift;
                        }
                    },
                ),
                Some(a) => per_activation!(a, |k| wide(
                    #[inline(always)]
                    || {
                        for (o, &v) in out.iter_mut().zip(src) {
                            *o = k.f(v * scale + shift);
                        }
                    }
                )),
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::batch_norm((s1, l1), (s2, l2), self.eps, self.activation)
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let c = params.dim(1)?;
        let op = BatchNormGrad {
            op: *self,
            params: params.flatten_all()?.to_vec1::<f32>()?,
        };
        // One buffer holds [dx; dparams]: both come out of the same per-channel sums. The
        // output `y` gives the activation's derivative.
        let both = x.apply_op3_no_bwd(&grad.contiguous()?, &y.contiguous()?, &op)?;
        let n = x.elem_count();
        let gx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let gp = both.narrow(0, n, 4 * c)?.reshape((4, c))?;
        Ok((Some(gx), Some(gp)))
    }
}

struct BatchNormGrad {
    op: BatchNormOp,
    params: Vec<f32>,
}

impl BatchNormGrad {
    /// `[dx; dγ; dβ; 0; 0]` for inputs `x [n, c, plane]`, the gradient `dy` after the
    /// activation and the output `y`, with `dz(dy, y)` the gradient before the activation.
    fn sweeps(
        &self,
        x: &[f32],
        dy: &[f32],
        y: &[f32],
        (n, c, plane): (usize, usize, usize),
        dz: impl Fn(f32, f32) -> f32 + Sync + Copy,
    ) -> Vec<f32> {
        let p = &self.params;
        let total = n * c * plane;
        let count = (n * plane) as f64;
        let eps = self.op.eps;
        // Per channel: Σdz and Σdz·x̂, then the input gradient in a second sweep.
        let sums: Vec<(f64, f64, f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let inv_std = 1.0 / (f64::from(p[3 * c + ch]) + eps).sqrt();
                let mean = p[2 * c + ch];
                let (mut sdz, mut sdzx) = (0f64, 0f64);
                for b in 0..n {
                    let r = (b * c + ch) * plane..(b * c + ch + 1) * plane;
                    let (a, b) = wide(
                        #[inline(always)]
                        || lane_sums(&x[r.clone()], &dy[r.clone()], &y[r], mean, dz),
                    );
                    sdz += a;
                    sdzx += b;
                }
                (sdz, sdzx * inv_std, inv_std as f32, mean)
            })
            .collect();
        let mut out = output(total + 4 * c);
        let (dx, dp) = out.split_at_mut(total);
        // No gradient for the statistics' rows; the sweeps below write all the rest.
        dp[2 * c..].fill(0.0);
        let batch_stats = self.op.batch_stats;
        dx.par_chunks_mut(plane).enumerate().for_each(|(i, o)| {
            let ch = i % c;
            let (sdz, sdzx, inv_std, mean) = sums[ch];
            let k = p[ch] * inv_std;
            let r = i * plane..(i + 1) * plane;
            let src = x[r.clone()].iter().zip(&dy[r.clone()]).zip(&y[r]);
            if batch_stats {
                let mdz = (sdz / count) as f32;
                let mdzx = (sdzx / count) as f32;
                wide(
                    #[inline(always)]
                    || {
                        for (o, ((&xv, &g), &yv)) in o.iter_mut().zip(src) {
                            let xhat = (xv - mean) * inv_std;
                            *o = k * (dz(g, yv) - mdz - xhat * mdzx);
                        }
                    },
                )
            } else {
                wide(
                    #[inline(always)]
                    || {
                        for (o, ((_, &g), &yv)) in o.iter_mut().zip(src) {
                            *o = k * dz(g, yv);
                        }
                    },
                )
            }
        });
        for (ch, &(sdz, sdzx, _, _)) in sums.iter().enumerate() {
            dp[ch] = sdzx as f32;
            dp[c + ch] = sdz as f32;
        }
        out
    }
}

/// `Σ f(x)` over one plane in independent f32 lanes (see [`lane_sums`]), added up in f64.
#[inline(always)]
fn plane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    const LANES: usize = 16;
    let mut s = [0f32; LANES];
    let whole = x.len() / LANES * LANES;
    for xc in x[..whole].chunks_exact(LANES) {
        for i in 0..LANES {
            s[i] += f(xc[i]);
        }
    }
    let tail: f64 = x[whole..].iter().map(|&v| f64::from(f(v))).sum();
    s.iter().map(|&v| f64::from(v)).sum::<f64>() + tail
}

/// `(Σ dz, Σ dz·(x − mean))` over one plane, with `dz = dz(dy, y)`: in independent f32 lanes
/// that the compiler vectorises (one f64 running sum is one dependent addition per element),
/// added up in f64.
#[inline(always)]
fn lane_sums(
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    mean: f32,
    dz: impl Fn(f32, f32) -> f32,
) -> (f64, f64) {
    const LANES: usize = 16;
    let (mut s, mut t) = ([0f32; LANES], [0f32; LANES]);
    let whole = x.len() / LANES * LANES;
    for ((xc, gc), yc) in x[..whole]
        .chunks_exact(LANES)
        .zip(dy[..whole].chunks_exact(LANES))
        .zip(y[..whole].chunks_exact(LANES))
    {
        for i in 0..LANES {
            let g = dz(gc[i], yc[i]);
            s[i] += g;
            t[i] += g * (xc[i] - mean);
        }
    }
    let mut a: f64 = s.iter().map(|&v| f64::from(v)).sum();
    let mut b: f64 = t.iter().map(|&v| f64::from(v)).sum();
    for j in whole..x.len() {
        let g = dz(dy[j], y[j]);
        a += f64::from(g);
        b += f64::from(g * (x[j] - mean));
    }
    (a, b)
}

impl CustomOp3 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "batch-norm-grad"
    }

    /// Inputs `x`, `dy` (of the activation's output) and the output `y`; output
    /// `[dx; dγ; dβ; 0; 0]` flattened.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "batch norm", "input")?;
        let dy = cpu_slice(s2, l2, "batch norm", "gradient")?;
        let y = cpu_slice(s3, l3, "batch norm", "output")?;
        if dy.len() != x.len() || y.len() != x.len() {
            bail!(
                "batch norm: gradient {:?} or output {:?} for input {:?}",
                l2.shape(),
                l3.shape(),
                l1.shape()
            );
        }
        let (n, c, h, w) = l1.shape().dims4()?;
        let shape = (n, c, h * w);
        // The gradient before the activation from the one after it and the output, each kind
        // its own loop.
        let out = match self.op.activation {
            None => self.sweeps(x, dy, y, shape, |g, _| g),
            Some(a) => {
                per_activation!(a, |k| self.sweeps(x, dy, y, shape, move |g, y| g * k.df(y)))
            }
        };
        let total = n * c * h * w;
        Ok((CpuStorage::F32(out), Shape::from(total + 4 * c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::batch_norm_grad(
            (s1, l1),
            (s2, l2),
            (s3, l3),
            &self.params,
            self.op.eps,
            self.op.batch_stats,
            self.op.activation,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
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

    /// The same computation written with candle's differentiable element-wise ops.
    fn reference(x: &Tensor, g: &Tensor, b: &Tensor, stats: Option<(&Tensor, &Tensor)>) -> Tensor {
        let c = x.dim(1).unwrap();
        let (m, v) = match stats {
            Some((m, v)) => (m.clone(), v.clone()),
            None => {
                let m = x.mean_keepdim((0, 2, 3)).unwrap();
                let v = x
                    .broadcast_sub(&m)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .mean_keepdim((0, 2, 3))
                    .unwrap();
                (m.flatten_all().unwrap(), v.flatten_all().unwrap())
            }
        };
        let r = |t: &Tensor| t.reshape((1, c, 1, 1)).unwrap();
        x.broadcast_sub(&r(&m))
            .unwrap()
            .broadcast_div(&(r(&v) + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&r(g))
            .unwrap()
            .broadcast_add(&r(b))
            .unwrap()
    }

    #[test]
    fn matches_elementwise_reference_in_both_modes_with_each_activation() -> Result<()> {
        let dev = Device::Cpu;
        let (n, c, h, w) = (3, 4, 5, 6);
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (n, c, h, w), &dev)? + 3.0)?)?;
        let g = Var::randn(1f32, 0.3, c, &dev)?;
        let b = Var::randn(0f32, 0.3, c, &dev)?;
        let up = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
        let activations = [
            None,
            Some(Activation::Relu),
            Some(Activation::Relu6),
            Some(Activation::Leaky(0.2)),
        ];
        for (batch_stats, activation) in [true, false]
            .into_iter()
            .flat_map(|b| activations.map(|a| (b, a)))
        {
            let (rm, rv) = (
                Tensor::randn(3f32, 0.5, c, &dev)?,
                Tensor::rand(1f32, 3.0, c, &dev)?,
            );
            let (stats, m, v) = if batch_stats {
                let s = channel_stats(x.as_tensor())?;
                (None, s.get(0)?, s.get(1)?)
            } else {
                (Some((&rm, &rv)), rm.clone(), rv.clone())
            };
            let params = Tensor::stack(&[g.as_tensor(), b.as_tensor(), &m, &v], 0)?;
            let ours = batch_norm(x.as_tensor(), &params, 1e-5, batch_stats, activation)?;
            let theirs = reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), stats);
            // candle's own ops for the activation.
            let theirs = match activation {
                None => theirs,
                Some(Activation::Relu) => theirs.relu()?,
                Some(Activation::Relu6) => theirs.clamp(0f32, 6f32)?,
                Some(Activation::Leaky(a)) => theirs.maximum(&(&theirs * f64::from(a))?)?,
            };
            assert!(
                max_rel(&ours, &theirs) < 1e-5,
                "forward, batch_stats={batch_stats}, {activation:?}"
            );
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for (name, var) in [("x", &x), ("gamma", &g), ("beta", &b)] {
                let (a, e) = (g1.get(var).unwrap(), g2.get(var).unwrap());
                assert!(
                    max_rel(a, e) < 1e-4,
                    "{name} gradient, batch_stats={batch_stats}, {activation:?}"
                );
            }
        }
        Ok(())
    }
}
