//! Preprocessing shared by training and inference: the trainer calls these same functions, so the
//! pixels a model was trained on and the pixels it sees on a phone can never drift apart.
//!
//! # Test-time views
//!
//! [`Preprocessing::views`] makes the fixed views that test-time augmentation averages the logits
//! over. `views(img, n)` is always the first `n` rows of this table, for `n` in [`VIEW_COUNTS`]:
//!
//! | view | window | flip |
//! |---|---|---|
//! | 0 | the centre crop (exactly [`Preprocessing::center_crop`]) | none |
//! | 1 | the centre crop | left-right |
//! | 2 | the tight crop: the centred [`TIGHT_CROP`] (7/8) of the centre crop's side | none |
//! | 3 | the tight crop | left-right |
//! | 4 | the centre crop | top-bottom |
//! | 5 | the centre crop | both (a half turn) |
//! | 6 | the tight crop | top-bottom |
//! | 7 | the tight crop | both |
//!
//! The trainer's augmentation flips both ways (skin has no "up") and crops 50–100 % of a photo's
//! area, so every view is one the network met in training; flips are lossless, so eight views
//! cost two resamplings. Corner crops were left out: on a close-up of one lesion they would cut
//! into the lesion rather than show it differently.

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::error::{Error, Result};

/// ImageNet channel means (RGB, 0..1 scale), as torchvision uses them.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The numbers of test-time views [`Preprocessing::views`] makes (and a model file may recommend).
pub const VIEW_COUNTS: [u32; 4] = [1, 2, 4, 8];

/// Side of the tight crop (views 2, 3, 6, 7) as a fraction of the centre crop's side: 87.5 %,
/// i.e. 77 % of its area, inside the trainer's random-resized-crop range.
pub const TIGHT_CROP: f64 = 0.875;

/// Whether `n` is one of [`VIEW_COUNTS`].
pub fn is_view_count(n: u32) -> bool {
    VIEW_COUNTS.contains(&n)
}

