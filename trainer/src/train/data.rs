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
    /// External validation photos (another source; never trained on), empty without one.
    pub external: Vec<Sample>,
    /// Test photos of the fold (empty without a split).
    pub test: Vec<PathBuf>,
    /// Fingerprint of the dataset (from the split manifest).
    pub fingerprint: String,
    /// The validation fold.
    pub val_fold: usize,
    /// The test fold, when a split was given.
    pub test_fold: Option<usize>,
    /// The generated photos among `train`, for the model card.
    pub synthetic: Option<SyntheticUse>,
}

/// Generated photos a run trained on: how many, from which generator, of what quality.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SyntheticUse {
    /// Photos added to the training set.
    pub photos: usize,
    /// Their class.
    pub class: String,
    /// sha256 of the generator checkpoint.
    pub checkpoint_sha256: String,
    /// The folder's evaluation (`eval.json`, as `gan eval` and `pipeline --gan` write it), without
    /// the per-photo list.
    pub evaluation: Option<serde_json::Value>,
}

impl RunData {
    /// The photos the temperature and operating point are chosen on, and what they are called:
    /// the external set when there is one (the only photos from a source the network never
    /// saw), else the internal validation fold.
    pub fn calibration_set(&self) -> (String, &[Sample]) {
        if self.external.is_empty() {
            (
                format!("internal validation fold {}", self.val_fold),
                &self.val,
            )
        } else {
            ("external validation set".to_string(), &self.external)
        }
    }

    /// Index of the positive label.
    pub fn positive_index(&self) -> usize {
        self.labels
            .iter()
            .position(|l| *l == self.positive_label)
            .expect("the positive label is one of the labels")
    }
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
    /// Extra folders of negatives for the internal split (a manifest names its own).
    pub negatives: Vec<PathBuf>,
    /// An external validation set (ImageFolder with the positive class): scored after every
    /// epoch to choose the epoch, the recipe's blend and the operating point; never trained on.
    pub external: Option<PathBuf>,
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
    let parts = match &src.split {
        Some((path, fold)) => {
            let parts = SplitManifest::open(path, &src.root, *fold)?;
            if let Some(p) = &src.positive {
                if parts.manifest.positive.as_deref() != Some(p.as_str()) {
                    return Err(Error::Invalid(format!(
                        "--positive {p} differs from the split's positive class {:?}",
                        parts.manifest.positive
                    )));
                }
            }
            if !src.negatives.is_empty() {
                let given: Vec<String> = src
                    .negatives
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                if given != parts.manifest.negatives {
                    return Err(Error::Invalid(format!(
                        "--negatives {given:?} differ from the split's negatives folders {:?}",
                        parts.manifest.negatives
                    )));
                }
            }
            parts
        }
        None => {
            let config = SplitConfig {
                folds: 5,
                seed: src.seed,
                positive: src.positive.clone(),
                negatives: src.negatives.clone(),
                ..Default::default()
            };
            split::split(&src.root, &config)?.without_test(0)
        }
    };
    let manifest = &parts.manifest;
    let test_fold = parts.fold;
    let val_fold = parts.val_fold;
    let train_items = parts.train();
    let val_items = parts.val();
    let test = parts
        .test()
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
    let external = match &src.external {
        Some(dir) => load_external(dir, manifest, &positive_label, &labels, max_side)?,
        None => Vec::new(),
    };
    if train.is_empty() || val.is_empty() {
        return Err(Error::Invalid(format!(
            "{} training and {} validation photos: too few to train",
            train.len(),
            val.len()
        )));
    }
    let mut synthetic = None;
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
        let extra = load_synthetic(dir, manifest, src.synthetic_ratio, same_label)?;
        let evaluation = crate::gan::folds::read_eval(dir).map(|r| r.summary());
        synthetic = Some(SyntheticUse {
            photos: extra.len(),
            class: gan.class.clone(),
            checkpoint_sha256: gan.checkpoint_sha256.clone(),
            evaluation,
        });
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
        external,
        test,
        fingerprint: manifest.dataset_fingerprint.clone(),
        val_fold,
        test_fold,
        synthetic,
    })
}

/// Decodes an external validation set: its class folder named like the split's positive class
/// (or `mpox`) is positive, every other folder negative. Refuses a set that shares a photo with
/// the split (it would no longer be external) or lacks either label.
pub fn load_external(
    dir: &Path,
    manifest: &SplitManifest,
    positive_label: &str,
    labels: &[String],
    max_side: u32,
) -> Result<Vec<Sample>> {
    let ds = Dataset::scan(dir)?;
    let positive_class = manifest.positive.as_deref().unwrap_or(positive_label);
    let pos = labels
        .iter()
        .position(|l| l == positive_label)
        .expect("positive label is a label");
    if labels.len() != 2 {
        return Err(Error::Invalid(
            "an external validation set needs a binary model (name the mpox class with --positive)"
                .into(),
        ));
    }
    let in_split: std::collections::HashMap<&str, &str> = manifest
        .items
        .iter()
        .map(|i| (i.sha256.as_str(), i.path.as_str()))
        .collect();
    if let Some((item, twin)) = ds
        .items
        .iter()
        .find_map(|i| in_split.get(i.sha256.as_str()).map(|t| (i, t)))
    {
        return Err(Error::Invalid(format!(
            "external validation photo {} is byte-identical to {twin} of the training data: \
             an external set must come from elsewhere",
            ds.path(item).display()
        )));
    }
    let samples: Vec<Sample> = ds
        .items
        .par_iter()
        .map(|item| {
            let class = ds.class_of(item);
            let positive = class == positive_class || class == positive_label;
            Ok(Sample {
                path: ds.path(item),
                image: shrink(dataset::load_image(&ds.path(item))?, max_side),
                label: if positive { pos } else { 1 - pos },
            })
        })
        .collect::<Result<_>>()?;
    let positives = samples.iter().filter(|s| s.label == pos).count();
    if positives == 0 || positives == samples.len() {
        return Err(Error::Invalid(format!(
            "external validation set {} has {positives} photos of the positive class {positive_class:?} among {}: it needs both (classes: {})",
            dir.display(),
            samples.len(),
            ds.classes.join(", ")
        )));
    }
    Ok(samples)
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
