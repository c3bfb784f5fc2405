//! Training-time augmentation: random resized crop, flips, rotation and colour jitter, applied on
//! the fly with a seeded generator, in a single resampling pass; then what differs between
//! sources of photos (camera white balance, focus, JPEG compression).
//!
//! Crop, flips and rotation compose into one affine map from output to source pixels, so each
//! training image is resampled once (bilinear) rather than four times.

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Augmentation settings (defaults suit skin photos: lesions may appear at any angle and position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio.
    pub ratio: (f64, f64),
    /// Largest rotation in degrees (uniform in ±).
    pub rotation_degrees: f64,
    /// Flip left-right with probability ½.
    pub hflip: bool,
    /// Flip top-bottom with probability ½ (skin has no "up").
    pub vflip: bool,
    /// Brightness factor range 1 ± this.
    pub brightness: f64,
    /// Contrast factor range 1 ± this.
    pub contrast: f64,
    /// Saturation factor range 1 ± this.
    pub saturation: f64,
    /// Hue rotation range ± this fraction of a turn.
    pub hue: f64,
    /// Per-channel gain range 1 ± this (another camera's or light's white balance).
    pub white_balance: f64,
    /// Probability of a Gaussian blur (focus, motion, a phone's small lens).
    pub blur_probability: f64,
    /// Largest blur sigma in pixels of the output view.
    pub blur_sigma: f64,
    /// Probability of a JPEG round trip (photos forwarded through messengers and web pages).
    pub jpeg_probability: f64,
    /// Range of the JPEG quality.
    pub jpeg_quality: (u8, u8),
}

impl Augment {
    /// No augmentation at all: a plain resize (the base the tests vary one setting of).
    pub fn identity() -> Self {
        Self {
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
            rotation_degrees: 0.0,
            hflip: false,
            vflip: false,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            white_balance: 0.0,
            blur_probability: 0.0,
            blur_sigma: 0.0,
            jpeg_probability: 0.0,
            jpeg_quality: (95, 95),
        }
    }
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            // Down to 30 % of the area: a close-up of one lesion, as health workers take them.
            scale: (0.3, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            rotation_degrees: 20.0,
            hflip: true,
            vflip: true,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            hue: 0.02,
            white_balance: 0.1,
            blur_probability: 0.2,
            blur_sigma: 1.5,
            jpeg_probability: 0.3,
            jpeg_quality: (30, 90),
        }
    }
}

