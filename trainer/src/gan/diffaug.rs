//! Differentiable augmentation (DiffAugment, Zhao et al. 2020): the same random colour,
//! translation and cutout transforms applied to real and generated images before the
//! discriminator, so it cannot memorise a few hundred photos, while gradients still reach the
//! generator through the transforms.

use candle_core::{Result, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// Which transforms to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Brightness, saturation and contrast.
    pub colour: bool,
    /// Shift by up to 1/8 of the side, filling with zeros.
    pub translation: bool,
    /// Zero a random square of half the side.
    pub cutout: bool,
}

impl Policy {
    /// `colour,translation,cutout`, the paper's recommendation for small datasets.
    pub fn all() -> Self {
        Self {
            colour: true,
            translation: true,
            cutout: true,
        }
    }

    /// Nothing applied.
    pub fn none() -> Self {
        Self {
            colour: false,
            translation: false,
            cutout: false,
        }
    }

    /// Whether anything is applied.
    pub fn any(&self) -> bool {
        self.colour || self.translation || self.cutout
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    /// `none`, `all`, or a comma list of `colour`, `translation`, `cutout`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "none" {
            return Ok(Self::none());
        }
        let mut p = Self::none();
        for part in s.split(',') {
            match part.trim() {
                "colour" | "color" => p.colour = true,
                "translation" => p.translation = true,
                "cutout" => p.cutout = true,
                "all" => p = Self::all(),
                other => {
                    return Err(format!(
                        "unknown transform {other:?} (colour, translation, cutout, all, none)"
                    ))
                }
            }
        }
        Ok(p)
    }
}

fn per_sample(rng: &mut StdRng, n: usize, f: impl Fn(&mut StdRng) -> f32) -> Vec<f32> {
    (0..n).map(|_| f(rng)).collect()
}

/// Applies `policy` to a batch of images in [−1, 1] (`[N, 3, S, S]`), drawing from `rng`.
pub fn augment(x: &Tensor, policy: Policy, rng: &mut StdRng) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let dev = x.device();
    let mut x = x.clone();
    if policy.colour {
        let b = Tensor::from_vec(
            per_sample(rng, n, |r| r.random::<f32>() - 0.5),
            (n, 1, 1, 1),
            dev,
        )?;
        x = x.broadcast_add(&b)?;
        let s = Tensor::from_vec(
            per_sample(rng, n, |r| r.random::<f32>() * 2.0),
            (n, 1, 1, 1),
            dev,
        )?;
        let mean = x.mean_keepdim(1)?;
        x = x
            .broadcast_sub(&mean)?
            .broadcast_mul(&s)?
            .broadcast_add(&mean)?;
        let k = Tensor::from_vec(
            per_sample(rng, n, |r| r.random::<f32>() + 0.5),
            (n, 1, 1, 1),
            dev,
        )?;
        let mean = x.mean_keepdim((1, 2, 3))?;
        x = x
            .broadcast_sub(&mean)?
            .broadcast_mul(&k)?
            .broadcast_add(&mean)?;
    }
    if policy.translation {
        let (sy, sx) = (h / 8, w / 8);
        let padded = x.pad_with_zeros(2, sy, sy)?.pad_with_zeros(3, sx, sx)?;
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let ty = rng.random_range(0..=2 * sy);
            let tx = rng.random_range(0..=2 * sx);
            rows.push(padded.narrow(0, i, 1)?.narrow(2, ty, h)?.narrow(3, tx, w)?);
        }
        x = Tensor::cat(&rows, 0)?;
    }
    if policy.cutout {
        let (ch, cw) = (h / 2, w / 2);
        let mut mask = vec![1f32; n * h * w];
        for i in 0..n {
            // The square's centre may sit anywhere, so it can hang over the border.
            let cy = rng.random_range(0..h + (1 - ch % 2));
            let cx = rng.random_range(0..w + (1 - cw % 2));
            let (y0, y1) = (cy.saturating_sub(ch / 2), (cy + ch - ch / 2).min(h));
            let (x0, x1) = (cx.saturating_sub(cw / 2), (cx + cw - cw / 2).min(w));
            for y in y0..y1 {
                mask[i * h * w + y * w + x0..i * h * w + y * w + x1].fill(0.0);
            }
        }
        let mask = Tensor::from_vec(mask, (n, 1, h, w), dev)?;
        x = x.broadcast_mul(&mask)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    #[test]
    fn shapes_determinism_and_gradients() -> Result<()> {
        let x = Var::randn(0f32, 0.5, (4, 3, 16, 16), &Device::Cpu)?;
        let a = augment(x.as_tensor(), Policy::all(), &mut StdRng::seed_from_u64(1))?;
        let b = augment(x.as_tensor(), Policy::all(), &mut StdRng::seed_from_u64(1))?;
        assert_eq!(a.dims(), [4, 3, 16, 16]);
        assert_eq!((&a - &b)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        // Gradients reach the input (what lets the generator learn through the augmentation).
        let g = a.sqr()?.sum_all()?.backward()?;
        assert!(g.get(&x).unwrap().abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        // Cutout alone zeroes at most a quarter of each image (less when the square overhangs).
        let ones = Tensor::ones((8, 3, 16, 16), candle_core::DType::F32, &Device::Cpu)?;
        let cut = Policy {
            colour: false,
            translation: false,
            cutout: true,
        };
        let y = augment(&ones, cut, &mut StdRng::seed_from_u64(2))?;
        let zeros = 1.0 - y.mean_all()?.to_scalar::<f32>()?;
        assert!(zeros > 0.05 && zeros <= 0.25, "{zeros}");
        Ok(())
    }
}
