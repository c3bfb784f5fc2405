//! Does GAN data help? The same duplicate-aware folds, several training sets:
//! (a) real photos only, (b) real photos with classic augmentation, (c) real photos with classic
//! augmentation plus GAN photos, at one or more ratios to the real photos of the positive class,
//! generated per fold by a GAN trained on that fold's training photos of that class only. Each
//! arm is tested on the real photos of every test fold (and on the external set when given), and
//! each GAN arm is compared with the augmentation arm fold by fold (paired differences).

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::crossval::{self, CrossvalConfig, CrossvalSummary};
use crate::error::{Error, Result};
use crate::gan::folds::FoldGan;
use crate::gan::sample::Sampling;
use crate::gan::train::GanConfig;
use crate::metrics::{paired_difference, PairedDifference, Verdict};
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
    /// How the folds' photos are drawn.
    pub sampling: Sampling,
    /// Generated photos per real training photo of the positive class: one GAN arm per ratio
    /// (the photos are sampled once, for the largest, and each arm takes its share).
    pub synthetic_ratios: Vec<f64>,
    /// ImageNet MobileNetV2 weights for the GAN's Fréchet distance and KID (optional).
    pub feature_weights: Option<PathBuf>,
    /// Run only these folds (all when empty): a GAN per fold is the costly part.
    pub only_folds: Vec<usize>,
    /// Extra folders of negatives, split into the same folds.
    pub negatives: Vec<PathBuf>,
    /// External validation set (chooses epochs and operating points; reported per fold).
    pub external: Option<PathBuf>,
}

/// The arms' results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblationSummary {
    /// (arm name, cross-validation summary).
    pub arms: Vec<(String, CrossvalSummary)>,
    /// Per fold, the GAN's evaluation (when feature weights were given).
    pub gan_eval: Vec<serde_json::Value>,
    /// Each GAN arm against the augmentation arm, fold by fold: `(arm, set, metric, difference)`
    /// with set `test` or `external`.
    #[serde(default)]
    pub paired: Vec<(String, String, String, PairedDifference)>,
}

/// The metrics compared across arms.
pub const COMPARED: [&str; 4] = ["f1", "sensitivity", "specificity", "auc"];

/// Name of the arm every GAN arm is compared with.
const BASELINE: &str = "real + augmentation";

/// Per-fold values of `metric` in a summary's per-fold rows.
fn fold_values(rows: &[serde_json::Value], metric: &str) -> Vec<(u64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r["fold"].as_u64()?, r[metric].as_f64().unwrap_or(f64::NAN))))
        .collect()
}

/// Paired differences of every GAN arm against [`BASELINE`] on the folds both ran.
fn paired(arms: &[(String, CrossvalSummary)]) -> Vec<(String, String, String, PairedDifference)> {
    let Some((_, base)) = arms.iter().find(|(n, _)| n == BASELINE) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, arm) in arms.iter().filter(|(n, _)| n.contains("GAN")) {
        for (set, a, b) in [
            ("test", &base.per_fold, &arm.per_fold),
            ("external", &base.external_per_fold, &arm.external_per_fold),
        ] {
            if a.is_empty() || b.is_empty() {
                continue;
            }
            for m in COMPARED {
                let (a, b) = (fold_values(a, m), fold_values(b, m));
                let (x, y): (Vec<f64>, Vec<f64>) = a
                    .iter()
                    .filter_map(|(f, va)| b.iter().find(|(g, _)| g == f).map(|(_, vb)| (*va, *vb)))
                    .unzip();
                out.push((
                    name.clone(),
                    set.to_string(),
                    m.to_string(),
                    paired_difference(&x, &y),
                ));
            }
        }
    }
    out
}

/// `mean ± std` (or the one fold's value) of `metric` in `rows`.
fn cell(rows: &[(String, f64, f64)], metric: &str) -> String {
    match rows.iter().find(|(k, _, _)| k == metric) {
        None => "–".into(),
        Some((_, mean, std)) if std.is_finite() => format!("{mean:.3} ± {std:.3}"),
        Some((_, mean, _)) => format!("{mean:.3} (one fold)"),
    }
}

