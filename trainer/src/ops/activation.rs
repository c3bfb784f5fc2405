//! Element-wise activations with their gradients in one parallel sweep each way (candle builds
//! ReLU6 and LeakyReLU from several broadcast ops, each with its own backward pass, and ReLU's
//! backward from four: zeros, a comparison, a conversion and a product).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::simd::wide;
use super::{cpu_slice, output, own_kernels};

/// An activation `f` with derivative `df`, both of the input.
///
/// `df` can also be read off the output, `df(x) = df(f(x))`, for all of them (the slope is
/// positive, and the clamp points map to themselves), so an op that fuses one (BatchNorm) can
/// keep only its output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for positive inputs, `slope·x` otherwise.
    Leaky(f32),
}

impl Activation {
    #[inline(always)]
    pub(crate) fn f(self, v: f32) -> f32 {
        match self {
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
            Activation::Leaky(a) => {
                if v > 0.0 {
                    v
                } else {
                    a * v
                }
            }
        }
    }

    #[inline(always)]
    pub(crate) fn df(self, v: f32) -> f32 {
        match self {
            // candle's convention (and PyTorch's): no gradient at 0.
            Activation::Relu => {
                if v > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Relu6 => {
                if v > 0.0 && v < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Leaky(a) => {
                if v > 0.0 {
                    1.0
                } else {
                    a
                }
            }
        }
    }
}

/// The CUDA kernels' code for an activation (`ACT_*` in `cuda/kernels.cu`) and LeakyReLU's slope.
#[cfg(any(test, feature = "cuda"))]
pub(super) fn kernel_code(a: Option<Activation>) -> (i32, f32) {
    match a {
        None => (0, 0.0),
        Some(Activation::Relu) => (1, 0.0),
        Some(Activation::Relu6) => (2, 0.0),
        Some(Activation::Leaky(slope)) => (3, slope),
    }
}

/// An activation known from its type, so that a loop over one is compiled for it alone: the
/// per-element `match` of [`Activation::f`] on a value kept the loops from vectorising.
pub(super) trait Fixed: Copy + Send + Sync {
    /// The activation.
    fn f(self, v: f32) -> f32;
    /// Its derivative.
    fn df(self, v: f32) -> f32;
}

/// Defines a [`Fixed`] activation type that forwards to a constant [`Activation`].
macro_rules! fixed {
    ($name:ident $(($field:ty))?, |$s:ident| $value:expr) => {
        #[derive(Clone, Copy)]
        pub(super) struct $name $((pub(super) $field))?;

        impl Fixed for $name {
            #[inline(always)]
            fn f(self, v: f32) -> f32 {
                let $s = self;
                $value.f(v)
            }

            #[inline(always)]
            fn df(self, v: f32) -> f32 {
                let $s = self;
                $value.df(v)
            }
        }
    };
}

fixed!(FixedRelu, |_s| Activation::Relu);
fixed!(FixedRelu6, |_s| Activation::Relu6);
fixed!(FixedLeaky(f32), |s| Activation::Leaky(s.0));

/// Evaluates `$body` with `$k` bound to the [`Fixed`] type of the activation `$a`: one copy of
/// `$body` per activation.
macro_rules! per_activation {
    ($a:expr, |$k:ident| $body:expr) => {
        match $a {
            Activation::Relu => {
                let $k = $crate::ops::activation::FixedRelu;
                $body
            }
            Activation::Relu6 => {
                let $k = $crate::ops::activation::FixedRelu6;
                $body
            }
            Activation::Leaky(slope) => {
                let $k = $crate::ops::activation::FixedLeaky(slope);
                $body
            }
        }
    };
}
pub(super) use per_activation;

/// Elements per parallel task: large enough that scheduling costs nothing, small enough that
/// both cores get work on the smallest feature maps.
const CHUNK: usize = 1 << 14;

struct Act(Activation);

impl CustomOp1 for Act {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "activation", "input")?;
        let y = per_activation!(self.0, |k| sweep(x, |v| k.f(v)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::activation(s, l, self.0)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &ActGrad(self.0))?,
        ))
    }
}

struct ActGrad(Activation);

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "activation-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "activation", "input")?;
        let g = cpu_slice(s2, l2, "activation", "gradient")?;
        let out = per_activation!(self.0, |k| sweep2(
            (x, l1),
            (g, l2),
            "activation",
            |v, g| g * k.df(v)
        ))?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::activation_grad((s1, l1), (s2, l2), self.0)
    }
}

/// `x` through `activation` (`x` itself for none), on any device.
pub fn activate(x: Tensor, activation: Option<Activation>) -> Result<Tensor> {
    match activation {
        None => Ok(x),
        Some(Activation::Relu) => relu(&x),
        Some(Activation::Relu6) => relu6(&x),
        Some(Activation::Leaky(slope)) => leaky_relu(&x, slope),
    }
}

/// `f` of each element of `x`, in parallel.
fn sweep(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = output(x.len());
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| {
            wide(
                #[inline(always)]
                || {
                    for (o, &v) in o.iter_mut().zip(x) {
                        *o = f(v);
                    }
                },
            )
        });
    out
}

/// `f` of each pair of elements of `(a, b)`, in parallel; refuses slices of different lengths.
fn sweep2(
    (a, la): (&[f32], &Layout),
    (b, lb): (&[f32], &Layout),
    op: &str,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Vec<f32>> {
    if a.len() != b.len() {
        candle_core::bail!("{op}: {:?} and {:?} differ", la.shape(), lb.shape());
    }
    let mut out = output(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            wide(
                #[inline(always)]
                || {
                    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                        *o = f(a, b);
                    }
                },
            )
        });
    Ok(out)
}

