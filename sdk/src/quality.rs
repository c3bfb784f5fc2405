//! Photo quality checks: warnings an app turns into "please retake", never errors.

use image::RgbImage;

/// Something about the photo that makes the screening less reliable.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum QualityWarning {
    /// The shorter side is below the network input: the photo was upscaled.
    LowResolution {
        /// Width of the decoded photo.
        width: u32,
        /// Height of the decoded photo.
        height: u32,
        /// Shorter side the model would like at least.
        recommended: u32,
    },
    /// The photo is too dark (mean luminance on a 0..255 scale).
    TooDark {
        /// Mean luminance of the screened crop.
        mean_luminance: f32,
    },
    /// Too many pixels are clipped white.
    Overexposed {
        /// Fraction of pixels with luminance ≥ 250.
        clipped_fraction: f32,
    },
    /// The photo looks out of focus (low variance of the Laplacian).
    Blurry {
        /// Variance of the 4-neighbour Laplacian of the luminance.
        laplacian_variance: f32,
    },
}

impl QualityWarning {
    /// Stable snake_case code for JSON and UIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::LowResolution { .. } => "low_resolution",
            Self::TooDark { .. } => "too_dark",
            Self::Overexposed { .. } => "overexposed",
            Self::Blurry { .. } => "blurry",
        }
    }
}

/// Thresholds of the quality checks.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityThresholds {
    /// `TooDark` below this mean luminance (0..255).
    pub min_mean_luminance: f32,
    /// `Overexposed` above this fraction of clipped pixels.
    pub max_clipped_fraction: f32,
    /// `Blurry` below this Laplacian variance, measured on the network-sized crop.
    pub min_laplacian_variance: f32,
}

impl Default for QualityThresholds {
    /// Defaults chosen on phone photos of skin: a dim indoor photo has mean luminance around 60,
    /// a sharp 224 px crop of skin texture a Laplacian variance well above 100.
    fn default() -> Self {
        Self {
            min_mean_luminance: 40.0,
            max_clipped_fraction: 0.25,
            min_laplacian_variance: 25.0,
        }
    }
}

/// Runs every check: `original` is the photo's size, `crop` the network-sized crop the model sees.
pub fn assess(
    original: (u32, u32),
    crop: &RgbImage,
    input_size: u32,
    t: &QualityThresholds,
) -> Vec<QualityWarning> {
    let mut warnings = Vec::new();
    if original.0.min(original.1) < input_size {
        warnings.push(QualityWarning::LowResolution {
            width: original.0,
            height: original.1,
            recommended: input_size,
        });
    }
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    let luma: Vec<f32> = crop
        .pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let n = luma.len().max(1) as f32;
    let mean = luma.iter().sum::<f32>() / n;
    if mean < t.min_mean_luminance {
        warnings.push(QualityWarning::TooDark {
            mean_luminance: mean,
        });
    }
    let clipped = luma.iter().filter(|&&l| l >= 250.0).count() as f32 / n;
    if clipped > t.max_clipped_fraction {
        warnings.push(QualityWarning::Overexposed {
            clipped_fraction: clipped,
        });
    }
    let variance = laplacian_variance(&luma, w, h);
    // A uniformly dark or white crop has no texture either; reporting it twice would only confuse.
    if variance < t.min_laplacian_variance && warnings.iter().all(|w| w.code() == "low_resolution")
    {
        warnings.push(QualityWarning::Blurry {
            laplacian_variance: variance,
        });
    }
    warnings
}

/// Variance of the 4-neighbour Laplacian over the interior of a `w`×`h` luminance plane.
pub fn laplacian_variance(luma: &[f32], w: usize, h: usize) -> f32 {
    if w < 3 || h < 3 {
        return 0.0;
    }
    let mut sum = 0.0f64;
    let mut sum_sq = 0.0f64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let l =
                f64::from(luma[i - 1] + luma[i + 1] + luma[i - w] + luma[i + w] - 4.0 * luma[i]);
            sum += l;
            sum_sq += l * l;
        }
    }
    let n = ((w - 2) * (h - 2)) as f64;
    let m = sum / n;
    (sum_sq / n - m * m).max(0.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(size: u32, cell: u32, lo: u8, hi: u8) -> RgbImage {
        RgbImage::from_fn(size, size, |x, y| {
            let v = if (x / cell + y / cell).is_multiple_of(2) {
                lo
            } else {
                hi
            };
            image::Rgb([v, v, v])
        })
    }

    fn codes(w: &[QualityWarning]) -> Vec<&'static str> {
        w.iter().map(QualityWarning::code).collect()
    }

    #[test]
    fn sharp_mid_grey_texture_passes() {
        let img = checker(64, 2, 60, 200);
        assert!(assess((300, 300), &img, 64, &QualityThresholds::default()).is_empty());
    }

    #[test]
    fn dark_bright_flat_and_small_are_flagged() {
        let t = QualityThresholds::default();
        assert_eq!(
            codes(&assess((300, 300), &checker(64, 2, 0, 30), 64, &t)),
            ["too_dark"]
        );
        assert_eq!(
            codes(&assess((300, 300), &checker(64, 2, 252, 255), 64, &t)),
            ["overexposed"]
        );
        assert_eq!(
            codes(&assess((300, 300), &checker(64, 64, 120, 120), 64, &t)),
            ["blurry"]
        );
        assert_eq!(
            codes(&assess((40, 300), &checker(64, 2, 60, 200), 64, &t)),
            ["low_resolution"]
        );
    }

    #[test]
    fn laplacian_of_checkerboard() {
        // Cell size 1: every interior Laplacian is ±4·(hi−lo), so the variance is 16·(hi−lo)².
        let img = checker(8, 1, 0, 10);
        let luma: Vec<f32> = img.pixels().map(|p| f32::from(p[0])).collect();
        assert!((laplacian_variance(&luma, 8, 8) - 1600.0).abs() < 1e-3);
    }
}