/// Resize, centre crop and normalisation, as recorded in the model file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocessing {
    /// Side of the square network input.
    pub input_size: u32,
    /// The shorter side is scaled to this before the centre crop of `input_size`.
    pub resize: u32,
    /// Per-channel mean subtracted after scaling pixels to 0..1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl Preprocessing {
    /// torchvision's evaluation transform for `input_size`: resize to `input_size·256/224`, crop, ImageNet statistics.
    pub fn imagenet(input_size: u32) -> Self {
        Self {
            input_size,
            resize: (input_size * 256).div_ceil(224),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Number of `f32` values in one preprocessed image (`3·S·S`).
    pub fn tensor_len(&self) -> usize {
        3 * (self.input_size as usize).pow(2)
    }

    /// Scales the shorter side to `resize` and cuts the centred `input_size` square.
    ///
    /// Only the window that survives the crop is resampled (bilinear with antialiasing), which is
    /// the same as resizing the whole photo first but much cheaper for camera-sized images.
    pub fn center_crop(&self, img: &RgbImage) -> RgbImage {
        let (x0, y0, side) = self.centre_window(img);
        self.resample(img, x0, y0, side)
    }

    /// `(x0, y0, side)` of the square of `img` that [`Self::center_crop`] resamples.
    fn centre_window(&self, img: &RgbImage) -> (u32, u32, u32) {
        let (w, h) = img.dimensions();
        let short = w.min(h).max(1);
        let side = (f64::from(self.input_size) * f64::from(short) / f64::from(self.resize))
            .round()
            .clamp(1.0, f64::from(short)) as u32;
        ((w - side) / 2, (h - side) / 2, side)
    }

    /// The centred [`TIGHT_CROP`] of the centre crop's window, resampled to `input_size`.
    fn tight_crop(&self, img: &RgbImage) -> RgbImage {
        let (x0, y0, side) = self.centre_window(img);
        let tight = (f64::from(side) * TIGHT_CROP)
            .round()
            .clamp(1.0, f64::from(side)) as u32;
        let inset = (side - tight) / 2;
        self.resample(img, x0 + inset, y0 + inset, tight)
    }

    fn resample(&self, img: &RgbImage, x0: u32, y0: u32, side: u32) -> RgbImage {
        let window = imageops::crop_imm(img, x0, y0, side, side).to_image();
        if side == self.input_size {
            return window;
        }
        imageops::resize(
            &window,
            self.input_size,
            self.input_size,
            FilterType::Triangle,
        )
    }

    /// The first `n` test-time views of `img`, each `input_size` square (the module docs list
    /// them); `n` must be one of [`VIEW_COUNTS`], else [`Error::InvalidOption`] naming `views`.
    ///
    /// View 0 is always [`Self::center_crop`], so one view is the plain evaluation transform.
    pub fn views(&self, img: &RgbImage, n: u32) -> Result<Vec<RgbImage>> {
        if !is_view_count(n) {
            return Err(Error::InvalidOption {
                option: "views".into(),
                reason: format!("{n} is not one of {VIEW_COUNTS:?}"),
            });
        }
        let n = n as usize;
        let mut views = Vec::with_capacity(n);
        views.push(self.center_crop(img));
        if n >= 2 {
            views.push(imageops::flip_horizontal(&views[0]));
        }
        if n >= 4 {
            views.push(self.tight_crop(img));
            views.push(imageops::flip_horizontal(&views[2]));
        }
        if n >= 8 {
            for i in 0..4 {
                views.push(imageops::flip_vertical(&views[i]));
            }
        }
        Ok(views)
    }

    /// The images (each `input_size` square) as one normalised NCHW batch `[N, 3, S, S]`.
    pub fn normalize_batch(&self, imgs: &[RgbImage]) -> Vec<f32> {
        let len = self.tensor_len();
        let mut out = vec![0.0; imgs.len() * len];
        for (img, chunk) in imgs.iter().zip(out.chunks_exact_mut(len)) {
            self.normalize_into(img, chunk);
        }
        out
    }

    /// [`Self::views`] as one normalised NCHW batch `[n, 3, S, S]`: what a screener with `n`
    /// views feeds the network.
    pub fn views_tensor(&self, img: &RgbImage, n: u32) -> Result<Vec<f32>> {
        Ok(self.normalize_batch(&self.views(img, n)?))
    }

    /// Writes `img` (already `input_size` square) into `out` as normalised CHW floats.
    ///
    /// # Panics
    /// Never for images produced by [`Self::center_crop`]; callers with other images must pass a
    /// square image of `input_size` and a buffer of [`Self::tensor_len`] (checked by a debug assertion).
    pub fn normalize_into(&self, img: &RgbImage, out: &mut [f32]) {
        let plane = (img.width() * img.height()) as usize;
        debug_assert_eq!(out.len(), 3 * plane);
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| self.mean[c] / self.std[c]);
        for (i, px) in img.pixels().enumerate().take(plane) {
            for c in 0..3 {
                out[c * plane + i] = f32::from(px.0[c]) * scale[c] - shift[c];
            }
        }
    }

    /// Normalised CHW tensor of an `input_size` square image.
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let mut out = vec![0.0; 3 * (img.width() * img.height()) as usize];
        self.normalize_into(img, &mut out);
        out
    }

    /// The full evaluation transform: centre crop, then normalise.
    pub fn tensor(&self, img: &RgbImage) -> Vec<f32> {
        self.normalize(&self.center_crop(img))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_resize_matches_torchvision() {
        assert_eq!(Preprocessing::imagenet(224).resize, 256);
        assert_eq!(Preprocessing::imagenet(128).resize, 147);
    }

    #[test]
    fn crop_is_centred_and_sized() {
        // Left half black, right half white, 400x200: the centre crop straddles the edge evenly.
        let img = RgbImage::from_fn(400, 200, |x, _| {
            if x < 200 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let p = Preprocessing {
            input_size: 64,
            resize: 64,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let c = p.center_crop(&img);
        assert_eq!(c.dimensions(), (64, 64));
        assert!(c.get_pixel(2, 32).0[0] < 10);
        assert!(c.get_pixel(61, 32).0[0] > 245);
    }

    fn asymmetric(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 3 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x * y) % 251) as u8,
            ])
        })
    }

    #[test]
    fn views_are_a_fixed_prefix_of_eight() {
        let p = Preprocessing::imagenet(32);
        let img = asymmetric(70, 50);
        let eight = p.views(&img, 8).unwrap();
        assert_eq!(eight.len(), 8);
        for n in [1, 2, 4] {
            assert_eq!(p.views(&img, n).unwrap(), eight[..n as usize]);
        }
        assert_eq!(eight[0], p.center_crop(&img));
        assert_eq!(eight[1], imageops::flip_horizontal(&eight[0]));
        assert_eq!(eight[3], imageops::flip_horizontal(&eight[2]));
        for i in 0..4 {
            assert_eq!(eight[4 + i], imageops::flip_vertical(&eight[i]));
        }
        assert!(eight.iter().all(|v| v.dimensions() == (32, 32)));
        for (i, a) in eight.iter().enumerate() {
            for b in &eight[i + 1..] {
                assert_ne!(a, b, "an asymmetric photo gives distinct views");
            }
        }
        let batch = p.views_tensor(&img, 4).unwrap();
        assert_eq!(batch.len(), 4 * p.tensor_len());
        assert_eq!(
            batch[2 * p.tensor_len()..3 * p.tensor_len()],
            p.normalize(&eight[2])
        );
    }

    #[test]
    fn tight_view_is_the_centred_seven_eighths_of_the_centre_window() {
        // resize == input_size: the centre window is the whole 64x64 image, the tight one 56x56
        // from (4, 4), upsampled; an 8-pixel frame of black around grey must vanish from it.
        let img = RgbImage::from_fn(64, 64, |x, y| {
            let inside = (4..60).contains(&x) && (4..60).contains(&y);
            image::Rgb(if inside { [128; 3] } else { [0; 3] })
        });
        let p = Preprocessing {
            input_size: 64,
            resize: 64,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let views = p.views(&img, 4).unwrap();
        assert_eq!(views[0], img);
        assert!(views[2].pixels().all(|px| px.0 == [128; 3]));
    }

    #[test]
    fn other_view_counts_are_refused() {
        let p = Preprocessing::imagenet(32);
        for n in [0, 3, 5, 16] {
            match p.views(&asymmetric(40, 40), n) {
                Err(Error::InvalidOption { option, .. }) => assert_eq!(option, "views"),
                other => panic!("{n} views: {other:?}"),
            }
        }
    }

    #[test]
    fn normalisation_values() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 128]));
        let p = Preprocessing {
            input_size: 2,
            resize: 2,
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.25, 0.5],
        };
        let t = p.tensor(&img);
        assert_eq!(t.len(), 12);
        assert!((t[0] - 1.0).abs() < 1e-6);
        assert!((t[4] + 2.0).abs() < 1e-6);
        assert!((t[8] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    }
}
