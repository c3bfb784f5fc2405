//! How good and how original the generated photos are.
//!
//! Quality: Fréchet distance and kernel inception distance (KID) between generated photos and
//! held-out real ones, both computed on the 1280-d pooled features of the ImageNet MobileNetV2
//! (not Inception-v3): the numbers are comparable with each other, across runs of this project,
//! and NOT with FID/KID figures published elsewhere.
//! Originality: each generated photo's nearest training photo, by the audit's near-duplicate test
//! (perceptual-hash distance, confirmed by aligned correlation) and in feature space.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::audit::{self, Fingerprint, Plane};
use crate::dataset;
use crate::error::{Error, Result};
use crate::models::{Arch, Network};

/// Mean and covariance of a set of feature vectors (rows).
fn moments(x: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let n = x.nrows() as f64;
    let mean = x.row_mean().transpose();
    let mut centred = x.clone();
    for mut row in centred.row_iter_mut() {
        row -= mean.transpose();
    }
    let cov = centred.transpose() * &centred / (n - 1.0).max(1.0);
    (mean, cov)
}

/// Symmetric positive semi-definite square root (negative eigenvalues from rounding are zeroed).
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(m.clone());
    let d = DMatrix::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt()));
    &e.eigenvectors * d * e.eigenvectors.transpose()
}

/// Fréchet distance between Gaussians fitted to two feature sets:
/// `|μa − μb|² + tr(Σa + Σb − 2·(Σa^½ Σb Σa^½)^½)`.
pub fn frechet_distance(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    let (ma, ca) = moments(a);
    let (mb, cb) = moments(b);
    let sa = sqrt_psd(&ca);
    let inner = &sa * &cb * &sa;
    let inner = (&inner + inner.transpose()) * 0.5;
    let cross: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    ((ma - mb).norm_squared() + ca.trace() + cb.trace() - 2.0 * cross).max(0.0)
}

/// Kernel inception distance: the unbiased MMD² with kernel `(x·y/d + 1)³`, averaged over
/// `subsets` random subsets of `size` rows of each set; returns (mean, std).
pub fn kid(
    a: &DMatrix<f64>,
    b: &DMatrix<f64>,
    subsets: usize,
    size: usize,
    seed: u64,
) -> (f64, f64) {
    let d = a.ncols() as f64;
    let m = size.min(a.nrows()).min(b.nrows());
    if m < 2 {
        return (f64::NAN, f64::NAN);
    }
    let k = |x: &DMatrix<f64>, y: &DMatrix<f64>| (x * y.transpose()).map(|v| (v / d + 1.0).powi(3));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let pick = |x: &DMatrix<f64>, rng: &mut StdRng| {
            let mut idx: Vec<usize> = (0..x.nrows()).collect();
            idx.shuffle(rng);
            x.select_rows(&idx[..m])
        };
        let (x, y) = (pick(a, &mut rng), pick(b, &mut rng));
        let (kxx, kyy, kxy) = (k(&x, &x), k(&y, &y), k(&x, &y));
        let off = |kk: &DMatrix<f64>| (kk.sum() - kk.trace()) / (m * (m - 1)) as f64;
        values.push(off(&kxx) + off(&kyy) - 2.0 * kxy.sum() / (m * m) as f64);
    }
    crate::metrics::mean_std(&values)
}

/// Neighbours that set the radius of each photo's ball in [`precision_recall`]: 3, the value
/// Kynkäänniemi et al. (2019) use throughout.
pub const PR_NEIGHBOURS: usize = 3;

/// Squared Euclidean distances between every row of `a` and every row of `b`.
pub(crate) fn squared_distances(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    let na: Vec<f64> = a.row_iter().map(|r| r.norm_squared()).collect();
    let nb: Vec<f64> = b.row_iter().map(|r| r.norm_squared()).collect();
    // |x − y|² = |x|² + |y|² − 2·x·y, one matrix product instead of a loop over pairs.
    let dot = a * b.transpose();
    DMatrix::from_fn(a.nrows(), b.nrows(), |i, j| {
        (na[i] + nb[j] - 2.0 * dot[(i, j)]).max(0.0)
    })
}

