//! The classifiers: a backbone (MobileNetV2 or ResNet-18) plus a linear head, in one `VarMap`
//! so the same object trains, saves, loads torchvision weights and exports to ONNX.

mod layers;
pub mod mobilenet_v2;
pub mod resnet;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

pub use layers::{with_momentum, Act, BatchNorm, ConvBn, ConvSpec, Head};
pub use mobilenet_v2::MobileNetV2;
pub use resnet::ResNet18;

use crate::error::{Error, Result};
use crate::weights::{self, LoadReport};

/// Variables with their names.
pub type NamedVars = Vec<(String, Var)>;

/// Seed used when none is given, so demo exports are reproducible.
pub const DEFAULT_SEED: u64 = 20_220_523;

/// A supported network architecture (serialised as its name, e.g. `mobilenet_v2_w0.5`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Arch {
    /// MobileNetV2 with a width multiplier (1.0 is the standard network).
    MobileNetV2 {
        /// Channel width multiplier.
        width: f64,
    },
    /// ResNet-18.
    ResNet18,
}

impl Arch {
    /// torchvision's name of the classifier head's parameters.
    pub fn head_prefix(&self) -> &'static str {
        match self {
            Arch::MobileNetV2 { .. } => "classifier.1",
            Arch::ResNet18 => "fc",
        }
    }

    /// Side of the final feature map (five stride-2 stages) for an input side.
    pub fn feature_side(&self, input: usize) -> usize {
        (0..5).fold(input, |i, _| (i.max(1) - 1) / 2 + 1)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::MobileNetV2 { width } if *width == 1.0 => write!(f, "mobilenet_v2"),
            Arch::MobileNetV2 { width } => write!(f, "mobilenet_v2_w{width}"),
            Arch::ResNet18 => write!(f, "resnet18"),
        }
    }
}

impl FromStr for Arch {
    type Err = Error;