impl AblationSummary {
    /// The comparison tables in Markdown: the arms on the test folds and on the external set,
    /// then the paired differences against the augmentation arm.
    pub fn markdown(&self) -> String {
        let external = self
            .arms
            .iter()
            .any(|(_, s)| !s.external_mean_std.is_empty());
        let mut md = String::from("| training data |");
        for m in COMPARED {
            md.push_str(&format!(" {m} |"));
        }
        if external {
            for m in COMPARED {
                md.push_str(&format!(" external {m} |"));
            }
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(COMPARED.len() * if external { 2 } else { 1 }));
        md.push('\n');
        for (name, s) in &self.arms {
            md.push_str(&format!("| {name} |"));
            for m in COMPARED {
                md.push_str(&format!(" {} |", cell(&s.mean_std, m)));
            }
            if external {
                for m in COMPARED {
                    md.push_str(&format!(" {} |", cell(&s.external_mean_std, m)));
                }
            }
            md.push('\n');
        }
        if !self.paired.is_empty() {
            md.push_str(&format!(
                "\nPaired per-fold differences against \"{BASELINE}\" (mean, 95 % t-interval):\n\n\
                 | arm | set | metric | folds | difference | 95 % interval | reading |\n\
                 |---|---|---|---|---|---|---|\n"
            ));
            for (arm, set, metric, d) in &self.paired {
                let interval = if d.ci95.0.is_finite() {
                    format!("{:+.3} to {:+.3}", d.ci95.0, d.ci95.1)
                } else {
                    "–".into()
                };
                let reading = match d.verdict {
                    Verdict::Helps => "helps",
                    Verdict::Hurts => "hurts",
                    Verdict::NoDifference => "no difference",
                    Verdict::TooFewFolds => "one fold: no test",
                };
                md.push_str(&format!(
                    "| {arm} | {set} | {metric} | {} | {:+.3} | {interval} | {reading} |\n",
                    d.folds, d.mean
                ));
            }
        }
        md
    }
}

