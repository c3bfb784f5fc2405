//! The generator/discriminator pairs ([`GanArch`]) and their variables.
//!
//! The paper's DCGAN (Radford et al. 2016) lives here: transposed convolutions with BatchNorm and
//! ReLU up to a tanh image; strided convolutions with BatchNorm and LeakyReLU(0.2) down to one
//! logit. 64 px has four up/down-sampling stages, 128 px five. Parameter names follow PyTorch's
//! DCGAN example (`main.<index>.weight`). The data-efficient pair is in `fastgan` and `projected`.

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::{fastgan, projected};
use crate::models::BatchNorm;
use crate::ops;

/// Which generator and discriminator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GanArch {
    /// A FastGAN-style generator against a projected discriminator on frozen ImageNet
    /// MobileNetV2 features (needs those weights).
    #[default]
    Projected,
    /// The source paper's DCGAN pair.
    Dcgan,
}

/// Length of the latent vector.
pub const Z_DIM: usize = 100;

/// Channel widths of the stages for an image side, from the 4×4 end (`base·2^k`, capped at 512).
fn widths(size: usize, base: usize) -> Vec<usize> {
    let stages = size.trailing_zeros() as usize - 2;
    (0..stages)
        .map(|i| (base << (stages - 1 - i)).min(512))
        .collect()
}

/// Checks the image side: 64 or 128.
pub fn check_size(size: usize) -> Result<()> {
    if size != 64 && size != 128 {
        candle_core::bail!("GAN image size must be 64 or 128, got {size}");
    }
    Ok(())
}

struct Layer {
    weight: Tensor,
    bn: Option<BatchNorm>,
    stride: usize,
    padding: usize,
}

/// The DCGAN generator: `z [N, 100]` → image `[N, 3, S, S]` in [−1, 1].
pub struct DcganGenerator {
    layers: Vec<Layer>,
    size: usize,
}

impl DcganGenerator {
    /// Builds the generator for `size` (64 or 128) under `vb`.
    pub fn new(size: usize, vb: VarBuilder) -> Result<Self> {
        check_size(size)?;
        let w = widths(size, 64);
        let vb = vb.pp("main");
        let mut layers = Vec::new();
        let mut cin = Z_DIM;
        let mut index = 0;
        for (i, &cout) in w.iter().chain(std::iter::once(&3)).enumerate() {
            let last = i == w.len();
            let weight = vb.pp(index.to_string()).get_with_hints(
                (cin, cout, 4, 4),
                "weight",
                Init::Const(0.0),
            )?;
            let bn = if last {
                None
            } else {
                Some(BatchNorm::new(cout, vb.pp((index + 1).to_string()))?)
            };
            let (stride, padding) = if i == 0 { (1, 0) } else { (2, 1) };
            layers.push(Layer {
                weight,
                bn,
                stride,
                padding,
            });
            index += if last { 1 } else { 3 };
            cin = cout;
        }
        Ok(Self { layers, size })
    }

    /// Image side.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Generates images from latent vectors.
    pub fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = z.reshape((z.dim(0)?, Z_DIM, 1, 1))?;
        for l in &self.layers {
            x = ops::conv_transpose2d(&x, &l.weight, l.stride, l.padding)?;
            x = match &l.bn {
                Some(bn) => bn.forward_activated(&x, train, Some(ops::Activation::Relu))?,
                None => x.tanh()?,
            };
        }
        Ok(x)
    }
}

/// The DCGAN discriminator: image `[N, 3, S, S]` → logit `[N]` (real is positive).
pub struct DcganDiscriminator {
    layers: Vec<Layer>,
}

impl DcganDiscriminator {
    /// Builds the discriminator for `size` (64 or 128) under `vb`.
    pub fn new(size: usize, vb: VarBuilder) -> Result<Self> {
        check_size(size)?;
        let mut w = widths(size, 64);
        w.reverse();
        let vb = vb.pp("main");
        let mut layers = Vec::new();
        let mut cin = 3;
        let mut index = 0;
        for (i, &cout) in w.iter().chain(std::iter::once(&1)).enumerate() {
            let last = i == w.len();
            let weight = vb.pp(index.to_string()).get_with_hints(
                (cout, cin, 4, 4),
                "weight",
                Init::Const(0.0),
            )?;
            // No BatchNorm on the first layer (the paper's choice) nor on the logit.
            let bn = if i == 0 || last {
                None
            } else {
                Some(BatchNorm::new(cout, vb.pp((index + 1).to_string()))?)
            };
            let (stride, padding) = if last { (1, 0) } else { (2, 1) };
            index += if bn.is_some() { 3 } else { 2 };
            layers.push(Layer {
                weight,
                bn,
                stride,
                padding,
            });
            cin = cout;
        }
        Ok(Self { layers })
    }

