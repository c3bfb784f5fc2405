//! A projected discriminator (Sauer et al. 2021, "Projected GANs converge faster"): the photo
//! goes through the frozen ImageNet MobileNetV2, four of its feature maps (strides 4, 8, 16 and
//! 32) through fixed random projections that mix channels (1×1 convolutions) and scales (each
//! coarser map, projected and upsampled, added to the finer one), and a small trained
//! discriminator per scale turns each into a map of logits.
//!
//! The pretrained features are what make few photos enough: the discriminator does not have to
//! learn what skin, lesions and lighting look like from ~170 photos, only to tell real from
//! generated in a space where that difference is already visible. The random projections keep
//! the discriminator from latching on to a few dominant pretrained features.
//!
//! Differences from the paper, for a CPU: the feature network is MobileNetV2 (the paper's is
//! EfficientNet-lite), photos are only upsampled to twice their side, the channel projections
//! are half the paper's widths, and the per-scale discriminators use BatchNorm without spectral
//! normalisation. One addition, for variety: each per-scale discriminator sees the minibatch
//! standard deviation of its input (StyleGAN's), see [`minibatch_std`].

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::models::{BatchNorm, MobileNetV2};
use crate::ops;

/// MobileNetV2 stages ending each scale (exclusive), and the channels they give.
const SCALES: [(usize, usize); 4] = [(4, 24), (7, 32), (14, 96), (18, 320)];

/// Channels after the channel-mixing projection, per scale.
const PROJECTED: [usize; 4] = [32, 64, 128, 256];

/// Side the per-scale discriminators reduce a map to before their 4×4 logit convolution.
const END_SIDE: usize = 8;

/// Photos per group of the minibatch standard deviation (StyleGAN's 4).
const STD_GROUP: usize = 4;

/// ImageNet normalisation of the feature network (torchvision's).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The frozen part: MobileNetV2 features and the random projections. No variables, so no
/// gradients for its weights, while gradients still flow through it to the generator.
struct Projector {
    features: MobileNetV2,
    /// 1×1 channel mixing per scale, `[PROJECTED[i], SCALES[i].1, 1, 1]`.
    mix: Vec<Tensor>,
    /// 1×1 projection of scale `i + 1`'s mixed map to scale `i`'s channels, before upsampling.
    fuse: Vec<Tensor>,
    /// Per-channel affine `(a, b)` taking [−1, 1] images to ImageNet-normalised ones.
    normalise: (Tensor, Tensor),
}

/// PyTorch's default convolution initialisation, U(−1/√fan_in, 1/√fan_in), seeded.
fn random_conv(rng: &mut StdRng, cout: usize, cin: usize, device: &Device) -> Result<Tensor> {
    let bound = 1.0 / (cin as f32).sqrt();
    let values: Vec<f32> = (0..cout * cin)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    Tensor::from_vec(values, (cout, cin, 1, 1), device)
}

impl Projector {
    fn new(weights: &Path, seed: u64, device: &Device) -> crate::Result<Self> {
        let tensors = crate::weights::read(weights, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let features = MobileNetV2::new(1.0, vb)?;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9_0A7E);
        let mix = SCALES
            .iter()
            .zip(PROJECTED)
            .map(|(&(_, cin), cout)| random_conv(&mut rng, cout, cin, device))
            .collect::<Result<Vec<_>>>()?;
        let fuse = PROJECTED
            .windows(2)
            .map(|w| random_conv(&mut rng, w[0], w[1], device))
            .collect::<Result<Vec<_>>>()?;
        let a: Vec<f32> = STD.iter().map(|s| 0.5 / s).collect();
        let b: Vec<f32> = MEAN.iter().zip(STD).map(|(m, s)| (0.5 - m) / s).collect();
        let normalise = (
            Tensor::from_vec(a, (1, 3, 1, 1), device)?,
            Tensor::from_vec(b, (1, 3, 1, 1), device)?,
        );
        Ok(Self {
            features,
            mix,
            fuse,
            normalise,
        })
    }

