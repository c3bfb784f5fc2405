//! Convolution + BatchNorm + activation, the unit both networks are made of.

use candle_core::{Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::graph::GraphBuilder;
use crate::ops;

/// Activation after the BatchNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// None (linear bottleneck, or before a residual add).
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Act {
    /// The kernel's activation (fused into the BatchNorm before it).
    fn kernel(self) -> Option<ops::Activation> {
        match self {
            Act::None => None,
            Act::Relu => Some(ops::Activation::Relu),
            Act::Relu6 => Some(ops::Activation::Relu6),
        }
    }

    fn export(self, g: &mut GraphBuilder, x: String) -> String {
        match self {
            Act::None => x,
            Act::Relu => g.relu(&x),
            Act::Relu6 => g.relu6(&x),
        }
    }
}

thread_local! {
    /// When set, training-mode BatchNorm updates its running statistics with this momentum.
    static MOMENTUM_OVERRIDE: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every BatchNorm's running-statistics momentum set to `momentum` on this thread
/// (`1/i` for the i-th batch gives the exact average over batches: "precise" statistics).
pub fn with_momentum<T>(momentum: f64, f: impl FnOnce() -> T) -> T {
    let previous = MOMENTUM_OVERRIDE.with(|m| m.replace(Some(momentum)));
    let out = f();
    MOMENTUM_OVERRIDE.with(|m| m.set(previous));
    out
}

/// 2-D BatchNorm with torchvision's parameter names, eps 1e-5 and momentum 0.1, running on the
/// fused CPU kernels of [`ops::batch_norm`].
#[derive(Clone, Debug)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// Fetches `weight`, `bias`, `running_mean` and `running_var` for `c` channels.
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let stat = |name: &str, init: f64| -> Result<Var> {
            Var::from_tensor(&vb.get_with_hints(c, name, Init::Const(init))?)
        };
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(c, "bias", Init::Const(0.0))?,
            running_mean: stat("running_mean", 0.0)?,
            running_var: stat("running_var", 1.0)?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Normalises with the batch's statistics (updating the running ones) when `train`, else with
    /// the running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_activated(x, train, None)
    }

    /// [`Self::forward_t`] followed by `activation`, in the same sweeps over the data.
    pub fn forward_activated(
        &self,
        x: &Tensor,
        train: bool,
        activation: Option<ops::Activation>,
    ) -> Result<Tensor> {
        let (mean, var) = if train {
            let stats = ops::channel_stats(x)?;
            let (mean, var) = (stats.get(0)?, stats.get(1)?);
            let (n, _, h, w) = x.dims4()?;
            let count = (n * h * w) as f64;
            // PyTorch keeps the unbiased variance in the running estimate.
            let unbiased = (&var * (count / (count - 1.0).max(1.0)))?;
            let m = MOMENTUM_OVERRIDE.with(|m| m.get()).unwrap_or(self.momentum);
            self.running_mean
                .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (&mean * m)?)?)?;
            self.running_var
                .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_detached_tensor(),
                self.running_var.as_detached_tensor(),
            )
        };
        let params = Tensor::stack(&[&self.weight, &self.bias, &mean, &var], 0)?;
        ops::batch_norm(x, &params, self.eps, train, activation)
    }

    /// `(scale, shift)` per channel such that eval-mode output is `x·scale + shift`.
    pub fn affine(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let var = self.running_var.as_tensor().to_vec1::<f32>()?;
        let mean = self.running_mean.as_tensor().to_vec1::<f32>()?;
        let gamma = self.weight.to_vec1::<f32>()?;
        let beta = self.bias.to_vec1::<f32>()?;
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(&g, &v)| f64::from(g) / (f64::from(v) + self.eps).sqrt())
            .collect();
        let shift = (0..scale.len())
            .map(|o| f64::from(beta[o]) - f64::from(mean[o]) * scale[o])
            .collect();
        Ok((scale, shift))
    }
}

/// Shape of a convolution: `cin → cout`, `k×k`, stride, groups (`groups == cin` is depthwise).
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Groups.
    pub groups: usize,
}

impl ConvSpec {
    /// A dense convolution.
    pub fn dense(cin: usize, cout: usize, k: usize, stride: usize) -> Self {
        Self {
            cin,
            cout,
            k,
            stride,
            groups: 1,
        }
    }

    /// A depthwise convolution.
    pub fn depthwise(c: usize, k: usize, stride: usize) -> Self {
        Self {
            cin: c,
            cout: c,
            k,
            stride,
            groups: c,
        }
    }
}

/// A bias-free convolution followed by BatchNorm and an activation (torchvision's `Conv2dNormActivation`).
#[derive(Clone, Debug)]
pub struct ConvBn {
    weight: Tensor,
    spec: ConvSpec,
    padding: usize,
    bn: BatchNorm,
    act: Act,
}

impl ConvBn {
    /// Builds the layer, fetching `weight` from `conv` and the BatchNorm from `bn`.
    pub fn new(spec: ConvSpec, act: Act, conv: VarBuilder, bn: VarBuilder) -> Result<Self> {
        let weight = conv.get_with_hints(
            (spec.cout, spec.cin / spec.groups, spec.k, spec.k),
            "weight",
            Init::Const(0.0),
        )?;
        let bn = BatchNorm::new(spec.cout, bn)?;
        Ok(Self {
            weight,
            spec,
            padding: (spec.k - 1) / 2,
            bn,
            act,
        })
    }

