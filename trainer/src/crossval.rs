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
    /// Wall time of this invocation in seconds.
    pub seconds: f64,
}

impl CrossvalSummary {
    /// The mean ± std table in Markdown.
    pub fn markdown(&self, title: &str) -> String {
        let mut md = format!(
            "# {title}\n\n{} folds, architecture {}. Metrics on each fold's test photos, at the \
             threshold chosen on its validation fold for sensitivity ≥ the target, and at p ≥ 0.5.\n\n\
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
        md.push_str("\n![ROC of every fold](roc.png)\n");
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
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let path = out.join("split.json");
    if path.exists() {
        let m = SplitManifest::load(&path)?;
        if m.folds != config.folds || m.seed != config.seed || m.positive != config.positive {
            return Err(Error::Invalid(format!(
                "{} was made with other settings ({} folds, seed {}, positive {:?}); choose another --out",
                path.display(),
                m.folds,
                m.seed,
                m.positive
            )));
        }
        return Ok(path);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let m = split::split(data, config)?;
    m.save(&path)?;
    eprintln!("{}", m.summary());
    Ok(path)
}

/// Trains (or resumes) and tests one fold; returns its report.
pub fn run_fold(
    config: &CrossvalConfig,
    split_path: &Path,
    fold: usize,
    dir: &Path,
    device: &Device,
    progress: bool,
) -> Result<EvalReport> {
    let eval_json = dir.join("eval").join("eval.json");
    if eval_json.exists() {
        let text = std::fs::read_to_string(&eval_json).map_err(|e| Error::io(&eval_json, e))?;
        return serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", eval_json.display())));
    }
    let source = DataSource {
        root: config.data.clone(),
        split: Some((split_path.to_path_buf(), fold)),
        positive: None,
        seed: config.fit.seed,
        synthetic: config.synthetic.as_ref().map(|s| s[fold].clone()),
        synthetic_ratio: config.synthetic_ratio,
    };
    let run = RunOptions {
        resume: dir.join(files::LAST).exists(),
        stop_after: None,
        progress,
    };
    eprintln!("== fold {fold}: training in {}", dir.display());
    let outcome = train::fit(&config.fit, &source, dir, device, &run)?;
    let screener = Screener::from_path(dir.join(files::MODEL), ScreenerOptions::default())?;
    let photos = evaluate::labelled_photos(
        &config.data,
        &screener.info().meta.labels,
        None,
        Some((split_path, fold)),
    )?;
    debug_assert_eq!(photos.len(), outcome.test.len());
    let report = evaluate::evaluate(&screener, &photos, progress)?;
    report.write(&dir.join("eval"), &format!("Fold {fold} test photos"))?;
    Ok(report)
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
    for &fold in &folds {
        let report = run_fold(
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
    }
    let summary = CrossvalSummary {
        arch: config.fit.arch.to_string(),
        folds: folds.clone(),
        mean_std: evaluate::aggregate(&reports, false)
            .into_iter()
            .map(|(k, m, s)| (k.to_string(), m, s))
            .collect(),
        mean_std_at_half: evaluate::aggregate(&reports, true)
            .into_iter()
            .map(|(k, m, s)| (k.to_string(), m, s))
            .collect(),
        per_fold: reports
            .iter()
            .zip(&folds)
            .map(|(r, f)| {
                let mut v: serde_json::Map<String, serde_json::Value> = r
                    .headline()
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                    .collect();
                v.insert("fold".into(), serde_json::json!(f));
                serde_json::Value::Object(v)
            })
            .collect(),
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
    Ok(summary)
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
