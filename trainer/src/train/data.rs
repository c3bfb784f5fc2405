//! The photos a run trains and validates on, decoded once into memory.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use crate::dataset::{self, Dataset};
use crate::error::{Error, Result};
use crate::split::{self, SplitConfig, SplitItem, SplitManifest};

/// One decoded photo and its label index.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Where it came from.
    pub path: PathBuf,
    /// The photo, shrunk so its shorter side is at most twice the resize target.
    pub image: RgbImage,
    /// Index into the run's labels.
    pub label: usize,
}

/// Training and validation photos of one run.
#[derive(Clone, Debug)]
pub struct RunData {
    /// Labels in logit order.
    pub labels: Vec<String>,
    /// The label counted as mpox.
    pub positive_label: String,
    /// Training photos (real, then synthetic if any).
    pub train: Vec<Sample>,
    /// Validation photos (real only).
    pub val: Vec<Sample>,
    /// Test photos of the fold (empty without a split).
    pub test: Vec<PathBuf>,
    /// Fingerprint of the dataset (from the split manifest).
    pub fingerprint: String,
    /// The validation fold.
    pub val_fold: usize,
    /// The test fold, when a split was given.
    pub test_fold: Option<usize>,
}

/// Where a run's photos come from.
#[derive(Clone, Debug)]
pub struct DataSource {
    /// The ImageFolder root.
    pub root: PathBuf,
    /// A split manifest and the fold whose test part is held out; `None` makes a duplicate-aware
    /// split of the data itself and validates on one fold of it.
    pub split: Option<(PathBuf, usize)>,
    /// Class mapped to `mpox` (binary screening) when no manifest says so.
    pub positive: Option<String>,
    /// Seed of the internal split.
    pub seed: u64,
    /// Extra synthetic training photos: a folder of generated images with its manifest.
    pub synthetic: Option<PathBuf>,
    /// Synthetic photos per real training photo of their label (the rest of the folder is unused).
    pub synthetic_ratio: f64,
}

/// Picks the positive label: `mpox`, else a label that reads "monkeypox", else an error.
pub fn positive_label(labels: &[String]) -> Result<String> {
    labels
        .iter()
        .find(|l| l.as_str() == "mpox")
        .or_else(|| labels.iter().find(|l| l.eq_ignore_ascii_case("monkeypox")))
        .cloned()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "none of the labels {labels:?} is `mpox` or `Monkeypox`: pass --positive CLASS"
            ))
        })
}