/// Squared distance of each row to its `k`-th nearest neighbour in the same set, the row itself
/// (distance 0) excluded. Needs more than `k` rows.
pub(crate) fn knn_radii(x: &DMatrix<f64>, k: usize) -> Vec<f64> {
    let d = squared_distances(x, x);
    (0..x.nrows())
        .map(|i| {
            let mut row: Vec<f64> = d.row(i).iter().copied().collect();
            row.sort_by(f64::total_cmp);
            row[k]
        })
        .collect()
}

/// Median distance of a set's photos to their `k`-th nearest neighbour in the same set: how
/// spread out the set is at the scale precision and recall use. `NaN` with `k` rows or fewer.
pub fn spread(x: &DMatrix<f64>, k: usize) -> f64 {
    if x.nrows() <= k || k == 0 {
        return f64::NAN;
    }
    median(knn_radii(x, k).into_iter().map(f64::sqrt).collect())
}

/// Improved precision and recall (Kynkäänniemi et al. 2019): the support of each set is the
/// union of balls around its photos reaching their `k`-th nearest neighbour in the same set.
/// Precision is the share of `generated` inside the real support ("realistic"), recall the share
/// of `real` inside the generated support ("covers the variety": a collapsed generator has a
/// small support and low recall). Both `NaN` when a set has no more than `k` rows.
pub fn precision_recall(real: &DMatrix<f64>, generated: &DMatrix<f64>, k: usize) -> (f64, f64) {
    if real.nrows() <= k || generated.nrows() <= k || k == 0 {
        return (f64::NAN, f64::NAN);
    }
    // Share of `probe` rows inside some ball of `support` (radii `r`).
    let covered = |probe: &DMatrix<f64>, support: &DMatrix<f64>, r: &[f64]| -> f64 {
        let d = squared_distances(probe, support);
        let inside = (0..probe.nrows())
            .filter(|&i| (0..support.nrows()).any(|j| d[(i, j)] <= r[j]))
            .count();
        inside as f64 / probe.nrows() as f64
    };
    let (real_radii, generated_radii) = (knn_radii(real, k), knn_radii(generated, k));
    (
        covered(generated, real, &real_radii),
        covered(real, generated, &generated_radii),
    )
}

/// The ImageNet MobileNetV2 whose pooled features every figure here is computed in.
pub fn feature_network(weights: &Path, device: &Device) -> Result<Network> {
    let net = Network::new(Arch::MobileNetV2 { width: 1.0 }, 2, 0, device)?;
    net.load_weights(weights)?;
    Ok(net)
}

/// Pooled features of photos (as seen at `size` px, then at the network's 224 px).
pub fn features(net: &Network, images: &[RgbImage], device: &Device) -> Result<DMatrix<f64>> {
    let pre = mpox_sdk::Preprocessing::imagenet(224);
    let mut rows: Vec<f64> = Vec::new();
    for chunk in images.chunks(32) {
        let flat: Vec<f32> = chunk.par_iter().flat_map(|img| pre.tensor(img)).collect();
        let x = Tensor::from_vec(flat, (chunk.len(), 3, 224, 224), device)?;
        let f = Network::pool(&net.features(&x, false)?)?.detach();
        rows.extend(
            f.flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from),
        );
    }
    let dim = net.feature_dim();
    Ok(DMatrix::from_row_slice(images.len(), dim, &rows))
}

/// A generated photo's nearest training photo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Nearest {
    /// The generated file.
    pub generated: PathBuf,
    /// Its nearest training photo by perceptual hash (mirror images included).
    pub training: PathBuf,
    /// Hash distance (of 64 bits).
    pub hash_distance: u32,
    /// Aligned correlation with that photo (1: same picture).
    pub correlation: f64,
    /// Whether the audit would call the pair near-duplicates.
    pub near_duplicate: bool,
    /// Euclidean distance to the nearest training photo in feature space.
    pub feature_distance: f64,
}