/// A deterministic generator for image `index` of `epoch` under `seed`: the same augmentation
/// whichever thread draws it, and on resume.
pub fn rng_for(seed: u64, epoch: u64, index: u64) -> StdRng {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

impl Augment {
    /// One augmented `size`×`size` view of `img`.
    pub fn apply(&self, img: &RgbImage, size: u32, rng: &mut StdRng) -> RgbImage {
        let (w, h) = (f64::from(img.width()), f64::from(img.height()));
        // Random resized crop (torchvision's rule, with a centred fallback).
        let area = w * h;
        let mut crop = None;
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale.0..=self.scale.1);
            let log_ratio = rng.random_range(self.ratio.0.ln()..=self.ratio.1.ln());
            let ar = log_ratio.exp();
            let cw = (target * ar).sqrt();
            let ch = (target / ar).sqrt();
            if cw <= w && ch <= h {
                let x0 = rng.random_range(0.0..=(w - cw));
                let y0 = rng.random_range(0.0..=(h - ch));
                crop = Some((x0, y0, cw, ch));
                break;
            }
        }
        let (x0, y0, cw, ch) = crop.unwrap_or_else(|| {
            let s = w.min(h);
            ((w - s) / 2.0, (h - s) / 2.0, s, s)
        });
        let angle = rng
            .random_range(-self.rotation_degrees..=self.rotation_degrees)
            .to_radians();
        let flip_x = self.hflip && rng.random_bool(0.5);
        let flip_y = self.vflip && rng.random_bool(0.5);
        let jitter = |r: &mut StdRng, a: f64| {
            if a > 0.0 {
                r.random_range(1.0 - a..=1.0 + a)
            } else {
                1.0
            }
        };
        let brightness = jitter(rng, self.brightness) as f32;
        let contrast = jitter(rng, self.contrast) as f32;
        let saturation = jitter(rng, self.saturation) as f32;
        let hue = if self.hue > 0.0 {
            rng.random_range(-self.hue..=self.hue) as f32
        } else {
            0.0
        };

        let (cx, cy) = (x0 + cw / 2.0, y0 + ch / 2.0);
        let (sin, cos) = angle.sin_cos();
        let n = f64::from(size);
        let mut out = RgbImage::new(size, size);
        for oy in 0..size {
            for ox in 0..size {
                // Output pixel → unit square centred at 0 → flips → crop scale → rotation.
                let mut u = (f64::from(ox) + 0.5) / n - 0.5;
                let mut v = (f64::from(oy) + 0.5) / n - 0.5;
                if flip_x {
                    u = -u;
                }
                if flip_y {
                    v = -v;
                }
                let (dx, dy) = (u * cw, v * ch);
                let sx = cx + dx * cos - dy * sin;
                let sy = cy + dx * sin + dy * cos;
                out.put_pixel(ox, oy, bilinear(img, sx - 0.5, sy - 0.5));
            }
        }
        colour_jitter(&mut out, brightness, contrast, saturation, hue);
        if self.white_balance > 0.0 {
            let gains: [f32; 3] = std::array::from_fn(|_| {
                rng.random_range(1.0 - self.white_balance..=1.0 + self.white_balance) as f32
            });
            for p in out.pixels_mut() {
                *p = Rgb(std::array::from_fn(|k| {
                    (f32::from(p[k]) * gains[k]).round().clamp(0.0, 255.0) as u8
                }));
            }
        }
        if self.blur_probability > 0.0 && rng.random_bool(self.blur_probability.min(1.0)) {
            let sigma = rng.random_range(0.3..=self.blur_sigma.max(0.3)) as f32;
            out = image::imageops::blur(&out, sigma);
        }
        if self.jpeg_probability > 0.0 && rng.random_bool(self.jpeg_probability.min(1.0)) {
            let (lo, hi) = self.jpeg_quality;
            let quality = rng.random_range(lo.min(hi)..=hi.max(lo)).clamp(1, 100);
            out = jpeg_round_trip(&out, quality).unwrap_or(out);
        }
        out
    }
}

/// Encodes as JPEG at `quality` and decodes again (`None` if the codec fails, which leaves the view
/// as it was rather than stopping training).
fn jpeg_round_trip(img: &RgbImage, quality: u8) -> Option<RgbImage> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(img)
        .ok()?;
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .ok()
        .map(|d| d.to_rgb8())
}

/// Bilinear sample at continuous pixel coordinates, clamping at the border (reflecting would
/// invent structure; clamping only smears the edge pixels for rotated corners).
fn bilinear(img: &RgbImage, x: f64, y: f64) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = ((x - x0) as f32, (y - y0) as f32);
    let px = |xi: i64, yi: i64| img.get_pixel(xi.clamp(0, w - 1) as u32, yi.clamp(0, h - 1) as u32);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let (a, b, c, d) = (
        px(x0, y0),
        px(x0 + 1, y0),
        px(x0, y0 + 1),
        px(x0 + 1, y0 + 1),
    );
    Rgb(std::array::from_fn(|k| {
        let top = f32::from(a[k]) * (1.0 - fx) + f32::from(b[k]) * fx;
        let bottom = f32::from(c[k]) * (1.0 - fx) + f32::from(d[k]) * fx;
        (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8
    }))
}