/// Runs the three arms into `out` (resumable: finished folds and GANs are reused).
pub fn ablate(config: &AblateConfig, out: &Path, device: &Device) -> Result<AblationSummary> {
    config.fit.validate()?;
    config.gan.validate()?;
    if config.synthetic_ratios.is_empty()
        || config
            .synthetic_ratios
            .iter()
            .any(|r| r.is_nan() || *r <= 0.0)
    {
        return Err(Error::Invalid(format!(
            "--synthetic-ratios {:?}: give one or more positive ratios",
            config.synthetic_ratios
        )));
    }
    if config.fit.epochs == 0 && config.fit.probe_views < 2 {
        // The probe alone sees augmentation only through its extra cached views.
        return Err(Error::Invalid(
            "ablate: with --recipe probe the augmentation arm would equal the real-only arm; \
             pass --probe-views 2 or more (or a recipe that fine-tunes)"
                .into(),
        ));
    }
    config.sampling.check()?.check_selectable(
        config
            .feature_weights
            .as_deref()
            .or(config.gan.features.as_deref()),
    )?;
    let split_config = SplitConfig {
        folds: config.folds,
        seed: config.split_seed,
        positive: Some(config.positive.clone()),
        negatives: config.negatives.clone(),
        ..Default::default()
    };
    let split = crossval::ensure_split(&config.data, None, out, &split_config)?;
    let arm = |augment: bool, synthetic: Option<(Vec<PathBuf>, f64)>| {
        let mut fit = config.fit.clone();
        if !augment {
            fit.augment = None;
        }
        let (synthetic, synthetic_ratio) = match synthetic {
            Some((dirs, ratio)) => (Some(dirs), ratio),
            None => (None, 0.0),
        };
        CrossvalConfig {
            data: config.data.clone(),
            split: Some(split.clone()),
            folds: config.folds,
            split_seed: config.split_seed,
            positive: Some(config.positive.clone()),
            fit,
            synthetic,
            synthetic_ratio,
            only_folds: config.only_folds.clone(),
            negatives: config.negatives.clone(),
            external: config.external.clone(),
        }
    };
    let mut arms = Vec::new();
    for (name, dir, augment) in [("real only", "real", false), (BASELINE, "augment", true)] {
        eprintln!("=== arm: {name}");
        arms.push((
            name.to_string(),
            crossval::crossval(&arm(augment, None), &out.join(dir), device, true)?,
        ));
    }
    let largest = config.synthetic_ratios.iter().cloned().fold(0.0, f64::max);
    let fold_gan = FoldGan {
        config: &config.gan,
        data: &config.data,
        class: &config.positive,
        split: &split,
        ratio: largest,
        sampling: config.sampling,
        eval_weights: config
            .feature_weights
            .as_deref()
            .or(config.gan.features.as_deref()),
    };
    let folds = SplitManifest::load(&split)?.folds;
    let mut samples = Vec::with_capacity(folds);
    let mut gan_eval = Vec::new();
    for fold in 0..folds {
        if !config.only_folds.is_empty() && !config.only_folds.contains(&fold) {
            // Never read: crossval runs only the selected folds.
            samples.push(out.join("gan").join(format!("fold-{fold}")));
            continue;
        }
        let s = fold_gan.run(fold, &out.join("gan"), device)?;
        if let Some(r) = &s.eval {
            let mut v = r.summary();
            if let Some(o) = v.as_object_mut() {
                o.insert("fold".into(), serde_json::json!(fold));
            }
            gan_eval.push(v);
        }
        samples.push(s.dir);
    }
    for &ratio in &config.synthetic_ratios {
        let name = format!("real + augmentation + GAN ×{ratio}");
        eprintln!("=== arm: {name}");
        arms.push((
            name,
            crossval::crossval(
                &arm(true, Some((samples.clone(), ratio))),
                &out.join(format!("gan-arm-{ratio}")),
                device,
                true,
            )?,
        ));
    }
    let summary = AblationSummary {
        paired: paired(&arms),
        arms,
        gan_eval,
    };
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
    /// real-only arm, and selection without feature weights cannot run: both refused before any
    /// data is read.
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
            sampling: Sampling::default(),
            synthetic_ratios: vec![1.0],
            feature_weights: None,
            only_folds: vec![],
            negatives: vec![],
            external: None,
        };
        let err = ablate(&config, Path::new("/nonexistent/out"), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("--probe-views"), "{err}");
        config.fit.probe_views = 4;
        // Nor, without feature weights, can the GAN's photos be kept from a larger draw.
        let err = ablate(&config, Path::new("/nonexistent/out"), &Device::Cpu).unwrap_err();
        let wanted = format!("--select-from {}", crate::gan::sample::SELECT_FROM);
        assert!(err.to_string().contains(&wanted), "{err}");
        config.sampling.select_from = 1;
        let err = ablate(&config, Path::new("/nonexistent/out"), &Device::Cpu).unwrap_err();
        assert!(!err.to_string().contains("--probe-views"), "{err}");
        assert!(!err.to_string().contains("--select-from"), "{err}");
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
            external_per_fold: Vec::new(),
            per_class: Vec::new(),
            seconds: 1.0,
        }
    }

    fn with_folds(f1: &[f64], external_f1: &[f64]) -> CrossvalSummary {
        let rows = |v: &[f64]| -> Vec<serde_json::Value> {
            v.iter()
                .enumerate()
                .map(|(i, x)| serde_json::json!({"fold": i, "f1": x, "auc": 0.9}))
                .collect()
        };
        let mut s = summary(0.1);
        s.per_fold = rows(f1);
        s.external_per_fold = rows(external_f1);
        s.external_mean_std = vec![("f1".into(), 0.5, 0.1)];
        s
    }

    #[test]
    fn gan_arms_are_compared_fold_by_fold_with_the_augmentation_arm() {
        let arms = vec![
            ("real only".to_string(), with_folds(&[0.1; 5], &[0.1; 5])),
            (
                BASELINE.to_string(),
                with_folds(&[0.80, 0.70, 0.90, 0.85, 0.75], &[0.6, 0.6, 0.6, 0.6, 0.6]),
            ),
            (
                "real + augmentation + GAN ×1".to_string(),
                with_folds(
                    &[0.82, 0.73, 0.91, 0.87, 0.77],
                    &[0.5, 0.52, 0.49, 0.51, 0.5],
                ),
            ),
        ];
        let p = paired(&arms);
        let find = |set: &str, metric: &str| {
            p.iter()
                .find(|(_, s, m, _)| s == set && m == metric)
                .map(|(arm, _, _, d)| (arm.clone(), *d))
                .unwrap()
        };
        let (arm, test_f1) = find("test", "f1");
        assert_eq!(arm, "real + augmentation + GAN ×1");
        assert!((test_f1.mean - 0.02).abs() < 1e-12);
        assert_eq!(test_f1.verdict, Verdict::Helps);
        assert_eq!(find("external", "f1").1.verdict, Verdict::Hurts);
        assert_eq!(find("test", "auc").1.verdict, Verdict::NoDifference);
        // Only GAN arms are compared, each on both sets and every compared metric.
        assert_eq!(p.len(), 2 * COMPARED.len());
        let md = AblationSummary {
            arms,
            gan_eval: Vec::new(),
            paired: p,
        }
        .markdown();
        assert!(md.contains("| external f1 |"), "{md}");
        assert!(
            md.contains("| real + augmentation + GAN ×1 | test | f1 | 5 | +0.020 |"),
            "{md}"
        );
        assert!(md.contains("| helps |") && md.contains("| hurts |"), "{md}");
    }

    #[test]
    fn the_table_says_when_there_is_no_spread() {
        let s = AblationSummary {
            arms: vec![
                ("one".into(), summary(f64::NAN)),
                ("many".into(), summary(0.25)),
            ],
            gan_eval: Vec::new(),
            paired: Vec::new(),
        };
        let md = s.markdown();
        assert!(md.contains("| one | 0.500 (one fold) |"), "{md}");
        assert!(md.contains("| many | 0.500 ± 0.250 |"), "{md}");
        assert!(!md.contains("NaN"), "{md}");
    }
}