    /// `mobilenet_v2`, `mobilenet_v2_w0.5` (any width in 0.1..=2), or `resnet18`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
            "unknown architecture {s:?}: expected mobilenet_v2, mobilenet_v2_w<WIDTH> or resnet18"
        ))
        };
        match s {
            "mobilenet_v2" => Ok(Arch::MobileNetV2 { width: 1.0 }),
            "resnet18" => Ok(Arch::ResNet18),
            _ => {
                let width: f64 = s
                    .strip_prefix("mobilenet_v2_w")
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(bad)?;
                if (0.1..=2.0).contains(&width) {
                    Ok(Arch::MobileNetV2 { width })
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Arch {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

#[derive(Clone, Debug)]
enum Backbone {
    MobileNetV2(MobileNetV2),
    ResNet18(ResNet18),
}

/// A classifier: backbone, global average pool, linear head.
pub struct Network {
    arch: Arch,
    num_classes: usize,
    backbone: Backbone,
    head: Head,
    varmap: VarMap,
    device: Device,
}

impl Network {
    /// A network with seeded random weights (torchvision's initialisation scheme).
    pub fn new(arch: Arch, num_classes: usize, seed: u64, device: &Device) -> Result<Self> {
        if num_classes < 2 {
            return Err(Error::Invalid(format!(
                "a classifier needs at least 2 classes, got {num_classes}"
            )));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let (backbone, features) = match arch {
            Arch::MobileNetV2 { width } => {
                let m = MobileNetV2::new(width, vb.clone())?;
                let f = m.out_channels();
                (Backbone::MobileNetV2(m), f)
            }
            Arch::ResNet18 => {
                let m = ResNet18::new(vb.clone())?;
                let f = m.out_channels();
                (Backbone::ResNet18(m), f)
            }
        };
        let head = Head::new(features, num_classes, vb.pp(arch.head_prefix()))?;
        let net = Self {
            arch,
            num_classes,
            backbone,
            head,
            varmap,
            device: device.clone(),
        };
        net.initialise(seed)?;
        Ok(net)
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Channels of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        match &self.backbone {
            Backbone::MobileNetV2(m) => m.out_channels(),
            Backbone::ResNet18(m) => m.out_channels(),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// All parameters and BatchNorm statistics, by torchvision name.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The classifier head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Final feature map `[N, F, h, w]`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match &self.backbone {
            Backbone::MobileNetV2(m) => m.forward_t(x, train)?,
            Backbone::ResNet18(m) => m.forward_t(x, train)?,
        })
    }

    /// Number of backbone stages (19 for MobileNetV2, 9 for ResNet-18).
    pub fn num_stages(&self) -> usize {
        match &self.backbone {
            Backbone::MobileNetV2(m) => m.num_stages(),
            Backbone::ResNet18(m) => m.num_stages(),
        }
    }

    /// Runs backbone stages `range` only (for partial fine-tuning: frozen stages run once in
    /// evaluation mode without a graph, trainable ones in training mode).
    pub fn forward_stages(
        &self,
        x: &Tensor,
        range: std::ops::Range<usize>,
        train: bool,
    ) -> Result<Tensor> {
        Ok(match &self.backbone {
            Backbone::MobileNetV2(m) => m.forward_range(x, range, train)?,
            Backbone::ResNet18(m) => m.forward_range(x, range, train)?,
        })
    }

    /// Replaces the running statistics of the BatchNorms in stages `first..` by their exact
    /// average over `batches` (earlier stages run in evaluation mode and keep theirs).
    ///
    /// Early in training from scratch the weights move faster than the running averages follow,
    /// and evaluation-mode outputs can be far from training-mode ones; recomputing the
    /// statistics for the current weights before validating removes that lag ("precise BN").
    pub fn recompute_batchnorm<I>(&self, first: usize, batches: I) -> Result<()>
    where
        I: IntoIterator<Item = Result<Tensor>>,
    {
        for (i, x) in batches.into_iter().enumerate() {
            let x = self.forward_stages(&x?, 0..first, false)?;
            layers::with_momentum(1.0 / (i + 1) as f64, || {
                self.forward_stages(&x, first..self.num_stages(), true)
            })?;
        }
        Ok(())
    }

    /// Whether parameter `name` belongs to a stage at or after `first` (or to the head).
    pub fn is_in_stages_from(&self, name: &str, first: usize) -> bool {
        if name.starts_with(&format!("{}.", self.arch.head_prefix())) {
            return true;
        }
        (first..self.num_stages()).any(|stage| match &self.backbone {
            Backbone::MobileNetV2(m) => name.starts_with(&m.stage_prefix(stage)),
            Backbone::ResNet18(m) => m.stage_prefixes(stage).iter().any(|p| name.starts_with(p)),
        })
    }

    /// Global average of a feature map: `[N, F]`.
    pub fn pool(features: &Tensor) -> Result<Tensor> {
        Ok(features.mean((2, 3))?)
    }

    /// Logits from pooled features.
    pub fn classify(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(pooled)?)
    }

    /// Logits `[N, C]` of a normalised batch `[N, 3, S, S]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classify(&Self::pool(&self.features(x, train)?)?)
    }

    /// Trainable variables, split into (backbone, head). BatchNorm running statistics are excluded.
    pub fn trainable_vars(&self) -> (NamedVars, NamedVars) {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let head = format!("{}.", self.arch.head_prefix());
        let mut backbone_vars = Vec::new();
        let mut head_vars = Vec::new();
        for name in names {
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                continue;
            }
            let entry = (name.clone(), data[name].clone());
            if name.starts_with(&head) {
                head_vars.push(entry);
            } else {
                backbone_vars.push(entry);
            }
        }
        (backbone_vars, head_vars)
    }

    /// Re-initialises every variable from `seed`: Kaiming-normal (fan-out) convolutions,
    /// N(0, 0.01) head, unit BatchNorm, zero biases, as torchvision does.
    pub fn initialise(&self, seed: u64) -> Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let shape = var.dims().to_vec();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("running_var") {
                vec![1.0; n]
            } else if name.ends_with("bias") || name.ends_with("running_mean") {
                vec![0.0; n]
            } else if shape.len() == 1 {
                vec![1.0; n]
            } else {
                let std = if shape.len() == 4 {
                    (2.0 / (shape[0] * shape[2] * shape[3]) as f64).sqrt()
                } else {
                    0.01
                };
                let normal = Normal::new(0.0, std).expect("finite std");
                (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
            };
            var.set(&Tensor::from_vec(values, shape, &self.device)?)?;
        }
        Ok(())
    }

    /// Loads torchvision-named weights (safetensors or PyTorch `.pth`). An ImageNet classifier of
    /// another shape is ignored; every missing or mis-shaped backbone tensor is an error.
    pub fn load_weights(&self, path: &Path) -> Result<LoadReport> {
        let tensors = weights::read(path, &self.device)?;
        weights::load_into(
            &self.varmap,
            &tensors,
            self.arch.head_prefix(),
            weights::HeadPolicy::Optional,
            path,
        )
    }

    /// Loads a complete checkpoint written by [`Self::save`] (the head must be there too).
    pub fn load_checkpoint(&self, path: &Path) -> Result<LoadReport> {
        let tensors = weights::read(path, &self.device)?;
        weights::load_into(
            &self.varmap,
            &tensors,
            self.arch.head_prefix(),
            weights::HeadPolicy::Required,
            path,
        )
    }

    /// Saves every variable as safetensors, atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::Checkpoint::new()
            .vars(None, &self.varmap)
            .write(path)
    }

    /// Writes the backbone into an ONNX graph; returns the feature map's name.
    pub fn export_features(&self, g: &mut crate::graph::GraphBuilder, x: &str) -> Result<String> {
        Ok(match &self.backbone {
            Backbone::MobileNetV2(m) => m.export(g, x)?,
            Backbone::ResNet18(m) => m.export(g, x)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for s in ["mobilenet_v2", "mobilenet_v2_w0.5", "resnet18"] {
            assert_eq!(s.parse::<Arch>().unwrap().to_string(), s);
        }
        assert!("vgg16".parse::<Arch>().is_err());
        assert!("mobilenet_v2_w9".parse::<Arch>().is_err());
    }

    #[test]
    fn staged_forward_equals_full_forward() -> Result<()> {
        let dev = Device::Cpu;
        for arch in [Arch::MobileNetV2 { width: 0.35 }, Arch::ResNet18] {
            let net = Network::new(arch, 2, 3, &dev)?;
            let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &dev)?;
            let full = net.features(&x, false)?;
            let k = net.num_stages() - 3;
            let split = net.forward_stages(
                &net.forward_stages(&x, 0..k, false)?,
                k..net.num_stages(),
                false,
            )?;
            assert_eq!((full - split)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
            let (backbone, head) = net.trainable_vars();
            let late: Vec<_> = backbone
                .iter()
                .filter(|(n, _)| net.is_in_stages_from(n, k))
                .collect();
            assert!(!late.is_empty() && late.len() < backbone.len());
            assert!(head
                .iter()
                .all(|(n, _)| net.is_in_stages_from(n, net.num_stages())));
        }
        Ok(())
    }

    #[test]
    fn feature_side() {
        let a = Arch::ResNet18;
        assert_eq!(a.feature_side(224), 7);
        assert_eq!(a.feature_side(64), 2);
        assert_eq!(a.feature_side(100), 4);
    }

    #[test]
    fn shapes_and_seeded_init() -> Result<()> {
        let dev = Device::Cpu;
        for arch in [Arch::MobileNetV2 { width: 0.35 }, Arch::ResNet18] {
            let a = Network::new(arch, 3, 7, &dev)?;
            let b = Network::new(arch, 3, 7, &dev)?;
            let c = Network::new(arch, 3, 8, &dev)?;
            let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &dev)?;
            let fa = a.features(&x, false)?;
            assert_eq!(fa.dims(), [2, a.feature_dim(), 2, 2]);
            let la = a.forward_t(&x, false)?;
            assert_eq!(la.dims(), [2, 3]);
            let lb = b.forward_t(&x, false)?;
            let lc = c.forward_t(&x, false)?;
            let d = |p: &Tensor, q: &Tensor| -> Result<f32> {
                Ok((p - q)?.abs()?.sum_all()?.to_scalar::<f32>()?)
            };
            assert_eq!(d(&la, &lb)?, 0.0, "same seed, same weights");
            assert!(d(&la, &lc)? > 0.0, "another seed, other weights");
        }
        Ok(())
    }
}
