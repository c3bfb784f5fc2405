//! Preprocessing shared by training and inference: the trainer calls these same functions, so the
//! pixels a model was trained on and the pixels it sees on a phone can never drift apart.

use image::imageops::{self, FilterType};
use image::RgbImage;

/// ImageNet channel means (RGB, 0..1 scale), as torchvision uses them.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

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
        let (w, h) = img.dimensions();
        let short = w.min(h).max(1);
        let side = (f64::from(self.input_size) * f64::from(short) / f64::from(self.resize))
            .round()
            .clamp(1.0, f64::from(short)) as u32;
        let x0 = (w - side) / 2;
        let y0 = (h - side) / 2;
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