    /// Logits of real vs generated.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.logits(x, train, false)
    }

    /// Logits with the convolutions' weights held fixed: the backward pass then skips their
    /// gradients (a third of the discriminator's products in the generator's update), which that
    /// update does not use.
    pub fn forward_fixed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.logits(x, train, true)
    }

    fn logits(&self, x: &Tensor, train: bool, fixed: bool) -> Result<Tensor> {
        let mut x = x.clone();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let weight = if fixed {
                l.weight.detach()
            } else {
                l.weight.clone()
            };
            x = ops::conv2d(&x, &weight, l.stride, l.padding)?;
            let activation = (i + 1 < n).then_some(ops::Activation::Leaky(0.2));
            x = match &l.bn {
                Some(bn) => bn.forward_activated(&x, train, activation)?,
                None => ops::activate(x, activation)?,
            };
        }
        x.flatten_all()
    }
}

/// A generator of either architecture.
pub enum Generator {
    /// The paper's.
    Dcgan(DcganGenerator),
    /// FastGAN-style.
    Lite(fastgan::Generator),
}

impl Generator {
    /// Builds the generator of `arch` for `size` (64 or 128) under `vb`.
    pub fn new(arch: GanArch, size: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match arch {
            GanArch::Dcgan => Self::Dcgan(DcganGenerator::new(size, vb)?),
            GanArch::Projected => Self::Lite(fastgan::Generator::new(size, vb)?),
        })
    }

    /// Generates images in [−1, 1] from latent vectors `[N, Z_DIM]`.
    pub fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Dcgan(g) => g.forward_t(z, train),
            Self::Lite(g) => g.forward_t(z, train),
        }
    }
}

/// A discriminator of either architecture.
pub enum Discriminator {
    /// The paper's: one logit per photo.
    Dcgan(DcganDiscriminator),
    /// Projected: maps of logits at four scales per photo.
    Projected(Box<projected::Discriminator>),
}

impl Discriminator {
    /// Logits of real vs generated, flattened (one or more per photo; real is positive).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Dcgan(d) => d.forward_t(x, train),
            Self::Projected(d) => d.forward_t(x, train),
        }
    }

    /// The same logits for the generator's update, which needs their gradient in the images
    /// only: the convolution weights are held fixed so their gradients are not computed.
    pub fn forward_fixed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Dcgan(d) => d.forward_fixed(x, train),
            Self::Projected(d) => d.forward_fixed(x, train),
        }
    }
}

/// A generator/discriminator pair with their variables, plus an exponential moving average of the
/// generator's weights (sampled from, when enabled).
pub struct Gan {
    /// The generator.
    pub g: Generator,
    /// The discriminator.
    pub d: Discriminator,
    /// The generator's variables.
    pub g_vars: VarMap,
    /// The discriminator's (trained) variables.
    pub d_vars: VarMap,
    /// The moving-average generator and its variables.
    pub ema: Option<(Generator, VarMap)>,
}

impl Gan {
    /// A freshly initialised pair (weights N(0, 0.02), BatchNorm scales N(1, 0.02), as DCGAN and
    /// FastGAN do). `features`: the ImageNet MobileNetV2 weights a projected discriminator needs.
    pub fn new(
        arch: GanArch,
        size: usize,
        ema: bool,
        seed: u64,
        features: Option<&Path>,
        device: &Device,
    ) -> crate::Result<Self> {
        let g_vars = VarMap::new();
        let d_vars = VarMap::new();
        let g = Generator::new(
            arch,
            size,
            VarBuilder::from_varmap(&g_vars, DType::F32, device),
        )?;
        let d_vb = VarBuilder::from_varmap(&d_vars, DType::F32, device);
        let d = match arch {
            GanArch::Dcgan => Discriminator::Dcgan(DcganDiscriminator::new(size, d_vb)?),
            GanArch::Projected => {
                let weights = features.ok_or_else(|| {
                    crate::Error::Invalid(
                        "the projected discriminator needs ImageNet MobileNetV2 weights".into(),
                    )
                })?;
                Discriminator::Projected(Box::new(projected::Discriminator::new(
                    size, weights, seed, d_vb, device,
                )?))
            }
        };
        let mut rng = StdRng::seed_from_u64(seed);
        init(&g_vars, &mut rng, device)?;
        init(&d_vars, &mut rng, device)?;
        let ema = if ema {
            let vars = VarMap::new();
            let g_ema = Generator::new(
                arch,
                size,
                VarBuilder::from_varmap(&vars, DType::F32, device),
            )?;
            copy_vars(&g_vars, &vars)?;
            Some((g_ema, vars))
        } else {
            None
        };
        Ok(Self {
            g,
            d,
            g_vars,
            d_vars,
            ema,
        })
    }

