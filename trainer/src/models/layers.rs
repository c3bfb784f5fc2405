//! Convolution + BatchNorm + activation, the unit both networks are made of.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Init, VarBuilder};

use crate::onnx::GraphBuilder;
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
    fn apply(self, x: Tensor) -> Result<Tensor> {
        match self {
            Act::None => Ok(x),
            Act::Relu => x.relu(),
            Act::Relu6 => x.clamp(0f32, 6f32),
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
        let bn = candle_nn::batch_norm(spec.cout, BatchNormConfig::default(), bn)?;
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
        self.act.apply(self.bn.forward_t(&y, train)?)
    }

    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.spec;
        if s.groups > 1 && s.groups == s.cin && s.cin == s.cout {
            ops::depthwise_conv2d(x, &self.weight, s.stride, self.padding)
        } else if s.k == 1 && s.stride == 1 && s.groups == 1 {
            // A 1×1 convolution is a matrix product; candle's conv path costs an extra copy.
            let (n, c, h, w) = x.dims4()?;
            let wm = self.weight.reshape((s.cout, c))?;
            wm.broadcast_matmul(&x.reshape((n, c, h * w))?)?
                .reshape((n, s.cout, h, w))
        } else {
            x.conv2d(&self.weight, self.padding, s.stride, 1, s.groups)
        }
    }

    /// Weight and bias with the BatchNorm (running statistics) folded in.
    pub fn folded(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (gamma, beta) = self
            .bn
            .weight_and_bias()
            .ok_or_else(|| candle_core::Error::Msg("BatchNorm without affine".into()))?;
        let var = self.bn.running_var().to_vec1::<f32>()?;
        let mean = self.bn.running_mean().to_vec1::<f32>()?;
        let gamma = gamma.to_vec1::<f32>()?;
        let beta = beta.to_vec1::<f32>()?;
        let eps = self.bn.eps();
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(&g, &v)| f64::from(g) / (f64::from(v) + eps).sqrt())
            .collect();
        let w = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let per_out = w.len() / self.spec.cout;
        let w: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &v)| (f64::from(v) * scale[i / per_out]) as f32)
            .collect();
        let b: Vec<f32> = (0..self.spec.cout)
            .map(|o| (f64::from(beta[o]) - f64::from(mean[o]) * scale[o]) as f32)
            .collect();
        Ok((w, b))
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
