//! MobileNetV2 (Sandler et al. 2018) with torchvision's module layout and parameter names.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Act, ConvBn, ConvSpec};
use crate::graph::GraphBuilder;
use crate::ops;

/// `(expansion t, channels c, repeats n, first stride s)` of each stage, from the paper's table 2.
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// torchvision's `_make_divisible(v, 8)`: round to a multiple of 8, never more than 10% down.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

#[derive(Clone, Debug)]
struct InvertedResidual {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl InvertedResidual {
    fn new(cin: usize, cout: usize, stride: usize, t: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = cin * t;
        let vb = vb.pp("conv");
        // torchvision numbers the Sequential's children; expansion 1 has no expand conv.
        let mut i = 0;
        let expand = if t != 1 {
            let c = ConvBn::new(
                ConvSpec::dense(cin, hidden, 1, 1),
                Act::Relu6,
                vb.pp("0").pp("0"),
                vb.pp("0").pp("1"),
            )?;
            i += 1;
            Some(c)
        } else {
            None
        };
        let dw = vb.pp(i.to_string());
        let depthwise = ConvBn::new(
            ConvSpec::depthwise(hidden, 3, stride),
            Act::Relu6,
            dw.pp("0"),
            dw.pp("1"),
        )?;
        let project = ConvBn::new(
            ConvSpec::dense(hidden, cout, 1, 1),
            Act::None,
            vb.pp((i + 1).to_string()),
            vb.pp((i + 2).to_string()),
        )?;
        Ok(Self {
            expand,
            depthwise,
            project,
            residual: stride == 1 && cin == cout,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = match &self.expand {
            Some(e) => e.forward_t(x, train)?,
            None => x.clone(),
        };
        y = self.depthwise.forward_t(&y, train)?;
        y = self.project.forward_t(&y, train)?;
        if self.residual {
            y = ops::residual(&y, x, None)?;
        }
        Ok(y)
    }

    fn export(&self, g: &mut GraphBuilder, x: &str) -> Result<String> {
        let mut y = x.to_string();
        if let Some(e) = &self.expand {
            y = e.export(g, &y)?;
        }
        y = self.depthwise.export(g, &y)?;
        y = self.project.export(g, &y)?;
        Ok(if self.residual { g.add(&y, x) } else { y })
    }
}

/// The MobileNetV2 feature extractor (`features.0` … `features.18`).
#[derive(Clone, Debug)]
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
    out_channels: usize,
}

impl MobileNetV2 {
    /// Builds the features with width multiplier `width` under `vb` (`features.*` names).
    pub fn new(width: f64, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("features");
        let mut cin = make_divisible(32.0 * width, 8);
        let out_channels = make_divisible(1280.0 * width.max(1.0), 8);
        let stem = ConvBn::new(
            ConvSpec::dense(3, cin, 3, 2),
            Act::Relu6,
            vb.pp("0").pp("0"),
            vb.pp("0").pp("1"),
        )?;
        let mut blocks = Vec::new();
        let mut index = 1;
        for (t, c, n, s) in STAGES {
            let cout = make_divisible(c as f64 * width, 8);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::new(
                    cin,
                    cout,
                    stride,
                    t,
                    vb.pp(index.to_string()),
                )?);
                cin = cout;
                index += 1;
            }
        }
        let last = ConvBn::new(
            ConvSpec::dense(cin, out_channels, 1, 1),
            Act::Relu6,
            vb.pp(index.to_string()).pp("0"),
            vb.pp(index.to_string()).pp("1"),
        )?;
        Ok(Self {
            stem,
            blocks,
            last,
            out_channels,
        })
    }

    /// Channels of the final feature map.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Number of stages (`features.0` … `features.18`).
    pub fn num_stages(&self) -> usize {
        self.blocks.len() + 2
    }

    /// Parameter-name prefix of a stage.
    pub fn stage_prefix(&self, stage: usize) -> String {
        format!("features.{stage}.")
    }

    /// Runs stages `range` (of [`Self::num_stages`]).
    pub fn forward_range(
        &self,
        x: &Tensor,
        range: std::ops::Range<usize>,
        train: bool,
    ) -> Result<Tensor> {
        let mut y = x.clone();
        for stage in range {
            y = if stage == 0 {
                self.stem.forward_t(&y, train)?
            } else if stage <= self.blocks.len() {
                self.blocks[stage - 1].forward_t(&y, train)?
            } else {
                self.last.forward_t(&y, train)?
            };
        }
        Ok(y)
    }

    /// Feature map `[N, F, H/32, W/32]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_range(x, 0..self.num_stages(), train)
    }

    /// Writes the features into an ONNX graph; returns the feature map's name.
    pub fn export(&self, g: &mut GraphBuilder, x: &str) -> Result<String> {
        let mut y = self.stem.export(g, x)?;
        for b in &self.blocks {
            y = b.export(g, &y)?;
        }
        self.last.export(g, &y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(16.0 * 0.5, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24);
        assert_eq!(make_divisible(96.0 * 0.35, 8), 32);
        assert_eq!(make_divisible(1280.0, 8), 1280);
        assert_eq!(make_divisible(4.0, 8), 8);
    }
}