    /// Convolution, BatchNorm (batch statistics when `train`), activation.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv(x)?;
        self.bn.forward_activated(&y, train, self.act.kernel())
    }

    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.spec;
        if s.groups > 1 && s.groups == s.cin && s.cin == s.cout {
            ops::depthwise_conv2d(x, &self.weight, s.stride, self.padding)
        } else if s.groups == 1 {
            ops::conv2d(x, &self.weight, s.stride, self.padding)
        } else {
            x.conv2d(&self.weight, self.padding, s.stride, 1, s.groups)
        }
    }

    /// Weight and bias with the BatchNorm (running statistics) folded in:
    /// `W' = W·s[o]`, `b' = β − μ·s` with `s = γ/√(σ² + ε)`.
    pub fn folded(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (scale, shift) = self.bn.affine()?;
        let w = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let per_out = w.len() / self.spec.cout;
        let w = w
            .iter()
            .enumerate()
            .map(|(i, &v)| (f64::from(v) * scale[i / per_out]) as f32)
            .collect();
        Ok((w, shift.iter().map(|&b| b as f32).collect()))
    }

    /// Writes the folded convolution and its activation into the graph.
    pub fn export(&self, g: &mut GraphBuilder, x: &str) -> Result<String> {
        let (w, b) = self.folded()?;
        let s = self.spec;
        let dims = [s.cout, s.cin / s.groups, s.k, s.k];
        let y = g.conv(x, (&dims, &w), &b, s.stride, self.padding, s.groups);
        Ok(self.act.export(g, y))
    }
}

/// A fully connected classifier head (`weight [C, F]`, `bias [C]`).
#[derive(Clone, Debug)]
pub struct Head {
    /// `[C, F]`.
    pub weight: Tensor,
    /// `[C]`.
    pub bias: Tensor,
}

impl Head {
    /// Fetches `weight` and `bias` for `features → classes`.
    pub fn new(features: usize, classes: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints((classes, features), "weight", Init::Const(0.0))?,
            bias: vb.get_with_hints(classes, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for Head {
    fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        pooled.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// Fed one distribution in training mode, the running statistics converge to it, and then
    /// evaluation mode gives what training mode gives.
    #[test]
    fn running_statistics_converge() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let bn = BatchNorm::new(3, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let shift = Tensor::new(&[3f32, -1.0, 0.0], &dev)?.reshape((1, 3, 1, 1))?;
        let scale = Tensor::new(&[2f32, 0.5, 1.0], &dev)?.reshape((1, 3, 1, 1))?;
        let batch_of = |n: usize| -> Result<Tensor> {
            Tensor::randn(0f32, 1.0, (n, 3, 6, 6), &dev)?
                .broadcast_mul(&scale)?
                .broadcast_add(&shift)
        };
        let batch = || batch_of(8);
        for _ in 0..200 {
            bn.forward_t(&batch()?, true)?;
        }
        let mean = bn.running_mean.as_tensor().to_vec1::<f32>()?;
        let var = bn.running_var.as_tensor().to_vec1::<f32>()?;
        for (got, want) in mean.iter().zip([3.0, -1.0, 0.0]) {
            assert!((got - want).abs() < 0.1, "mean {mean:?}");
        }
        for (got, want) in var.iter().zip([4.0, 0.25, 1.0]) {
            assert!((got / want - 1.0).abs() < 0.1, "var {var:?}");
        }
        // A large batch: its own statistics (training mode) are then close to the distribution's,
        // so what remains of the difference is the running statistics' error (with 8 photos the
        // batch's sampling noise alone exceeded the tolerance now and then: the draws are unseeded).
        let x = batch_of(64)?;
        let d = (bn.forward_t(&x, false)? - bn.forward_t(&x, true)?)?
            .abs()?
            .mean_all()?
            .to_scalar::<f32>()?;
        assert!(d < 0.1, "eval and train outputs differ by {d}");
        Ok(())
    }

    /// Folding gives the same output as conv + BN in eval mode, for every conv path.
    #[test]
    fn folding_preserves_eval_output() -> Result<()> {
        let dev = Device::Cpu;
        for spec in [
            ConvSpec::dense(3, 5, 3, 2),
            ConvSpec::dense(4, 6, 1, 1),
            ConvSpec::depthwise(4, 3, 1),
        ] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let layer = ConvBn::new(spec, Act::Relu6, vb.pp("c"), vb.pp("bn"))?;
            for (name, var) in vm.data().lock().unwrap().iter() {
                let t = if name.ends_with("running_var") {
                    Tensor::rand(0.5f32, 2.0, var.shape(), &dev)?
                } else {
                    Tensor::randn(0f32, 1.0, var.shape(), &dev)?
                };
                var.set(&t)?;
            }
            let x = Tensor::randn(0f32, 1.0, (2, spec.cin, 7, 7), &dev)?;
            let expected = layer.forward_t(&x, false)?;
            let (w, b) = layer.folded()?;
            let w = Tensor::from_vec(w, layer.weight.shape(), &dev)?;
            let b = Tensor::from_vec(b, spec.cout, &dev)?;
            let y = x
                .conv2d(&w, layer.padding, spec.stride, 1, spec.groups)?
                .broadcast_add(&b.reshape((1, spec.cout, 1, 1))?)?
                .clamp(0f32, 6f32)?;
            let diff = (y - expected)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{spec:?}: {diff}");
        }
        Ok(())
    }
}
