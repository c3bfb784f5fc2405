//! k-fold cross-validation on duplicate-aware folds, and the end-to-end pipeline.
//!
//! Each fold trains on k−2 folds, validates (early stopping, calibration) on the next fold and is
//! tested on its own fold through the SDK, so no photo (or near-copy of it) is ever seen in
//! training and testing. Folds are resumable: a finished fold is read back, an interrupted one
//! continues from its last checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use mpox_sdk::{Screener, ScreenerOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::evaluate::{self, EvalReport};
use crate::split::{self, SplitConfig, SplitManifest};
use crate::train::data::DataSource;
use crate::train::{self, files, FitConfig, RunOptions};

/// File in a fold's folder naming (by checkpoint sha256) the generator of its synthetic photos.
pub const SYNTHETIC_STAMP: &str = "synthetic-generator.sha256";

/// A cross-validation run.
#[derive(Clone, Debug)]
pub struct CrossvalConfig {
    /// ImageFolder root.
    pub data: PathBuf,
    /// An existing split manifest; else one is made (and saved) with `folds`, `seed`, `positive`.
    pub split: Option<PathBuf>,
    /// Number of folds for a new split.
    pub folds: usize,
    /// Seed of a new split.
    pub split_seed: u64,
    /// Positive class for a new split.
    pub positive: Option<String>,
    /// Training settings of every fold.
    pub fit: FitConfig,
    /// Per fold, a folder of synthetic training photos (GAN arm of the ablation).
    pub synthetic: Option<Vec<PathBuf>>,
    /// Synthetic photos per real training photo.
    pub synthetic_ratio: f64,
    /// Only these folds (all when empty).
    pub only_folds: Vec<usize>,
    /// Extra folders of negatives for a new split (a given split names its own).
    pub negatives: Vec<PathBuf>,
    /// External validation set: chooses each fold's epoch and operating point, and is screened
    /// by each fold's exported model.
    pub external: Option<PathBuf>,
}

/// Per-fold results and their mean ± std.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrossvalSummary {
    /// Architecture.
    pub arch: String,
    /// Folds evaluated.
    pub folds: Vec<usize>,
    /// `(metric, mean, std)` over folds, at each fold's calibrated operating point.
    pub mean_std: Vec<(String, f64, f64)>,
    /// The same at p ≥ 0.5.
    #[serde(default)]
    pub mean_std_at_half: Vec<(String, f64, f64)>,
    /// Per fold, the headline metrics.
    pub per_fold: Vec<serde_json::Value>,
    /// `(metric, mean, std)` over folds on the external validation set, at each fold's
    /// operating point (empty without one).
    #[serde(default)]
    pub external_mean_std: Vec<(String, f64, f64)>,
    /// The same at p ≥ 0.5.
    #[serde(default)]
    pub external_mean_std_at_half: Vec<(String, f64, f64)>,
    /// Per fold, the headline metrics on the external validation set (empty without one).
    #[serde(default)]
    pub external_per_fold: Vec<serde_json::Value>,
    /// Verdict rates per class over every fold's test photos together (extra negatives'
    /// conditions among them).
    #[serde(default)]
    pub per_class: Vec<crate::evaluate::ClassRates>,
    /// Wall time of this invocation in seconds.
    pub seconds: f64,
}

