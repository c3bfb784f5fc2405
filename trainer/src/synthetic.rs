//! A small synthetic "skin photo" generator for tests, demos and benchmarks.
//!
//! The pictures are cartoons, not medicine: skin-toned textured backgrounds with round,
//! umbilicated pustules (class `mpox`) or with diffuse blotchy rash and small papules (class
//! `not_mpox`). They exist so that the whole pipeline can run, and be tested, without the real
//! dataset, whose licence forbids redistribution. A model trained on them is a demo, nothing more.

use std::path::Path;

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Labels of the synthetic classes, in logit order.
pub const LABELS: [&str; 2] = ["not_mpox", "mpox"];

fn skin(rng: &mut StdRng) -> [f32; 3] {
    // From light to dark skin tones.
    let t: f32 = rng.random();
    let light = [236.0, 198.0, 170.0];
    let dark = [110.0, 72.0, 50.0];
    std::array::from_fn(|c| light[c] * (1.0 - t) + dark[c] * t)
}

/// One synthetic photo of `size`×`size` pixels; `positive` draws mpox-like pustules.
pub fn photo(rng: &mut StdRng, positive: bool, size: u32) -> RgbImage {
    let base = skin(rng);
    let s = size as f32;
    let light_dir: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let light_amount: f32 = rng.random_range(0.0..0.25);
    let mut acc: Vec<[f32; 3]> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32 / s - 0.5, (i / size) as f32 / s - 0.5);
            let shade = 1.0 + light_amount * (x * light_dir.cos() + y * light_dir.sin());
            let grain: f32 = rng.random_range(-6.0..6.0);
            std::array::from_fn(|c| base[c] * shade + grain)
        })
        .collect();
    let mut blend = |cx: f32, cy: f32, r: f32, colour: [f32; 3], profile: &dyn Fn(f32) -> f32| {
        let (x0, x1) = ((cx - r).max(0.0) as u32, ((cx + r) as u32 + 1).min(size));
        let (y0, y1) = ((cy - r).max(0.0) as u32, ((cy + r) as u32 + 1).min(size));
        for y in y0..y1 {
            for x in x0..x1 {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / r;
                if d < 1.0 {
                    let a = profile(d).clamp(0.0, 1.0);
                    let p = &mut acc[(y * size + x) as usize];
                    for c in 0..3 {
                        p[c] = p[c] * (1.0 - a) + colour[c] * a;
                    }
                }
            }
        }
    };
    if positive {
        // Firm, round, whitish-yellow pustules with a red halo and a dark central dimple.
        let n = rng.random_range(3..9);
        for _ in 0..n {
            let r = s * rng.random_range(0.05..0.11);
            let (cx, cy) = (rng.random_range(r..s - r), rng.random_range(r..s - r));
            blend(cx, cy, r * 1.5, [200.0, 70.0, 60.0], &|d| 0.6 * (1.0 - d));
            blend(cx, cy, r, [238.0, 222.0, 170.0], &|d| {
                if d < 0.85 {
                    0.95
                } else {
                    (1.0 - d) * 6.0
                }
            });
            blend(cx, cy, r * 0.35, [95.0, 60.0, 45.0], &|d| {
                0.8 * (1.0 - d * d)
            });
        }
    } else {
        // Diffuse, irregular reddish blotches and a few tiny flat papules.
        let n = rng.random_range(2..6);
        for _ in 0..n {
            let r = s * rng.random_range(0.12..0.3);
            let (cx, cy) = (rng.random_range(0.0..s), rng.random_range(0.0..s));
            blend(cx, cy, r, [205.0, 95.0, 95.0], &|d| {
                0.35 * (1.0 - d).powf(0.7)
            });
        }
        let m = rng.random_range(0..12);
        for _ in 0..m {
            let r = s * rng.random_range(0.01..0.025);
            let (cx, cy) = (rng.random_range(0.0..s), rng.random_range(0.0..s));
            blend(cx, cy, r, [185.0, 80.0, 80.0], &|d| 0.7 * (1.0 - d));
        }
    }
    RgbImage::from_fn(size, size, |x, y| {
        let p = acc[(y * size + x) as usize];
        Rgb(std::array::from_fn(|c| {
            p[c].round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// Writes an ImageFolder tree `dir/{not_mpox,mpox}/P<patient>_<k>.png` with `per_class` photos each.
///
/// Photos come in small groups per synthetic "patient" (file-name prefix `P12_`), as real
/// collections do, so patient-aware splitting has something to do.
pub fn write_dataset(dir: &Path, per_class: usize, size: u32, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut patient = 0;
    for (class_index, label) in LABELS.iter().enumerate() {
        let class_dir = dir.join(label);
        std::fs::create_dir_all(&class_dir).map_err(|e| Error::io(&class_dir, e))?;
        let mut written = 0;
        while written < per_class {
            patient += 1;
            let photos = rng.random_range(1..=3).min(per_class - written);
            for k in 0..photos {
                let img = photo(&mut rng, class_index == 1, size);
                let path = class_dir.join(format!("P{patient:03}_{k:02}.png"));
                img.save(&path)
                    .map_err(|e| crate::atomic::image_error(&path, e))?;
                written += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_differ_in_colour_statistics() {
        // Pustule caps are yellowish-white (green close to red); skin and rash are redder.
        let mut rng = StdRng::seed_from_u64(1);
        let bright = |img: &RgbImage| {
            img.pixels()
                .filter(|p| p[1] > 150 && f32::from(p[1]) > 0.9 * f32::from(p[0]))
                .count()
        };
        let pos: usize = (0..10).map(|_| bright(&photo(&mut rng, true, 64))).sum();
        let neg: usize = (0..10).map(|_| bright(&photo(&mut rng, false, 64))).sum();
        assert!(pos > 3 * neg.max(1), "{pos} vs {neg}");
    }

    #[test]
    fn dataset_layout_is_deterministic() {
        let base = std::env::temp_dir().join(format!("mpox-synth-{}", std::process::id()));
        write_dataset(&base.join("a"), 5, 32, 9).unwrap();
        write_dataset(&base.join("b"), 5, 32, 9).unwrap();
        for label in LABELS {
            let a = crate::dataset::list_images(&base.join("a").join(label)).unwrap();
            let b = crate::dataset::list_images(&base.join("b").join(label)).unwrap();
            assert_eq!(a.len(), 5);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
            }
        }
        std::fs::remove_dir_all(base).unwrap();
    }
}