    /// The four projected maps, finest first.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let x = ops::upsample_nearest2x(
            &x.broadcast_mul(&self.normalise.0)?
                .broadcast_add(&self.normalise.1)?,
        )?;
        let mut start = 0;
        let mut y = x;
        let mut mixed = Vec::with_capacity(SCALES.len());
        for (&(end, _), mix) in SCALES.iter().zip(&self.mix) {
            // The frozen network in evaluation mode: its running statistics, no updates.
            y = self.features.forward_range(&y, start..end, false)?;
            mixed.push(ops::conv2d(&y, mix, 1, 0)?);
            start = end;
        }
        // Scale mixing, coarsest to finest.
        for i in (0..mixed.len() - 1).rev() {
            let coarse =
                ops::upsample_nearest2x(&ops::conv2d(&mixed[i + 1], &self.fuse[i], 1, 0)?)?;
            mixed[i] = (&mixed[i] + coarse)?;
        }
        Ok(mixed)
    }
}

/// 4×4 stride-2 convolution, BatchNorm, LeakyReLU(0.2).
struct DownBlock {
    weight: Tensor,
    bn: BatchNorm,
}

/// The minibatch standard deviation (Karras et al. 2018) as one more channel: within groups of
/// up to [`STD_GROUP`] photos, each feature's standard deviation across the group, averaged over
/// features and positions, broadcast to every photo of the group.
///
/// Why: a discriminator that judges one photo at a time cannot see that a batch lacks variety.
/// On fold 0 at step 4000 (docs/results.md, "Variety: four attempts at recall") the projected
/// GAN without it had a Fréchet distance of 1.31× the real floor and recall 0.05-0.10 (its
/// photos in few clusters of MobileNetV2 features); with it, 1.17× and 0.18-0.23.
fn minibatch_std(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    // The largest group size up to STD_GROUP dividing the batch; 1 gives a channel of √ε.
    let g = (1..=STD_GROUP.min(n))
        .rev()
        .find(|g| n % g == 0)
        .unwrap_or(1);
    let grouped = x.reshape((g, n / g, c, h, w))?;
    let centred = grouped.broadcast_sub(&grouped.mean_keepdim(0)?)?;
    // Population variance, and an epsilon under the root so its gradient stays finite at 0.
    let std = (centred.sqr()?.mean(0)? + 1e-8)?.sqrt()?;
    let per_group = std.flatten_from(1)?.mean_keepdim(1)?; // [n / g, 1]
    per_group
        .reshape((1, n / g, 1, 1, 1))?
        .broadcast_as((g, n / g, 1, h, w))?
        .reshape((n, 1, h, w))
}

/// One scale's discriminator: down-sampling blocks to [`END_SIDE`], the minibatch standard
/// deviation channel, then a 4×4 logit convolution.
struct ScaleDiscriminator {
    blocks: Vec<DownBlock>,
    logit: Tensor,
}

impl ScaleDiscriminator {
    fn new(channels: usize, side: usize, vb: VarBuilder) -> Result<Self> {
        let mut blocks = Vec::new();
        let (mut c, mut s) = (channels, side);
        while s > END_SIDE {
            let vb = vb.pp(format!("down{}", blocks.len()));
            let cout = (2 * c).min(256);
            blocks.push(DownBlock {
                weight: vb.get_with_hints((cout, c, 4, 4), "weight", Init::Const(0.0))?,
                bn: BatchNorm::new(cout, vb.pp("bn"))?,
            });
            (c, s) = (cout, s / 2);
        }
        let logit = vb
            .pp("logit")
            .get_with_hints((1, c + 1, 4, 4), "weight", Init::Const(0.0))?;
        Ok(Self { blocks, logit })
    }

    /// Logits; `fixed`: the convolutions' weights held fixed (see [`Discriminator::forward_fixed`]).
    fn forward_t(&self, x: &Tensor, train: bool, fixed: bool) -> Result<Tensor> {
        let held = |w: &Tensor| if fixed { w.detach() } else { w.clone() };
        let mut x = x.clone();
        for b in &self.blocks {
            x = ops::conv2d(&x, &held(&b.weight), 2, 1)?;
            x =
                b.bn.forward_activated(&x, train, Some(ops::Activation::Leaky(0.2)))?;
        }
        let x = Tensor::cat(&[&x, &minibatch_std(&x)?], 1)?;
        // Maps smaller than the logit window (the stride-32 one at 64 px: 4×4) give one logit.
        ops::conv2d(&x, &held(&self.logit), 1, 0)
    }
}

