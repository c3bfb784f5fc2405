//! ResNet-18 (He et al. 2016) with torchvision's parameter names.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Act, ConvBn, ConvSpec};
use crate::graph::GraphBuilder;
use crate::ops;

#[derive(Clone, Debug)]
struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    downsample: Option<ConvBn>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let conv1 = ConvBn::new(
            ConvSpec::dense(cin, cout, 3, stride),
            Act::Relu,
            vb.pp("conv1"),
            vb.pp("bn1"),
        )?;
        let conv2 = ConvBn::new(
            ConvSpec::dense(cout, cout, 3, 1),
            Act::None,
            vb.pp("conv2"),
            vb.pp("bn2"),
        )?;
        let downsample = if stride != 1 || cin != cout {
            let d = vb.pp("downsample");
            Some(ConvBn::new(
                ConvSpec::dense(cin, cout, 1, stride),
                Act::None,
                d.pp("0"),
                d.pp("1"),
            )?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .conv2
            .forward_t(&self.conv1.forward_t(x, train)?, train)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        ops::residual(&y, &shortcut, Some(ops::Activation::Relu))
    }

    fn export(&self, g: &mut GraphBuilder, x: &str) -> Result<String> {
        let y = self.conv1.export(g, x)?;
        let y = self.conv2.export(g, &y)?;
        let shortcut = match &self.downsample {
            Some(d) => d.export(g, x)?,
            None => x.to_string(),
        };
        let sum = g.add(&y, &shortcut);
        Ok(g.relu(&sum))
    }
}

/// ResNet-18 up to `layer4` (`conv1`, `bn1`, `layer1` … `layer4`).
#[derive(Clone, Debug)]
pub struct ResNet18 {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
}

impl ResNet18 {
    /// Builds the trunk under `vb` with torchvision names.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(
            ConvSpec::dense(3, 64, 7, 2),
            Act::Relu,
            vb.pp("conv1"),
            vb.pp("bn1"),
        )?;
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (layer, cout) in [64, 128, 256, 512].into_iter().enumerate() {
            let vb = vb.pp(format!("layer{}", layer + 1));
            let stride = if layer == 0 { 1 } else { 2 };
            blocks.push(BasicBlock::new(cin, cout, stride, vb.pp("0"))?);
            blocks.push(BasicBlock::new(cout, cout, 1, vb.pp("1"))?);
            cin = cout;
        }
        Ok(Self { stem, blocks })
    }

    /// Channels of the final feature map.
    pub fn out_channels(&self) -> usize {
        512
    }

    /// Number of stages: the stem (with its max pool) and the eight basic blocks.
    pub fn num_stages(&self) -> usize {
        self.blocks.len() + 1
    }

    /// Parameter-name prefixes of a stage.
    pub fn stage_prefixes(&self, stage: usize) -> Vec<String> {
        if stage == 0 {
            vec!["conv1.".into(), "bn1.".into()]
        } else {
            vec![format!("layer{}.{}.", (stage - 1) / 2 + 1, (stage - 1) % 2)]
        }
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
                ops::max_pool2d(&self.stem.forward_t(&y, train)?, 3, 2, 1)?
            } else {
                self.blocks[stage - 1].forward_t(&y, train)?
            };
        }
        Ok(y)
    }

    /// Feature map `[N, 512, H/32, W/32]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_range(x, 0..self.num_stages(), train)
    }

    /// Writes the trunk into an ONNX graph; returns the feature map's name.
    pub fn export(&self, g: &mut GraphBuilder, x: &str) -> Result<String> {
        let y = self.stem.export(g, x)?;
        let mut y = g.max_pool(&y, 3, 2, 1);
        for b in &self.blocks {
            y = b.export(g, &y)?;
        }
        Ok(y)
    }
}
