//! Does GAN data help? The same duplicate-aware folds, three training sets:
//! (a) real photos only, (b) real photos with classic augmentation, (c) real photos with classic
//! augmentation plus GAN photos generated, per fold, by a GAN trained on that fold's training
//! photos of the positive class only. Each arm is tested on the real photos of every test fold.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::crossval::{self, CrossvalConfig, CrossvalSummary};
use crate::error::{Error, Result};
use crate::gan::train::{gan_data, GanConfig, GanRun};
use crate::split::{SplitConfig, SplitManifest};
use crate::train::FitConfig;

/// An ablation run.
#[derive(Clone, Debug)]
pub struct AblateConfig {
    /// ImageFolder root.
    pub data: PathBuf,
    /// Class folder the GAN learns and that counts as mpox.
    pub positive: String,
    /// Folds of the split.
    pub folds: usize,
    /// Seed of the split.
    pub split_seed: u64,
    /// Classifier settings shared by the arms (augmentation is set per arm).
    pub fit: FitConfig,
    /// GAN settings shared by the folds.
    pub gan: GanConfig,
    /// Generated photos per real training photo of the positive class.
    pub synthetic_ratio: f64,
    /// ImageNet MobileNetV2 weights for the GAN's Fréchet distance and KID (optional).
    pub feature_weights: Option<PathBuf>,
    /// Run only these folds (all when empty): a GAN per fold is the costly part.
    pub only_folds: Vec<usize>,
    /// Extra folders of negatives, split into the same folds.
    pub negatives: Vec<PathBuf>,
    /// External validation set (chooses epochs and operating points; reported per fold).
    pub external: Option<PathBuf>,
}

/// The three arms' results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblationSummary {
    /// (arm name, cross-validation summary).
    pub arms: Vec<(String, CrossvalSummary)>,
    /// Per fold, the GAN's evaluation (when feature weights were given).
    pub gan_eval: Vec<serde_json::Value>,
}

/// The metrics compared across arms.
pub const COMPARED: [&str; 4] = ["f1", "sensitivity", "specificity", "auc"];

impl AblationSummary {
    /// The comparison table in Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::from("| training data |");
        for m in COMPARED {
            md.push_str(&format!(" {m} |"));
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(COMPARED.len()));
        md.push('\n');
        for (name, s) in &self.arms {
            md.push_str(&format!("| {name} |"));
            for m in COMPARED {
                let (_, mean, std) = s
                    .mean_std
                    .iter()
                    .find(|(k, _, _)| k == m)
                    .cloned()
                    .unwrap_or_default();
                if std.is_finite() {
                    md.push_str(&format!(" {mean:.3} ± {std:.3} |"));
                } else {
                    md.push_str(&format!(" {mean:.3} (one fold) |"));
                }
            }
            md.push('\n');
        }
        md
    }
}

/// Trains (or resumes) the GAN of each fold and samples its photos; returns the sample folders.
fn gan_samples(
    config: &AblateConfig,
    split: &Path,
    out: &Path,
    device: &Device,
) -> Result<Vec<PathBuf>> {
    let manifest = SplitManifest::load(split)?;
    let mut dirs = Vec::new();
    for fold in 0..manifest.folds {
        let dir = out.join(format!("fold-{fold}"));
        let samples = dir.join("samples");
        if !config.only_folds.is_empty() && !config.only_folds.contains(&fold) {
            // Never read: crossval runs only the selected folds.
            dirs.push(samples);
            continue;
        }
        if !samples.join(crate::gan::sample::MANIFEST).exists() {
            let data = gan_data(&config.data, &config.positive, Some((split, fold)))?;
            let ckpt = dir.join(crate::gan::train::files::CHECKPOINT);
            let mut run = GanRun::new(&config.gan, &data, &dir, device, ckpt.exists())?;
            eprintln!(
                "== GAN of fold {fold}: {} photos of {}",
                data.photos.len(),
                data.class
            );
            run.train(None, true)?;
            // Enough photos for the ratio against the class's real training photos of this fold.
            let n = ((data.photos.len() as f64) * config.synthetic_ratio).ceil() as usize;
            if samples.exists() {
                // An interrupted earlier sample: start it again.
                std::fs::remove_dir_all(&samples).map_err(|e| Error::io(&samples, e))?;
            }
            crate::gan::sample::sample(&ckpt, n, fold as u64, &samples, device)?;
        }
        dirs.push(samples);
    }
    Ok(dirs)
}