/// The discriminator: image `[N, 3, S, S]` in [−1, 1] → logits `[N·L]` (every scale's map of
/// logits, flattened; real is positive). Its variables are the per-scale discriminators only.
pub struct Discriminator {
    projector: Projector,
    heads: Vec<ScaleDiscriminator>,
}

impl Discriminator {
    /// Builds the discriminator for `size`-px photos under `vb`, with the feature network's
    /// weights from `weights` (torchvision's MobileNetV2 names) and projections from `seed`.
    pub fn new(
        size: usize,
        weights: &Path,
        seed: u64,
        vb: VarBuilder,
        device: &Device,
    ) -> crate::Result<Self> {
        super::model::check_size(size)?;
        let projector = Projector::new(weights, seed, device)?;
        // Map sides at twice the photo's side: strides 4, 8, 16, 32.
        let heads = PROJECTED
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                ScaleDiscriminator::new(c, (2 * size) >> (i + 2), vb.pp(format!("scale{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { projector, heads })
    }

    /// Logits of real vs generated.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.logits(x, train, false)
    }

    /// Logits with the convolutions' weights held fixed: the backward pass then skips their
    /// gradients, which the generator's update does not use.
    pub fn forward_fixed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.logits(x, train, true)
    }

    fn logits(&self, x: &Tensor, train: bool, fixed: bool) -> Result<Tensor> {
        let maps = self.projector.forward(x)?;
        let n = x.dim(0)?;
        let logits = maps
            .iter()
            .zip(&self.heads)
            .map(|(m, h)| h.forward_t(m, train, fixed)?.reshape((n, ())))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&logits, 1)?.flatten_all()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::minibatch_std;

    #[test]
    fn minibatch_std_of_constructed_groups() {
        let dev = Device::Cpu;
        // Eight photos, 2 channels, 1×2 positions: groups of four interleave (photo i is in group
        // i mod 2, as in StyleGAN's reshape). Group 0 (photos 0, 2, 4, 6) holds values a·k;
        // group 1 (photos 1, 3, 5, 7) is constant.
        let mut v = Vec::new();
        for i in 0..8 {
            let value = if i % 2 == 0 { (i / 2) as f32 } else { 5.0 };
            v.extend([value, 2.0 * value, value, 2.0 * value]);
        }
        let x = Tensor::from_vec(v, (8, 2, 1, 2), &dev).unwrap();
        let s = minibatch_std(&x).unwrap();
        assert_eq!(s.dims(), &[8, 1, 1, 2]);
        let s: Vec<f32> = s.flatten_all().unwrap().to_vec1().unwrap();
        // Values 0, 1, 2, 3: population std √1.25; channel 2 doubles it; mean of the two 1.5·√1.25.
        let spread = 1.5 * 1.25f32.sqrt();
        for (i, got) in s.chunks(2).enumerate() {
            let want = if i % 2 == 0 { spread } else { 1e-4 };
            assert!(
                (got[0] - want).abs() < 1e-4 && got[0] == got[1],
                "photo {i}: {got:?}"
            );
        }
        // A batch of 3 (no group of 2 or 4 divides it) gives groups of 3; of 1, a channel of √ε.
        let three = Tensor::from_vec(vec![0f32, 3.0, 6.0], (3, 1, 1, 1), &dev).unwrap();
        let got: Vec<f32> = minibatch_std(&three)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            got.iter().all(|g| (g - 6f32.sqrt()).abs() < 1e-4),
            "{got:?}"
        );
        let one = Tensor::from_vec(vec![7f32], (1, 1, 1, 1), &dev).unwrap();
        let got: Vec<f32> = minibatch_std(&one)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(got[0] < 1e-3, "{got:?}");
    }
}
