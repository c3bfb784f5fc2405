//! Evaluating an exported model through the SDK, on photos with known labels: the figures people
//! read (metrics, confusion matrix, calibration) as JSON, a Markdown report and PNG plots.
//!
//! Photos go through `Screener::screen` from their encoded bytes, exactly as on a phone, so the
//! numbers describe the shipped file rather than the training framework.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use mpox_sdk::Screener;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::metrics::{self, BinaryMetrics, ReliabilityBin, RocPoint, ECE_BINS};
use crate::split::SplitManifest;

/// One evaluated photo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scored {
    /// The photo.
    pub path: PathBuf,
    /// True label index (in the model's labels).
    pub truth: usize,
    /// Calibrated probability per label.
    pub probabilities: Vec<f64>,
    /// The SDK's verdict code.
    pub verdict: String,
}

/// Everything `eval` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// Model id (sha256 prefix) and architecture.
    pub model_id: String,
    /// Architecture from the model's metadata.
    pub arch: String,
    /// Labels in logit order.
    pub labels: Vec<String>,
    /// The positive label.
    pub positive_label: String,
    /// Binary metrics (positive label vs the rest) at the model's threshold.
    #[serde(flatten)]
    pub binary: BinaryMetrics,
    /// The same binary metrics at p ≥ 0.5 (the argmax of a two-class model), for comparison with
    /// papers that report accuracy without an operating point.
    #[serde(default)]
    pub at_half: Option<BinaryMetrics>,
    /// Multi-class confusion matrix (rows true, columns argmax).
    pub confusion_matrix: Vec<Vec<usize>>,
    /// ROC curve of the positive label.
    pub roc: Vec<RocPoint>,
    /// Reliability bins of the positive probability.
    pub reliability: Vec<ReliabilityBin>,
    /// Verdict counts: likely_mpox, uncertain, unlikely.
    pub verdicts: [usize; 3],
    /// Positives among uncertain verdicts (who would be referred).
    pub uncertain_positives: usize,
    /// Per photo.
    pub items: Vec<Scored>,
}

/// Photos with their true label indices, from a split fold or a whole folder.
pub fn labelled_photos(
    data: &Path,
    model_labels: &[String],
    positive: Option<&str>,
    split: Option<(&Path, usize)>,
) -> Result<Vec<(PathBuf, usize)>> {
    let index_of = |label: &str| -> Result<usize> {
        model_labels.iter().position(|l| l == label).ok_or_else(|| {
            Error::Invalid(format!(
                "label {label:?} is not one of the model's labels {model_labels:?} (use --positive for a binary model)"
            ))
        })
    };
    if let Some((path, fold)) = split {
        let m = SplitManifest::load(path)?;
        if fold >= m.folds {
            return Err(Error::Invalid(format!("the split has no fold {fold}")));
        }
        m.check_dataset(&Dataset::scan(data)?)?;
        let (_, test) = m.fold(fold);
        return test
            .into_iter()
            .map(|i| Ok((m.path_of(i), index_of(&i.label)?)))
            .collect();
    }
    let ds = Dataset::scan(data)?;
    ds.items
        .iter()
        .map(|item| {
            let class = ds.class_of(item);
            let label = match positive {
                Some(p) if class == p => "mpox",
                Some(_) => "not_mpox",
                None => class,
            };
            Ok((ds.path(item), index_of(label)?))
        })
        .collect()
}