/// Runs the three arms into `out` (resumable: finished folds and GANs are reused).
pub fn ablate(config: &AblateConfig, out: &Path, device: &Device) -> Result<AblationSummary> {
    config.fit.validate()?;
    config.gan.validate()?;
    if config.fit.epochs == 0 && config.fit.probe_views < 2 {
        // The probe alone sees augmentation only through its extra cached views.
        return Err(Error::Invalid(
            "ablate: with --recipe probe the augmentation arm would equal the real-only arm; \
             pass --probe-views 2 or more (or a recipe that fine-tunes)"
                .into(),
        ));
    }
    let split_config = SplitConfig {
        folds: config.folds,
        seed: config.split_seed,
        positive: Some(config.positive.clone()),
        negatives: config.negatives.clone(),
        ..Default::default()
    };
    let split = crossval::ensure_split(&config.data, None, out, &split_config)?;
    let arm = |augment: bool, synthetic: Option<Vec<PathBuf>>| {
        let mut fit = config.fit.clone();
        if !augment {
            fit.augment = None;
        }
        CrossvalConfig {
            data: config.data.clone(),
            split: Some(split.clone()),
            folds: config.folds,
            split_seed: config.split_seed,
            positive: Some(config.positive.clone()),
            fit,
            synthetic,
            synthetic_ratio: config.synthetic_ratio,
            only_folds: config.only_folds.clone(),
            negatives: config.negatives.clone(),
            external: config.external.clone(),
        }
    };
    let mut arms = Vec::new();
    for (name, dir, augment) in [
        ("real only", "real", false),
        ("real + augmentation", "augment", true),
    ] {
        eprintln!("=== arm: {name}");
        arms.push((
            name.to_string(),
            crossval::crossval(&arm(augment, None), &out.join(dir), device, true)?,
        ));
    }
    eprintln!("=== arm: real + augmentation + GAN photos");
    let samples = gan_samples(config, &split, &out.join("gan"), device)?;
    let mut gan_eval = Vec::new();
    if let Some(weights) = &config.feature_weights {
        for (fold, dir) in samples.iter().enumerate() {
            if !config.only_folds.is_empty() && !config.only_folds.contains(&fold) {
                continue;
            }
            let m = crate::gan::sample::read_manifest(dir)?;
            let generated = crate::gan::sample::read_synthetic_folder(dir)?;
            let (training, held_out) = crate::gan::train::train_and_held_out(
                &config.data,
                &m.class,
                Some(&split),
                m.fold,
            )?;
            let r = crate::gan::eval::evaluate(
                &generated,
                &held_out,
                &training,
                config.gan.size,
                weights,
                dir,
                device,
            )?;
            let mut v = serde_json::to_value(&r).expect("report serialises");
            if let Some(o) = v.as_object_mut() {
                o.remove("nearest");
                o.insert("fold".into(), serde_json::json!(fold));
            }
            gan_eval.push(v);
        }
    }
    arms.push((
        "real + augmentation + GAN".to_string(),
        crossval::crossval(
            &arm(true, Some(samples)),
            &out.join("gan-arm"),
            device,
            true,
        )?,
    ));
    let summary = AblationSummary { arms, gan_eval };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    crate::atomic::write_atomic(&out.join("ablation.json"), json.as_bytes())?;
    crate::atomic::write_atomic(&out.join("ablation.md"), summary.markdown().as_bytes())?;
    let bars: Vec<(&str, Vec<(f64, f64)>)> = summary
        .arms
        .iter()
        .map(|(name, s)| {
            (
                name.as_str(),
                COMPARED
                    .iter()
                    .map(|m| {
                        s.mean_std
                            .iter()
                            .find(|(k, _, _)| k == m)
                            .map_or((f64::NAN, 0.0), |(_, mean, std)| (*mean, *std))
                    })
                    .collect(),
            )
        })
        .collect();
    crate::plots::grouped_bars(
        &out.join("ablation.png"),
        "Training data ablation (test folds)",
        &COMPARED,
        &bars,
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the probe alone and one cached view, the augmentation arm would repeat the
    /// real-only arm: refused before any data is read.
    #[test]
    fn a_probe_without_augmented_views_is_refused() {
        use crate::models::Arch;
        use crate::train::Recipe;
        let mut config = AblateConfig {
            data: PathBuf::from("/nonexistent/data"),
            positive: "mpox".into(),
            folds: 5,
            split_seed: 0,
            fit: FitConfig::with_recipe(Arch::MobileNetV2 { width: 1.0 }, None, Recipe::Probe),
            gan: GanConfig::dcgan(10),
            synthetic_ratio: 1.0,
            feature_weights: None,
            only_folds: vec![],
            negatives: vec![],
            external: None,
        };
        let err = ablate(&config, Path::new("/nonexistent/out"), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("--probe-views"), "{err}");
        config.fit.probe_views = 4;
        let err = ablate(&config, Path::new("/nonexistent/out"), &Device::Cpu).unwrap_err();
        assert!(!err.to_string().contains("--probe-views"), "{err}");
    }

    fn summary(std: f64) -> CrossvalSummary {
        CrossvalSummary {
            arch: "mobilenet_v2".into(),
            folds: vec![0],
            mean_std: COMPARED.iter().map(|m| (m.to_string(), 0.5, std)).collect(),
            mean_std_at_half: Vec::new(),
            per_fold: Vec::new(),
            external_mean_std: Vec::new(),
            external_mean_std_at_half: Vec::new(),
            per_class: Vec::new(),
            seconds: 1.0,
        }
    }

    #[test]
    fn the_table_says_when_there_is_no_spread() {
        let s = AblationSummary {
            arms: vec![
                ("one".into(), summary(f64::NAN)),
                ("many".into(), summary(0.25)),
            ],
            gan_eval: Vec::new(),
        };
        let md = s.markdown();
        assert!(md.contains("| one | 0.500 (one fold) |"), "{md}");
        assert!(md.contains("| many | 0.500 ± 0.250 |"), "{md}");
        assert!(!md.contains("NaN"), "{md}");
    }
}
