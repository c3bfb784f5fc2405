//! Fused 2-D BatchNorm for the CPU.
//!
//! candle's BatchNorm is a chain of broadcast element-wise ops (and so is its backward); in a
//! MobileNetV2 training step they took most of the time, ahead of the convolutions. Here the
//! forward pass is one sweep over the data and the backward pass uses the closed-form gradient.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, on_cpu};

/// Per-channel mean and biased variance of `x [N, C, H, W]` as a `[2, C]` tensor (no gradient).
pub fn channel_stats(x: &Tensor) -> Result<Tensor> {
    if !on_cpu(x) {
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
                // Two passes in f64: the variance of activations far from zero stays exact.
                let mut sum = 0f64;
                for b in 0..n {
                    let p = &x[(b * c + ch) * plane..(b * c + ch + 1) * plane];
                    sum += p.iter().map(|&v| f64::from(v)).sum::<f64>();
                }
                let mean = sum / count;
                let mut sq = 0f64;
                for b in 0..n {
                    let p = &x[(b * c + ch) * plane..(b * c + ch + 1) * plane];
                    sq += p
                        .iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>();
                }
                (mean, sq / count)
            })
            .collect();
        let mut out: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
        out.extend(stats.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// `γ·(x − μ)/√(σ² + ε) + β` per channel, with `params = [γ; β; μ; σ²]` of shape `[4, C]`.
///
/// With `batch_stats`, μ and σ² are the batch's own statistics (training): the input gradient then
/// includes their dependence on `x`, and μ, σ² themselves receive none. Otherwise they are constants
/// (running statistics, evaluation). The gradient of `params` has zero rows for μ and σ².
pub fn batch_norm(x: &Tensor, params: &Tensor, eps: f64, batch_stats: bool) -> Result<Tensor> {
    if !on_cpu(x) {
        let c = x.dim(1)?;
        let p = |i: usize| params.get(i)?.reshape((1, c, 1, 1));
        let (g, b, m, v) = (p(0)?, p(1)?, p(2)?, p(3)?);
        let xhat = x.broadcast_sub(&m)?.broadcast_div(&(v + eps)?.sqrt()?)?;
        return xhat.broadcast_mul(&g)?.broadcast_add(&b);
    }
    x.contiguous()?
        .apply_op2(&params.contiguous()?, BatchNormOp { eps, batch_stats })
}

#[derive(Clone, Copy)]
struct BatchNormOp {
    eps: f64,
    batch_stats: bool,
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
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
            let ch = i % c;
            let scale = p[ch] / (f64::from(p[3 * c + ch]) + self.eps).sqrt() as f32;
            let shift = p[c + ch] - p[2 * c + ch] * scale;
            for (o, &v) in out.iter_mut().zip(&x[i * plane..(i + 1) * plane]) {
                *o = v * scale + shift;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let c = params.dim(1)?;
        let op = BatchNormGrad {
            op: *self,
            params: params.flatten_all()?.to_vec1::<f32>()?,
        };
        // One buffer holds [dx; dparams]: both come out of the same per-channel sums.
        let both = x.apply_op2_no_bwd(&grad.contiguous()?, &op)?;
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

impl CustomOp2 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "batch-norm-grad"
    }

    /// Inputs `x` and `dy`; output `[dx; dγ; dβ; 0; 0]` flattened.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "batch norm", "input")?;
        let dy = cpu_slice(s2, l2, "batch norm", "gradient")?;
        let p = &self.params;
        let (n, c, h, w) = l1.shape().dims4()?;
        let total = n * c * h * w;
        let plane = h * w;
        let count = (n * plane) as f64;
        let eps = self.op.eps;
        // Per channel: Σdy and Σdy·x̂, then the input gradient in a second sweep.
        let sums: Vec<(f64, f64, f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let inv_std = 1.0 / (f64::from(p[3 * c + ch]) + eps).sqrt();
                let mean = f64::from(p[2 * c + ch]);
                let (mut sdy, mut sdyx) = (0f64, 0f64);
                for b in 0..n {
                    let r = (b * c + ch) * plane..(b * c + ch + 1) * plane;
                    for (&xv, &g) in x[r.clone()].iter().zip(&dy[r]) {
                        sdy += f64::from(g);
                        sdyx += f64::from(g) * (f64::from(xv) - mean);
                    }
                }
                (sdy, sdyx * inv_std, inv_std as f32, mean as f32)
            })
            .collect();
        let mut out = vec![0f32; total + 4 * c];
        let (dx, dp) = out.split_at_mut(total);
        let batch_stats = self.op.batch_stats;
        dx.par_chunks_mut(plane).enumerate().for_each(|(i, o)| {
            let ch = i % c;
            let (sdy, sdyx, inv_std, mean) = sums[ch];
            let k = p[ch] * inv_std;
            let src = i * plane..(i + 1) * plane;
            if batch_stats {
                let mdy = (sdy / count) as f32;
                let mdyx = (sdyx / count) as f32;
                for ((o, &xv), &g) in o.iter_mut().zip(&x[src.clone()]).zip(&dy[src]) {
                    let xhat = (xv - mean) * inv_std;
                    *o = k * (g - mdy - xhat * mdyx);
                }
            } else {
                for (o, &g) in o.iter_mut().zip(&dy[src]) {
                    *o = k * g;
                }
            }
        });
        for (ch, &(sdy, sdyx, _, _)) in sums.iter().enumerate() {
            dp[ch] = sdyx as f32;
            dp[c + ch] = sdy as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(total + 4 * c)))
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
    fn matches_elementwise_reference_in_both_modes() -> Result<()> {
        let dev = Device::Cpu;
        let (n, c, h, w) = (3, 4, 5, 6);
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (n, c, h, w), &dev)? + 3.0)?)?;
        let g = Var::randn(1f32, 0.3, c, &dev)?;
        let b = Var::randn(0f32, 0.3, c, &dev)?;
        let up = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
        for batch_stats in [true, false] {
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
            let ours = batch_norm(x.as_tensor(), &params, 1e-5, batch_stats)?;
            let theirs = reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), stats);
            assert!(
                max_rel(&ours, &theirs) < 1e-5,
                "forward, batch_stats={batch_stats}"
            );
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for (name, var) in [("x", &x), ("gamma", &g), ("beta", &b)] {
                let (a, e) = (g1.get(var).unwrap(), g2.get(var).unwrap());
                assert!(
                    max_rel(a, e) < 1e-4,
                    "{name} gradient, batch_stats={batch_stats}"
                );
            }
        }
        Ok(())
    }
}