/// The `gan eval` report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GanEvalReport {
    /// Generated photos evaluated.
    pub generated: usize,
    /// Held-out real photos compared with.
    pub held_out: usize,
    /// Training photos searched for memorisation.
    pub training: usize,
    /// Photos of each set the distribution figures (Fréchet distance, KID, precision, recall,
    /// spread, and their real baselines) compare: the first this many generated and training
    /// photos, as many of each (the smaller count), since all these figures move with the sizes
    /// of the sets (Kynkäänniemi et al. compare equal sizes). 0 in reports from before.
    #[serde(default)]
    pub compared: usize,
    /// Feature extractor (not Inception: not comparable with published FID/KID).
    pub features: String,
    /// Fréchet distance, generated vs held-out.
    pub frechet_distance: f64,
    /// Fréchet distance, training vs held-out real photos: the floor a perfect generator reaches
    /// with this few photos.
    pub frechet_distance_real_baseline: f64,
    /// KID mean and std, generated vs held-out.
    pub kid: (f64, f64),
    /// KID of training vs held-out real photos.
    pub kid_real_baseline: (f64, f64),
    /// Improved precision of the generated photos against the held-out real ones
    /// ([`precision_recall`], k = [`PR_NEIGHBOURS`]): the share that looks like real photos.
    pub precision: f64,
    /// Improved recall: the share of held-out real photos the generated ones cover.
    pub recall: f64,
    /// Precision and recall of the training photos against the held-out ones: what real photos
    /// of this class score with this few of each.
    pub precision_recall_real_baseline: (f64, f64),
    /// [`spread`] of the generated photos: smaller than the real photos' when the generator
    /// covers a few clusters of photos (low recall from collapse, not from a shifted set).
    #[serde(default = "nan")]
    pub spread: f64,
    /// [`spread`] of the training photos (as many as the generated ones compared).
    #[serde(default = "nan")]
    pub spread_real: f64,
    /// Generated photos that are near-duplicates of a training photo (memorised).
    pub memorised: usize,
    /// Median feature distance of a generated photo to its nearest training photo.
    pub median_feature_distance: f64,
    /// Median feature distance of a held-out real photo to its nearest training photo.
    pub median_feature_distance_real: f64,
    /// Per generated photo, sorted by hash distance.
    pub nearest: Vec<Nearest>,
}

impl GanEvalReport {
    /// The report without its per-photo list, for summaries and model cards.
    pub fn summary(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("report serialises");
        if let Some(o) = v.as_object_mut() {
            o.remove("nearest");
        }
        v
    }
}

/// Reports written before a figure existed read it as unknown.
fn nan() -> f64 {
    f64::NAN
}

/// Photos decoded and brought to `size` px as the GAN sees its training photos.
pub fn load_at(paths: &[PathBuf], size: usize) -> Result<Vec<RgbImage>> {
    paths
        .par_iter()
        .map(|p| {
            let img = dataset::load_image(p)?;
            let pre = mpox_sdk::Preprocessing {
                input_size: size as u32,
                resize: size as u32,
                mean: [0.0; 3],
                std: [1.0; 3],
            };
            Ok(pre.center_crop(&img))
        })
        .collect()
}