    /// The generator to sample from: the moving average when kept, else the trained one.
    pub fn sampler(&self) -> &Generator {
        self.ema.as_ref().map_or(&self.g, |(g, _)| g)
    }

    /// `ema ← β·ema + (1 − β)·g` (BatchNorm statistics are copied).
    pub fn update_ema(&self, beta: f64) -> Result<()> {
        let Some((_, ema)) = &self.ema else {
            return Ok(());
        };
        let src = self.g_vars.data().lock().expect("varmap lock");
        let dst = ema.data().lock().expect("varmap lock");
        for (name, v) in src.iter() {
            let e = &dst[name];
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                e.set(v.as_tensor())?;
            } else {
                e.set(&((e.as_tensor() * beta)? + (v.as_tensor() * (1.0 - beta))?)?)?;
            }
        }
        Ok(())
    }
}

fn init(vars: &VarMap, rng: &mut StdRng, device: &Device) -> Result<()> {
    let data = vars.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let normal = |mean: f64| Normal::new(mean, 0.02).expect("finite");
    for name in names {
        let v: &Var = &data[name];
        let n = v.elem_count();
        let values: Vec<f32> = if name.ends_with("running_var") {
            vec![1.0; n]
        } else if name.ends_with("bias") || name.ends_with("running_mean") {
            vec![0.0; n]
        } else if v.rank() == 1 {
            let d = normal(1.0);
            (0..n).map(|_| d.sample(rng) as f32).collect()
        } else {
            let d = normal(0.0);
            (0..n).map(|_| d.sample(rng) as f32).collect()
        };
        v.set(&Tensor::from_vec(values, v.shape(), device)?)?;
    }
    Ok(())
}

/// Copies every variable of `src` into the same-named one of `dst`.
pub fn copy_vars(src: &VarMap, dst: &VarMap) -> Result<()> {
    let s = src.data().lock().expect("varmap lock");
    let d = dst.data().lock().expect("varmap lock");
    for (name, v) in s.iter() {
        d[name].set(v.as_tensor())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_at_both_sizes() -> Result<()> {
        for size in [64, 128] {
            let gan = Gan::new(GanArch::Dcgan, size, true, 1, None, &Device::Cpu).unwrap();
            let z = Tensor::randn(0f32, 1.0, (3, Z_DIM), &Device::Cpu)?;
            let img = gan.g.forward_t(&z, true)?;
            assert_eq!(img.dims(), [3, 3, size, size]);
            let lo = img.min_all()?.to_scalar::<f32>()?;
            let hi = img.max_all()?.to_scalar::<f32>()?;
            assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi));
            assert_eq!(gan.d.forward_t(&img, true)?.dims(), [3]);
            assert_eq!(
                gan.sampler().forward_t(&z, false)?.dims(),
                [3, 3, size, size]
            );
        }
        assert_eq!(widths(64, 64), [512, 256, 128, 64]);
        assert_eq!(widths(128, 64), [512, 512, 256, 128, 64]);
        assert!(check_size(96).is_err());
        Ok(())
    }

    #[test]
    fn torch_dcgan_parameter_names() -> Result<()> {
        let gan = Gan::new(GanArch::Dcgan, 64, false, 1, None, &Device::Cpu).unwrap();
        let g = gan.g_vars.data().lock().unwrap();
        let d = gan.d_vars.data().lock().unwrap();
        for name in ["main.0.weight", "main.1.running_var", "main.12.weight"] {
            assert!(g.contains_key(name), "generator lacks {name}");
        }
        for name in [
            "main.0.weight",
            "main.2.weight",
            "main.3.weight",
            "main.11.weight",
        ] {
            assert!(d.contains_key(name), "discriminator lacks {name}");
        }
        assert_eq!(d["main.11.weight"].dims(), [1, 512, 4, 4]);
        Ok(())
    }
}