/// Screens every photo and computes the report.
pub fn evaluate(
    screener: &Screener,
    photos: &[(PathBuf, usize)],
    progress: bool,
) -> Result<EvalReport> {
    if photos.is_empty() {
        return Err(Error::Invalid("no photos to evaluate".into()));
    }
    let meta = &screener.info().meta;
    let bar = if progress {
        let b = ProgressBar::new(photos.len() as u64);
        b.set_style(
            ProgressStyle::with_template("screening [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let items: Vec<Scored> = photos
        .par_iter()
        .map(|(path, truth)| {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let s = screener
                .screen(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            bar.inc(1);
            Ok(Scored {
                path: path.clone(),
                truth: *truth,
                probabilities: s
                    .probabilities
                    .iter()
                    .map(|c| f64::from(c.probability))
                    .collect(),
                verdict: s.verdict.code().into(),
            })
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let pos = meta.positive_index();
    let probs: Vec<f64> = items.iter().map(|s| s.probabilities[pos]).collect();
    let truth: Vec<bool> = items.iter().map(|s| s.truth == pos).collect();
    let binary = metrics::binary_metrics(&probs, &truth, f64::from(meta.threshold))?;
    let at_half = Some(metrics::binary_metrics(&probs, &truth, 0.5)?);
    let confusion_matrix = metrics::confusion_matrix(
        &items.iter().map(|s| s.truth).collect::<Vec<_>>(),
        &items
            .iter()
            .map(|s| metrics::argmax(&s.probabilities))
            .collect::<Vec<_>>(),
        meta.labels.len(),
    )?;
    let roc = metrics::roc_curve(&probs, &truth).unwrap_or_default();
    let reliability = metrics::reliability_bins(&probs, &truth, ECE_BINS)?;
    let mut verdicts = [0; 3];
    let mut uncertain_positives = 0;
    for (s, &t) in items.iter().zip(&truth) {
        let k = match s.verdict.as_str() {
            "likely_mpox" => 0,
            "uncertain" => 1,
            _ => 2,
        };
        verdicts[k] += 1;
        if k == 1 && t {
            uncertain_positives += 1;
        }
    }
    Ok(EvalReport {
        model_id: screener.info().model_id.clone(),
        arch: meta.arch.clone(),
        labels: meta.labels.clone(),
        positive_label: meta.positive_label.clone(),
        binary,
        at_half,
        confusion_matrix,
        roc,
        reliability,
        verdicts,
        uncertain_positives,
        items,
    })
}

/// The metric keys people compare across runs, in report order.
pub const HEADLINE: [&str; 7] = [
    "accuracy",
    "precision",
    "sensitivity",
    "specificity",
    "f1",
    "auc",
    "ece",
];

impl EvalReport {
    /// The headline metrics as `(name, value)`, at the model's operating point.
    pub fn headline(&self) -> [(&'static str, f64); 7] {
        Self::headline_of(&self.binary)
    }

    /// The headline metrics of one set of binary metrics.
    pub fn headline_of(b: &BinaryMetrics) -> [(&'static str, f64); 7] {
        [
            ("accuracy", b.accuracy),
            ("precision", b.precision),
            ("sensitivity", b.sensitivity),
            ("specificity", b.specificity),
            ("f1", b.f1),
            ("auc", b.auc),
            ("ece", b.ece),
        ]
    }

    /// The JSON people and scripts read (without the per-photo list).
    pub fn summary_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("report serialises");
        if let Some(o) = v.as_object_mut() {
            o.remove("items");
            o.remove("roc");
            o.remove("reliability");
        }
        v
    }

    /// A Markdown report with the plots `write` draws beside it.
    pub fn markdown(&self, title: &str) -> String {
        let b = &self.binary;
        let mut md = format!(
            "# {title}\n\nModel `{}` ({}), {} photos ({} {}), threshold {:.3}.\n\n\
             *A screening aid, not a diagnosis: these figures describe the photos evaluated, not a clinical population.*\n\n\
             | metric | value |\n|---|---|\n",
            self.model_id, self.arch, b.n, b.positives, self.positive_label, b.threshold
        );
        let half = self.at_half.as_ref().map(Self::headline_of);
        md = md.replace(
            "| metric | value |\n|---|---|\n",
            "| metric | at the threshold | at p ≥ 0.5 |\n|---|---|---|\n",
        );
        for (i, (k, v)) in self.headline().iter().enumerate() {
            let h = half.map_or("n/a".to_string(), |h| format!("{:.3}", h[i].1));
            md.push_str(&format!("| {k} | {v:.3} | {h} |\n"));
        }
        let c = &b.confusion;
        md.push_str(&format!(
            "\nAt the threshold: {} true positives, {} false negatives, {} true negatives, {} false positives.\n\n\
             Verdicts: {} likely mpox, {} uncertain (refer; {} of them positive), {} unlikely.\n\n",
            c.tp, c.fn_, c.tn, c.fp, self.verdicts[0], self.verdicts[1], self.uncertain_positives, self.verdicts[2]
        ));
        md.push_str("## Confusion matrix (rows: truth, columns: most probable label)\n\n|  |");
        for l in &self.labels {
            md.push_str(&format!(" {l} |"));
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(self.labels.len()));
        md.push('\n');
        for (l, row) in self.labels.iter().zip(&self.confusion_matrix) {
            md.push_str(&format!("| **{l}** |"));
            for v in row {
                md.push_str(&format!(" {v} |"));
            }
            md.push('\n');
        }
        md.push_str(
            "\n![ROC](roc.png)\n![Reliability](reliability.png)\n![Confusion](confusion.png)\n",
        );
        md
    }

    /// Writes `report.md`, `eval.json` (with every photo) and the plots into `dir`.
    pub fn write(&self, dir: &Path, title: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self).expect("report serialises");
        crate::atomic::write_atomic(&dir.join("eval.json"), json.as_bytes())?;
        crate::atomic::write_atomic(&dir.join("report.md"), self.markdown(title).as_bytes())?;
        if !self.roc.is_empty() {
            crate::plots::roc_plot(&dir.join("roc.png"), title, &[("ROC", self.roc.clone())])?;
        }
        crate::plots::reliability_diagram(
            &dir.join("reliability.png"),
            "Reliability",
            &self.reliability,
        )?;
        crate::plots::confusion_heatmap(
            &dir.join("confusion.png"),
            "Confusion matrix",
            &self.labels,
            &self.confusion_matrix,
        )?;
        Ok(())
    }
}

/// `mean ± std` of each headline metric over folds, skipping NaNs; with `at_half`, of the
/// metrics at p ≥ 0.5 instead of at the operating point.
pub fn aggregate(reports: &[EvalReport], at_half: bool) -> Vec<(&'static str, f64, f64)> {
    HEADLINE
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let values: Vec<f64> = reports
                .iter()
                .filter_map(|r| {
                    let b = if at_half {
                        r.at_half.as_ref()?
                    } else {
                        &r.binary
                    };
                    Some(EvalReport::headline_of(b)[k].1)
                })
                .filter(|v| v.is_finite())
                .collect();
            let (m, s) = metrics::mean_std(&values);
            (*name, m, s)
        })
        .collect()
}