/// torchvision-style colour jitter: brightness, contrast (around the mean grey), saturation
/// (towards grey) and a hue rotation in YIQ space.
fn colour_jitter(img: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32, hue: f32) {
    let grey =
        |p: &Rgb<u8>| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
    // Contrast pivots on the mean grey of the brightened image, as when the ops run in sequence.
    let mean = brightness * img.pixels().map(grey).sum::<f32>()
        / (img.width() * img.height()).max(1) as f32;
    let (s, c) = (hue * std::f32::consts::TAU).sin_cos();
    for p in img.pixels_mut() {
        let mut rgb = [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])].map(|v| v * brightness);
        rgb = rgb.map(|v| (v - mean) * contrast + mean);
        let g = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
        rgb = rgb.map(|v| (v - g) * saturation + g);
        if hue != 0.0 {
            let y = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
            let i = 0.596 * rgb[0] - 0.274 * rgb[1] - 0.322 * rgb[2];
            let q = 0.211 * rgb[0] - 0.523 * rgb[1] + 0.312 * rgb[2];
            let (i, q) = (i * c - q * s, i * s + q * c);
            rgb = [
                y + 0.956 * i + 0.621 * q,
                y - 0.272 * i - 0.647 * q,
                y - 1.106 * i + 1.703 * q,
            ];
        }
        *p = Rgb(rgb.map(|v| v.round().clamp(0.0, 255.0) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        })
    }

    #[test]
    fn deterministic_per_seed_and_varied_across_seeds() {
        let img = gradient(120, 90);
        let aug = Augment::default();
        let a = aug.apply(&img, 64, &mut rng_for(1, 2, 3));
        let b = aug.apply(&img, 64, &mut rng_for(1, 2, 3));
        let c = aug.apply(&img, 64, &mut rng_for(1, 2, 4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.dimensions(), (64, 64));
    }

    #[test]
    fn identity_settings_reproduce_a_resize() {
        // No crop, rotation, flips or jitter: the output is a plain bilinear resize.
        let aug = Augment::identity();
        let img = gradient(64, 64);
        let out = aug.apply(&img, 64, &mut rng_for(0, 0, 0));
        assert_eq!(out, img);
    }

    #[test]
    fn flips_mirror_the_image() {
        let aug = Augment {
            hflip: true,
            ..Augment::identity()
        };
        let img = gradient(32, 32);
        let flipped = image::imageops::flip_horizontal(&img);
        let outs: Vec<RgbImage> = (0..20)
            .map(|i| aug.apply(&img, 32, &mut rng_for(5, 0, i)))
            .collect();
        assert!(outs.contains(&img));
        assert!(outs.contains(&flipped));
        assert!(outs.iter().all(|o| *o == img || *o == flipped));
    }

    #[test]
    fn source_shift_augmentations_change_the_view_and_only_when_asked() {
        let img = gradient(64, 64);
        let views = |aug: &Augment| -> Vec<RgbImage> {
            (0..12)
                .map(|i| aug.apply(&img, 64, &mut rng_for(9, 0, i)))
                .collect()
        };
        // White balance: channel means move independently.
        let wb = views(&Augment {
            white_balance: 0.2,
            ..Augment::identity()
        });
        assert!(wb.iter().any(|v| v != &img));
        // Always blur: a checkerboard's sharp edges soften (a linear ramp would survive a blur).
        let checks = RgbImage::from_fn(64, 64, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                Rgb([200, 150, 120])
            } else {
                Rgb([60, 40, 30])
            }
        });
        let blur = Augment {
            blur_probability: 1.0,
            blur_sigma: 2.0,
            ..Augment::identity()
        };
        assert!((0..12).all(|i| blur.apply(&checks, 64, &mut rng_for(9, 0, i)) != checks));
        // Always JPEG at quality 10: lossy, so no view survives bit-exactly.
        let jpeg = views(&Augment {
            jpeg_probability: 1.0,
            jpeg_quality: (10, 10),
            ..Augment::identity()
        });
        assert!(jpeg.iter().all(|v| v != &img && v.dimensions() == (64, 64)));
        let mean_abs = |a: &RgbImage| {
            a.as_raw()
                .iter()
                .zip(img.as_raw())
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
                .sum::<f64>()
                / a.as_raw().len() as f64
        };
        // ... yet stays the same picture.
        assert!(jpeg.iter().all(|v| mean_abs(v) < 12.0));
        // Probability 0: untouched.
        assert!(views(&Augment::identity()).iter().all(|v| v == &img));
    }

    #[test]
    fn jitter_keeps_grey_grey_without_hue() {
        let mut img = RgbImage::from_pixel(4, 4, Rgb([100, 100, 100]));
        colour_jitter(&mut img, 1.1, 0.9, 1.2, 0.0);
        assert!(img
            .pixels()
            .all(|p| p[0] == p[1] && p[1] == p[2] && p[0] == 110));
    }
}