/// Loads the manifest (or makes one) and decodes the training and validation photos.
pub fn load(src: &DataSource, max_side: u32) -> Result<RunData> {
    if let Some(dir) = &src.synthetic {
        let inside = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a.starts_with(&b));
        if inside(dir, &src.root) {
            return Err(Error::Invalid(format!(
                "{} lies inside the dataset {}: generated photos would be scanned as real ones",
                dir.display(),
                src.root.display()
            )));
        }
    }
    let (manifest, test_fold) = match &src.split {
        Some((path, fold)) => {
            let m = SplitManifest::load(path)?;
            if *fold >= m.folds {
                return Err(Error::Invalid(format!(
                    "--fold {fold} does not exist: the split has {} folds (0..{})",
                    m.folds,
                    m.folds - 1
                )));
            }
            if let Some(p) = &src.positive {
                if m.positive.as_deref() != Some(p.as_str()) {
                    return Err(Error::Invalid(format!(
                        "--positive {p} differs from the split's positive class {:?}",
                        m.positive
                    )));
                }
            }
            m.check_dataset(&Dataset::scan(&src.root)?)?;
            (m, Some(*fold))
        }
        None => {
            let config = SplitConfig {
                folds: 5,
                seed: src.seed,
                positive: src.positive.clone(),
                ..Default::default()
            };
            (split::split(&src.root, &config)?, None)
        }
    };
    let val_fold = test_fold.map_or(0, |t| (t + 1) % manifest.folds);
    let pick = |f: &dyn Fn(&SplitItem) -> bool| -> Vec<&SplitItem> {
        manifest.items.iter().filter(|i| f(i)).collect()
    };
    let train_items = pick(&|i| Some(i.fold) != test_fold && i.fold != val_fold);
    let val_items = pick(&|i| i.fold == val_fold);
    let test = pick(&|i| Some(i.fold) == test_fold)
        .into_iter()
        .map(|i| manifest.path_of(i))
        .collect();
    let labels = manifest.labels.clone();
    let positive_label = positive_label(&labels)?;
    let decode = |items: &[&SplitItem]| -> Result<Vec<Sample>> {
        items
            .par_iter()
            .map(|i| {
                let path = manifest.path_of(i);
                Ok(Sample {
                    image: shrink(dataset::load_image(&path)?, max_side),
                    path,
                    label: i.label_index,
                })
            })
            .collect()
    };
    let mut train = decode(&train_items)?;
    let val = decode(&val_items)?;
    if train.is_empty() || val.is_empty() {
        return Err(Error::Invalid(format!(
            "{} training and {} validation photos: too few to train",
            train.len(),
            val.len()
        )));
    }
    if let Some(dir) = &src.synthetic {
        let gan = crate::gan::sample::read_manifest(dir)?;
        if gan.dataset_fingerprint != manifest.dataset_fingerprint || gan.fold != test_fold {
            return Err(Error::Invalid(format!(
                "{} was generated by a GAN trained on fold {:?} of dataset {}, but this run tests fold {:?} of dataset {}: \
                 its generator may have seen this run's validation or test photos",
                dir.display(), gan.fold, gan.dataset_fingerprint, test_fold, manifest.dataset_fingerprint
            )));
        }
        let label = if labels.contains(&gan.class) {
            gan.class.clone()
        } else if manifest.positive.as_deref() == Some(gan.class.as_str()) {
            positive_label.clone()
        } else {
            return Err(Error::Invalid(format!(
                "synthetic photos of class {:?} fit none of the labels {labels:?}",
                gan.class
            )));
        };
        let label_index = labels
            .iter()
            .position(|l| *l == label)
            .expect("label checked above");
        let same_label = train.iter().filter(|s| s.label == label_index).count();
        let extra = load_synthetic(dir, &manifest, src.synthetic_ratio, same_label)?;
        train.extend(
            extra
                .into_par_iter()
                .map(|(path, image)| Sample {
                    image: shrink(image, max_side),
                    path,
                    label: label_index,
                })
                .collect::<Vec<_>>(),
        );
    }
    Ok(RunData {
        labels,
        positive_label,
        train,
        val,
        test,
        fingerprint: manifest.dataset_fingerprint.clone(),
        val_fold,
        test_fold,
    })
}

/// Reads generated photos for the training set, refusing any that is byte-identical to a photo of
/// the dataset (a synthetic folder must never smuggle real validation or test photos in).
fn load_synthetic(
    dir: &Path,
    manifest: &SplitManifest,
    ratio: f64,
    real_train: usize,
) -> Result<Vec<(PathBuf, RgbImage)>> {
    let files = crate::gan::sample::read_synthetic_folder(dir)?;
    let real: std::collections::HashSet<&str> =
        manifest.items.iter().map(|i| i.sha256.as_str()).collect();
    let want = ((real_train as f64) * ratio).round() as usize;
    let mut out = Vec::new();
    for path in files.into_iter().take(want) {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if real.contains(dataset::sha256_hex(&bytes).as_str()) {
            return Err(Error::Invalid(format!(
                "{} is a real photo of the dataset, not a synthetic one: refusing to train on it",
                path.display()
            )));
        }
        let image = mpox_sdk::decode::decode(&bytes, &mpox_sdk::Limits::default())?;
        out.push((path, image));
    }
    Ok(out)
}

/// Shrinks so the shorter side is at most `max_side` (keeps memory and augmentation cost bounded).
pub fn shrink(img: RgbImage, max_side: u32) -> RgbImage {
    let short = img.width().min(img.height());
    if short <= max_side {
        return img;
    }
    let scale = f64::from(max_side) / f64::from(short);
    let (w, h) = (
        (f64::from(img.width()) * scale).round() as u32,
        (f64::from(img.height()) * scale).round() as u32,
    );
    image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
}