impl CrossvalSummary {
    /// The mean ± std table in Markdown.
    pub fn markdown(&self, title: &str) -> String {
        let mut md = format!(
            "# {title}\n\n{} folds, architecture {}. Metrics on each fold's test photos, at the \
             threshold chosen for sensitivity ≥ the target on its validation fold (on the external \
             set when there is one), and at p ≥ 0.5.\n\n\
             | metric | at the operating point | at p ≥ 0.5 |\n|---|---|---|\n",
            self.folds.len(),
            self.arch
        );
        for (i, (k, m, s)) in self.mean_std.iter().enumerate() {
            let half = self
                .mean_std_at_half
                .get(i)
                .map_or("n/a".to_string(), |(_, m, s)| format!("{m:.3} ± {s:.3}"));
            md.push_str(&format!("| {k} | {m:.3} ± {s:.3} | {half} |\n"));
        }
        if !self.external_mean_std.is_empty() {
            md.push_str(
                "\n## External validation set\n\nEach fold's model on the external set (which, with the \
                 internal validation fold, chose its epoch, and alone its operating point):\n\n| metric | at the operating point | at p ≥ 0.5 |\n|---|---|---|\n",
            );
            for (i, (k, m, s)) in self.external_mean_std.iter().enumerate() {
                let half = self
                    .external_mean_std_at_half
                    .get(i)
                    .map_or("n/a".to_string(), |(_, m, s)| format!("{m:.3} ± {s:.3}"));
                md.push_str(&format!("| {k} | {m:.3} ± {s:.3} | {half} |\n"));
            }
        }
        if self.per_class.len() > 1 {
            md.push('\n');
            md.push_str(
                &crate::evaluate::EvalReport::class_rates_markdown(&self.per_class).replace(
                    "## Verdicts per class",
                    "## Verdicts per class, all test folds",
                ),
            );
        }
        md.push_str("\n![ROC of every fold](roc.png)\n");
        if self.per_class.len() > 1 {
            md.push_str("![Verdicts per class](per_class.png)\n");
        }
        md
    }
}

/// The split manifest of a run folder: the given one, or one made from the data.
pub fn ensure_split(
    data: &Path,
    given: Option<&Path>,
    out: &Path,
    config: &SplitConfig,
) -> Result<PathBuf> {
    ensure_split_with(data, given, out, config, None)
}

/// [`ensure_split`], splitting an inspection already made (by `pipeline`'s audit) when a new
/// split is needed.
pub fn ensure_split_with(
    data: &Path,
    given: Option<&Path>,
    out: &Path,
    config: &SplitConfig,
    inspection: Option<&crate::audit::Inspection>,
) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let path = out.join("split.json");
    let negatives: Vec<String> = config
        .negatives
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if path.exists() {
        let m = SplitManifest::load(&path)?;
        if m.folds != config.folds
            || m.seed != config.seed
            || m.positive != config.positive
            || m.negatives != negatives
        {
            return Err(Error::Invalid(format!(
                "{} was made with other settings ({} folds, seed {}, positive {:?}, negatives {:?}); choose another --out",
                path.display(),
                m.folds,
                m.seed,
                m.positive,
                m.negatives
            )));
        }
        return Ok(path);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let m = match inspection {
        Some(ins) => split::split_inspected(ins, config)?,
        None => split::split(data, config)?,
    };
    m.save(&path)?;
    eprintln!("{}", m.summary());
    Ok(path)
}

/// One fold's reports: its test photos, and the external validation set if any.
#[derive(Clone, Debug)]
pub struct FoldReports {
    /// The fold's test photos.
    pub test: EvalReport,
    /// The external validation set.
    pub external: Option<EvalReport>,
}