/// Each row of `a`'s distance to its nearest row of `b`.
fn nearest_rows(a: &DMatrix<f64>, b: &DMatrix<f64>) -> Vec<f64> {
    let d = squared_distances(a, b);
    d.row_iter()
        .map(|row| row.iter().copied().fold(f64::INFINITY, f64::min).sqrt())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Evaluates `generated` photos against `held_out` real ones, and searches `training` for copies.
/// Writes `closest.png` (generated beside its nearest training photo, closest first) into `out`.
pub fn evaluate(
    generated: &[PathBuf],
    held_out: &[PathBuf],
    training: &[PathBuf],
    size: usize,
    weights: &Path,
    out: &Path,
    device: &Device,
) -> Result<GanEvalReport> {
    if generated.len() < 2 || held_out.len() < 2 || training.is_empty() {
        return Err(Error::Invalid(format!(
            "need at least 2 generated and 2 held-out photos and a training set (got {}, {}, {})",
            generated.len(),
            held_out.len(),
            training.len()
        )));
    }
    let net = feature_network(weights, device)?;
    let (gen_imgs, real_imgs, train_imgs) = (
        load_at(generated, size)?,
        load_at(held_out, size)?,
        load_at(training, size)?,
    );
    let (fg, fr, ft) = (
        features(&net, &gen_imgs, device)?,
        features(&net, &real_imgs, device)?,
        features(&net, &train_imgs, device)?,
    );
    let subset = 100;
    let train_prints: Vec<(u64, u64, Fingerprint)> = train_imgs
        .par_iter()
        .map(|img| {
            let (h, m) = audit::phash(img);
            (h, m, Fingerprint::of(&Plane::luma(img)))
        })
        .collect();
    // Memorisation looks at every generated photo; the distribution figures at equal counts
    // (`ablate` samples for its largest ratio, up to twice the training photos).
    let compared = fg.nrows().min(ft.nrows());
    let (fg_c, ft_c) = (
        fg.rows(0, compared).into_owned(),
        ft.rows(0, compared).into_owned(),
    );
    let gen_feature_nn = nearest_rows(&fg, &ft);
    let mut nearest: Vec<Nearest> = gen_imgs
        .par_iter()
        .enumerate()
        .map(|(i, img)| {
            let (h, _) = audit::phash(img);
            let (j, dist, mirror) = train_prints
                .iter()
                .enumerate()
                .map(|(j, (th, tm, _))| {
                    let (d, dm) = (audit::hamming(h, *th), audit::hamming(h, *tm));
                    if dm < d {
                        (j, dm, true)
                    } else {
                        (j, d, false)
                    }
                })
                .min_by_key(|x| x.1)
                .expect("training set is not empty");
            let correlation = audit::aligned_correlation(
                &Fingerprint::of(&Plane::luma(img)),
                &train_prints[j].2,
                mirror,
            );
            Nearest {
                generated: generated[i].clone(),
                training: training[j].clone(),
                hash_distance: dist,
                correlation,
                near_duplicate: dist <= audit::DEFAULT_NEAR_THRESHOLD
                    && correlation >= audit::DEFAULT_MIN_CORRELATION,
                feature_distance: gen_feature_nn[i],
            }
        })
        .collect();
    nearest.sort_by(|a, b| {
        a.hash_distance
            .cmp(&b.hash_distance)
            .then(b.correlation.total_cmp(&a.correlation))
    });
    let closest: Vec<RgbImage> = nearest
        .iter()
        .take(8)
        .flat_map(|n| {
            let g = generated
                .iter()
                .position(|p| *p == n.generated)
                .expect("listed");
            let t = training
                .iter()
                .position(|p| *p == n.training)
                .expect("listed");
            [gen_imgs[g].clone(), train_imgs[t].clone()]
        })
        .collect();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("closest.png");
    let grid = super::train::grid(&closest, 4);
    crate::atomic::write_atomic_with(&path, |tmp| {
        grid.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| crate::atomic::image_error(tmp, e))
    })?;
    let (precision, recall) = precision_recall(&fr, &fg_c, PR_NEIGHBOURS);
    Ok(GanEvalReport {
        generated: generated.len(),
        held_out: held_out.len(),
        training: training.len(),
        compared,
        features: "MobileNetV2 (ImageNet) global-average-pooled, 1280-d, at 224 px".into(),
        frechet_distance: frechet_distance(&fg_c, &fr),
        frechet_distance_real_baseline: frechet_distance(&ft_c, &fr),
        kid: kid(&fg_c, &fr, 20, subset, 0),
        kid_real_baseline: kid(&ft_c, &fr, 20, subset, 0),
        precision,
        recall,
        precision_recall_real_baseline: precision_recall(&fr, &ft_c, PR_NEIGHBOURS),
        spread: spread(&fg_c, PR_NEIGHBOURS),
        spread_real: spread(&ft_c, PR_NEIGHBOURS),
        memorised: nearest.iter().filter(|n| n.near_duplicate).count(),
        median_feature_distance: median(gen_feature_nn),
        median_feature_distance_real: median(nearest_rows(&fr, &ft)),
        nearest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    fn gaussian(n: usize, d: usize, shift: f64, seed: u64) -> DMatrix<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0, 1.0).unwrap();
        DMatrix::from_fn(n, d, |_, _| normal.sample(&mut rng) + shift)
    }

    #[test]
    fn frechet_distance_of_a_set_with_itself_is_zero() {
        let a = gaussian(200, 16, 0.0, 1);
        assert!(
            frechet_distance(&a, &a).abs() < 1e-6,
            "{}",
            frechet_distance(&a, &a)
        );
    }

    #[test]
    fn frechet_distance_of_known_gaussians() {
        // Same covariance, means 0 and 1 in each of d dimensions: FD → d as samples grow.
        let (a, b) = (gaussian(4000, 4, 0.0, 2), gaussian(4000, 4, 1.0, 3));
        let fd = frechet_distance(&a, &b);
        assert!((fd - 4.0).abs() < 0.3, "{fd}");
    }

    #[test]
    fn precision_and_recall_of_constructed_sets() {
        let real = gaussian(300, 4, 0.0, 7);
        // Another sample of the same distribution: both near 1.
        let (p, r) = precision_recall(&real, &gaussian(300, 4, 0.0, 8), 3);
        assert!(p > 0.85 && r > 0.85, "same distribution: {p} {r}");
        // Far away: neither realistic nor covering.
        let (p, r) = precision_recall(&real, &gaussian(300, 4, 10.0, 9), 3);
        assert_eq!((p, r), (0.0, 0.0));
        // Mode collapse: every generated photo near the real mean (realistic) but the
        // generated support is tiny, so it covers only the few real photos near the centre.
        let collapsed = gaussian(300, 4, 0.0, 10) * 0.05;
        let (p, r) = precision_recall(&real, &collapsed, 3);
        assert!(p > 0.95, "collapsed precision {p}");
        assert!(r < 0.1, "collapsed recall {r}");
        // Generated photos spread wider than the real ones: most of them lie outside the real
        // support (low precision), yet they cover the real photos (high recall).
        let (p, r) = precision_recall(&real, &(gaussian(300, 4, 0.0, 11) * 4.0), 3);
        assert!(p < 0.4 && r > 0.8, "too wide: {p} {r}");
        // Too few rows for a k-th neighbour: no figure rather than a made-up one.
        let two = DMatrix::from_row_slice(2, 1, &[0.0, 1.0]);
        assert!(precision_recall(&two, &real, 3).0.is_nan());
    }

    #[test]
    fn spread_is_the_median_distance_to_the_kth_neighbour() {
        // Points 0, 1, 3, 7, 15 on a line: nearest neighbours at 1, 1, 2, 4, 8 (median 2);
        // second-nearest at 3, 2, 3, 6, 12 (median 3).
        let line = DMatrix::from_column_slice(5, 1, &[0.0, 1.0, 3.0, 7.0, 15.0]);
        assert_eq!(spread(&line, 1), 2.0);
        assert_eq!(spread(&line, 2), 3.0);
        assert!(spread(&line, 5).is_nan());
        // A collapsed copy of a cloud (a tenth of its scale) has a tenth of its spread.
        let cloud = gaussian(100, 8, 0.0, 12);
        let ratio = spread(&cloud.map(|v| v * 0.1), 3) / spread(&cloud, 3);
        assert!((ratio - 0.1).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn squared_distances_match_direct_differences() {
        let (a, b) = (gaussian(5, 3, 0.0, 12), gaussian(4, 3, 1.0, 13));
        let d = squared_distances(&a, &b);
        for i in 0..5 {
            for j in 0..4 {
                let direct = (a.row(i) - b.row(j)).norm_squared();
                assert!((d[(i, j)] - direct).abs() < 1e-9, "{i} {j}");
            }
        }
    }

    #[test]
    fn kid_is_near_zero_for_one_distribution_and_positive_for_shifted_sets() {
        let (a, b) = (gaussian(300, 8, 0.0, 4), gaussian(300, 8, 0.0, 5));
        let (same, _) = kid(&a, &b, 10, 100, 0);
        let (shifted, _) = kid(&a, &gaussian(300, 8, 0.7, 6), 10, 100, 0);
        assert!(same.abs() < 0.05, "{same}");
        assert!(
            shifted > 0.2 && shifted > 10.0 * same.abs(),
            "{shifted} vs {same}"
        );
    }
}