/// `max(x, 0)`; its gradient is 1 for positive inputs, else 0.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !own_kernels(x) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Act(Activation::Relu))
}

/// `min(max(x, 0), 6)`; its gradient is 1 strictly inside (0, 6), else 0.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    if !own_kernels(x) {
        return x.clamp(0f32, 6f32);
    }
    x.contiguous()?.apply_op1(Act(Activation::Relu6))
}

/// `x` for positive inputs, `slope·x` otherwise.
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    if !own_kernels(x) {
        return x.maximum(&(x * f64::from(slope))?);
    }
    x.contiguous()?.apply_op1(Act(Activation::Leaky(slope)))
}

/// `act(y + shortcut)`: a residual connection and the activation after it (or none), in one
/// parallel sweep each way (candle adds on one thread since its element-wise pool is off).
pub fn residual(y: &Tensor, shortcut: &Tensor, activation: Option<Activation>) -> Result<Tensor> {
    if !own_kernels(y) || y.shape() != shortcut.shape() {
        return activate((y + shortcut)?, activation);
    }
    y.contiguous()?
        .apply_op2(&shortcut.contiguous()?, Residual(activation))
}

struct Residual(Option<Activation>);

impl CustomOp2 for Residual {
    fn name(&self) -> &'static str {
        "residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = cpu_slice(s1, l1, "residual", "input")?;
        let r = cpu_slice(s2, l2, "residual", "shortcut")?;
        let (y, r) = ((y, l1), (r, l2));
        let out = match self.0 {
            None => sweep2(y, r, "residual", |a, b| a + b)?,
            Some(a) => per_activation!(a, |k| sweep2(y, r, "residual", |a, b| k.f(a + b)))?,
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::residual((s1, l1), (s2, l2), self.0)
    }

    fn bwd(
        &self,
        _y: &Tensor,
        _shortcut: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Both inputs receive the gradient before the activation, read off the output.
        let g = match self.0 {
            None => grad.clone(),
            Some(a) => out.apply_op2_no_bwd(&grad.contiguous()?, &ActGrad(a))?,
        };
        Ok((Some(g.clone()), Some(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn relu6_value_and_gradient() -> Result<()> {
        let x = Var::new(&[-1f32, 0.5, 5.9, 6.5, 3.0], &Device::Cpu)?;
        let y = relu6(x.as_tensor())?;
        assert_eq!(y.to_vec1::<f32>()?, [0.0, 0.5, 5.9, 6.0, 3.0]);
        let g = (y * Tensor::new(&[1f32, 2., 3., 4., 5.], &Device::Cpu)?)?
            .sum_all()?
            .backward()?;
        assert_eq!(
            g.get(&x).unwrap().to_vec1::<f32>()?,
            [0.0, 2.0, 3.0, 0.0, 5.0]
        );
        Ok(())
    }

    /// Against candle's own ReLU, over more elements than one parallel task takes.
    #[test]
    fn relu_matches_candle_in_value_and_gradient() -> Result<()> {
        let n = 3 * CHUNK + 17;
        let x = Var::randn(0f32, 1.0, n, &Device::Cpu)?;
        let up = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?;
        let ours = relu(x.as_tensor())?;
        let theirs = x.as_tensor().relu()?;
        assert_eq!(ours.to_vec1::<f32>()?, theirs.to_vec1::<f32>()?);
        let g1 = (ours * &up)?.sum_all()?.backward()?;
        let g2 = (theirs * &up)?.sum_all()?.backward()?;
        assert_eq!(
            g1.get(&x).unwrap().to_vec1::<f32>()?,
            g2.get(&x).unwrap().to_vec1::<f32>()?
        );
        Ok(())
    }

    /// Against candle's addition and ReLU, in value and both gradients, with and without it.
    #[test]
    fn residual_matches_candle() -> Result<()> {
        let n = 2 * CHUNK + 5;
        let dev = Device::Cpu;
        let y = Var::randn(0f32, 1.0, n, &dev)?;
        let r = Var::randn(0f32, 1.0, n, &dev)?;
        let up = Tensor::randn(0f32, 1.0, n, &dev)?;
        for activation in [None, Some(Activation::Relu)] {
            let ours = residual(y.as_tensor(), r.as_tensor(), activation)?;
            let sum = (y.as_tensor() + r.as_tensor())?;
            let theirs = if activation.is_some() {
                sum.relu()?
            } else {
                sum
            };
            assert_eq!(ours.to_vec1::<f32>()?, theirs.to_vec1::<f32>()?);
            let g1 = (ours * &up)?.sum_all()?.backward()?;
            let g2 = (theirs * &up)?.sum_all()?.backward()?;
            for v in [&y, &r] {
                assert_eq!(
                    g1.get(v).unwrap().to_vec1::<f32>()?,
                    g2.get(v).unwrap().to_vec1::<f32>()?,
                    "{activation:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn leaky_relu_value_and_gradient() -> Result<()> {
        let x = Var::new(&[-2f32, 0.5, 3.0], &Device::Cpu)?;
        let y = leaky_relu(x.as_tensor(), 0.2)?;
        assert_eq!(y.to_vec1::<f32>()?, [-0.4, 0.5, 3.0]);
        let g = y.sum_all()?.backward()?;
        assert_eq!(g.get(&x).unwrap().to_vec1::<f32>()?, [0.2, 1.0, 1.0]);
        Ok(())
    }
}