fn read_report(path: &Path) -> Result<EvalReport> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Trains (or resumes) and tests one fold; returns its reports (test fold, external set).
pub fn run_fold(
    config: &CrossvalConfig,
    split_path: &Path,
    fold: usize,
    dir: &Path,
    device: &Device,
    progress: bool,
) -> Result<FoldReports> {
    let eval_json = dir.join("eval").join("eval.json");
    let external_json = dir.join("eval-external").join("eval.json");
    let external_done = config.external.is_none() || external_json.exists();
    // The fold's synthetic photos are named by a path, so what made them (generator, latent scale)
    // is recorded beside the run: photos sampled again (a GAN trained further, another latent
    // scale) start the fold over.
    let generator = match &config.synthetic {
        Some(s) => Some(crate::gan::sample::read_manifest(&s[fold])?.origin()),
        None => None,
    };
    let stamp = dir.join(SYNTHETIC_STAMP);
    let recorded = std::fs::read_to_string(&stamp).ok();
    // A fold from before the stamp has none: taken as made from the photos there now.
    if let (Some(now), Some(then)) = (&generator, &recorded) {
        if now != then.trim() {
            eprintln!(
                "== fold {fold}: its synthetic photos were sampled again since it ran; starting it over"
            );
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    if eval_json.exists() && external_done {
        return Ok(FoldReports {
            test: read_report(&eval_json)?,
            external: config
                .external
                .as_ref()
                .map(|_| read_report(&external_json))
                .transpose()?,
        });
    }
    let source = DataSource {
        root: config.data.clone(),
        split: Some((split_path.to_path_buf(), fold)),
        positive: None,
        seed: config.fit.seed,
        synthetic: config.synthetic.as_ref().map(|s| s[fold].clone()),
        synthetic_ratio: config.synthetic_ratio,
        negatives: Vec::new(),
        external: config.external.clone(),
    };
    if let Some(generator) = &generator {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::atomic::write_atomic(&stamp, generator.as_bytes())?;
    }
    let run = RunOptions {
        resume: dir.join(files::LAST).exists(),
        stop_after: None,
        progress,
    };
    // A fold with a model still goes through `fit`: resuming a finished run only redoes its
    // ending (calibration, export, curves), which a kill after the model was written cut short.
    eprintln!("== fold {fold}: training in {}", dir.display());
    train::fit(&config.fit, &source, dir, device, &run)?;
    let screener = Screener::from_path(dir.join(files::MODEL), ScreenerOptions::default())?;
    let labels = &screener.info().meta.labels;
    let photos = evaluate::labelled_photos(&config.data, labels, None, Some((split_path, fold)))?;
    let test = evaluate::evaluate(&screener, &photos, progress)?;
    test.write(
        &dir.join("eval-test-tmp"),
        &format!("Fold {fold} test photos"),
    )?;
    let external = match &config.external {
        Some(ext) => {
            let positive = SplitManifest::load(split_path)?.positive;
            let photos = evaluate::labelled_photos(ext, labels, positive.as_deref(), None)?;
            let report = evaluate::evaluate(&screener, &photos, progress)?;
            report.write(
                &dir.join("eval-external"),
                &format!(
                    "Fold {fold} model on the external validation set {}",
                    ext.display()
                ),
            )?;
            Some(report)
        }
        None => None,
    };
    // The test report is moved into place last: its presence marks the fold as finished.
    let done = dir.join("eval");
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(|e| Error::io(&done, e))?;
    }
    std::fs::rename(dir.join("eval-test-tmp"), &done).map_err(|e| Error::io(&done, e))?;
    Ok(FoldReports { test, external })
}

/// Runs every fold and writes `crossval.json`, `crossval.md` and `roc.png` into `out`.
pub fn crossval(
    config: &CrossvalConfig,
    out: &Path,
    device: &Device,
    progress: bool,
) -> Result<CrossvalSummary> {
    config.fit.validate()?;
    let start = Instant::now();
    let split_config = SplitConfig {
        folds: config.folds,
        seed: config.split_seed,
        positive: config.positive.clone(),
        ..Default::default()
    };
    let split_config = SplitConfig {
        negatives: config.negatives.clone(),
        ..split_config
    };
    let split_path = ensure_split(&config.data, config.split.as_deref(), out, &split_config)?;
    let manifest = SplitManifest::load(&split_path)?;
    let folds: Vec<usize> = if config.only_folds.is_empty() {
        (0..manifest.folds).collect()
    } else {
        config.only_folds.clone()
    };
    if let Some(bad) = folds.iter().find(|&&f| f >= manifest.folds) {
        return Err(Error::Invalid(format!(
            "fold {bad} does not exist: the split has folds 0..{}",
            manifest.folds
        )));
    }
    if let Some(s) = &config.synthetic {
        if s.len() != manifest.folds {
            return Err(Error::Invalid(format!(
                "{} synthetic folders for {} folds",
                s.len(),
                manifest.folds
            )));
        }
    }
    let mut reports = Vec::new();
    let mut externals = Vec::new();
    for &fold in &folds {
        let FoldReports {
            test: report,
            external,
        } = run_fold(
            config,
            &split_path,
            fold,
            &out.join(format!("fold-{fold}")),
            device,
            progress,
        )?;
        eprintln!(
            "fold {fold}: {}",
            report
                .headline()
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        reports.push(report);
        externals.extend(external);
    }
    let summary = CrossvalSummary {
        arch: config.fit.arch.to_string(),
        folds: folds.clone(),
        mean_std: owned(evaluate::aggregate(&reports, false)),
        mean_std_at_half: owned(evaluate::aggregate(&reports, true)),
        per_fold: per_fold(&reports, &folds),
        external_per_fold: if externals.len() == reports.len() {
            per_fold(&externals, &folds)
        } else {
            Vec::new()
        },
        external_mean_std: owned(evaluate::aggregate(&externals, false)),
        external_mean_std_at_half: owned(evaluate::aggregate(&externals, true)),
        per_class: pooled_class_rates(&reports),
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    crate::atomic::write_atomic(&out.join("crossval.json"), json.as_bytes())?;
    let title = format!("{}-fold cross-validation, {}", manifest.folds, summary.arch);
    crate::atomic::write_atomic(
        &out.join("crossval.md"),
        summary.markdown(&title).as_bytes(),
    )?;
    let curves: Vec<(String, Vec<crate::metrics::RocPoint>)> = reports
        .iter()
        .zip(&folds)
        .filter(|(r, _)| !r.roc.is_empty())
        .map(|(r, f)| (format!("fold {f}"), r.roc.clone()))
        .collect();
    if !curves.is_empty() {
        let named: Vec<(&str, Vec<crate::metrics::RocPoint>)> = curves
            .iter()
            .map(|(n, c)| (n.as_str(), c.clone()))
            .collect();
        crate::plots::roc_plot(&out.join("roc.png"), &title, &named)?;
    }
    if summary.per_class.len() > 1 {
        crate::plots::class_verdicts(
            &out.join("per_class.png"),
            &format!("{title}: verdicts per class, all test folds"),
            &summary.per_class,
        )?;
    }
    Ok(summary)
}

/// Each report's headline metrics with its fold number.
fn per_fold(reports: &[EvalReport], folds: &[usize]) -> Vec<serde_json::Value> {
    reports
        .iter()
        .zip(folds)
        .map(|(r, f)| {
            let mut v: serde_json::Map<String, serde_json::Value> = r
                .headline()
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect();
            v.insert("fold".into(), serde_json::json!(f));
            serde_json::Value::Object(v)
        })
        .collect()
}

fn owned(rows: Vec<(&'static str, f64, f64)>) -> Vec<(String, f64, f64)> {
    rows.into_iter()
        .map(|(k, m, s)| (k.to_string(), m, s))
        .collect()
}

/// Verdict rates per class over the test photos of every fold together (each fold's verdicts
/// at its own operating point).
fn pooled_class_rates(reports: &[EvalReport]) -> Vec<crate::evaluate::ClassRates> {
    let mut classes: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.per_class.iter().map(|c| c.class.as_str()))
        .collect();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .map(|class| {
            let of: Vec<&crate::evaluate::ClassRates> = reports
                .iter()
                .flat_map(|r| r.per_class.iter().filter(|c| c.class == class))
                .collect();
            let n: usize = of.iter().map(|c| c.photos).sum();
            let share = |f: fn(&crate::evaluate::ClassRates) -> f64| {
                of.iter().map(|c| f(c) * c.photos as f64).sum::<f64>() / n.max(1) as f64
            };
            crate::evaluate::ClassRates {
                class: class.to_string(),
                positive: of.iter().all(|c| c.positive),
                photos: n,
                likely_mpox: share(|c| c.likely_mpox),
                uncertain: share(|c| c.uncertain),
                unlikely: share(|c| c.unlikely),
                at_threshold: share(|c| c.at_threshold),
                at_half: share(|c| c.at_half),
            }
        })
        .collect()
}

/// Prints a mean ± std table to stdout.
pub fn print_table(summary: &CrossvalSummary) {
    println!(
        "| metric ({} folds) | at the operating point | at p ≥ 0.5 |",
        summary.folds.len()
    );
    println!("|---|---|---|");
    for (i, (k, m, s)) in summary.mean_std.iter().enumerate() {
        let half = summary
            .mean_std_at_half
            .get(i)
            .map_or("n/a".to_string(), |(_, m, s)| format!("{m:.3} ± {s:.3}"));
        println!("| {k} | {m:.3} ± {s:.3} | {half} |");
    }
}
