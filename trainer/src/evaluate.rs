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

/// A photo to evaluate: where it is, its true label index (in the model's labels) and its class
/// folder (the condition, for per-class rates).
#[derive(Clone, Debug, PartialEq)]
pub struct Photo {
    /// The file.
    pub path: PathBuf,
    /// True label index.
    pub truth: usize,
    /// Class folder (for extra negatives, `<folder>/<condition>`).
    pub class: String,
}

/// One evaluated photo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scored {
    /// The photo.
    pub path: PathBuf,
    /// Its class folder.
    #[serde(default)]
    pub class: String,
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
    /// Verdict rates per class folder (condition), in class order.
    #[serde(default)]
    pub per_class: Vec<ClassRates>,
    /// Per photo.
    pub items: Vec<Scored>,
}

/// How one class folder (condition) fared: its photos' verdicts and how many reach the threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassRates {
    /// Class folder.
    pub class: String,
    /// Whether its photos are positive (mpox).
    pub positive: bool,
    /// Photos.
    pub photos: usize,
    /// Share with the verdict `likely_mpox`.
    pub likely_mpox: f64,
    /// Share with the verdict `uncertain`.
    pub uncertain: f64,
    /// Share with the verdict `unlikely`.
    pub unlikely: f64,
    /// Share at or above the threshold (sensitivity of a positive class, false-positive rate of
    /// a negative one).
    pub at_threshold: f64,
    /// Share at p ≥ 0.5.
    pub at_half: f64,
}

/// Verdict rates per class, from scored photos (classes in first-seen order of a sorted list).
pub fn class_rates(items: &[Scored], pos: usize, threshold: f64) -> Vec<ClassRates> {
    let mut classes: Vec<&str> = items.iter().map(|s| s.class.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .map(|class| {
            let of: Vec<&Scored> = items.iter().filter(|s| s.class == class).collect();
            let n = of.len() as f64;
            let share = |f: &dyn Fn(&Scored) -> bool| of.iter().filter(|s| f(s)).count() as f64 / n;
            ClassRates {
                class: class.to_string(),
                positive: of.iter().all(|s| s.truth == pos),
                photos: of.len(),
                likely_mpox: share(&|s| s.verdict == "likely_mpox"),
                uncertain: share(&|s| s.verdict == "uncertain"),
                unlikely: share(&|s| s.verdict == "unlikely"),
                at_threshold: share(&|s| s.probabilities[pos] >= threshold),
                at_half: share(&|s| s.probabilities[pos] >= 0.5),
            }
        })
        .collect()
}

/// Photos with their true label indices, from a split fold or a whole folder (`positive` names
/// the class folder that is `mpox` for a binary model; the others are `not_mpox`).
pub fn labelled_photos(
    data: &Path,
    model_labels: &[String],
    positive: Option<&str>,
    split: Option<(&Path, usize)>,
) -> Result<Vec<Photo>> {
    let index_of = |label: &str| -> Result<usize> {
        model_labels.iter().position(|l| l == label).ok_or_else(|| {
            Error::Invalid(format!(
                "label {label:?} is not one of the model's labels {model_labels:?} (use --positive for a binary model)"
            ))
        })
    };
    if let Some((path, fold)) = split {
        let parts = SplitManifest::open(path, data, fold)?;
        return parts
            .test()
            .into_iter()
            .map(|i| {
                Ok(Photo {
                    path: parts.manifest.path_of(i),
                    truth: index_of(&i.label)?,
                    class: i.class.clone(),
                })
            })
            .collect();
    }
    let ds = Dataset::scan(data)?;
    if let Some(p) = positive {
        if !ds.classes.iter().any(|c| c == p) {
            return Err(Error::Invalid(format!(
                "--positive {p:?} is not a class folder of {} (classes: {})",
                data.display(),
                ds.classes.join(", ")
            )));
        }
    }
    ds.items
        .iter()
        .map(|item| {
            let class = ds.class_of(item);
            let label = match positive {
                Some(p) if class == p => "mpox",
                Some(_) => "not_mpox",
                None => class,
            };
            Ok(Photo {
                path: ds.path(item),
                truth: index_of(label)?,
                class: class.to_string(),
            })
        })
        .collect()
}

/// Screens every photo and computes the report.
pub fn evaluate(screener: &Screener, photos: &[Photo], progress: bool) -> Result<EvalReport> {
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
        .map(|photo| {
            let path = &photo.path;
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let s = screener
                .screen(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            bar.inc(1);
            Ok(Scored {
                path: path.clone(),
                class: photo.class.clone(),
                truth: photo.truth,
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
        per_class: class_rates(&items, pos, f64::from(meta.threshold)),
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
        if self.per_class.len() > 1 {
            md.push_str(&self.per_class_markdown());
            md.push('\n');
        }
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
        if self.per_class.len() > 1 {
            md.push_str("![Verdicts per class](per_class.png)\n");
        }
        md
    }

    /// The per-class verdict table in Markdown.
    pub fn per_class_markdown(&self) -> String {
        Self::class_rates_markdown(&self.per_class)
    }

    /// A per-class verdict table in Markdown.
    pub fn class_rates_markdown(rates: &[ClassRates]) -> String {
        let mut md = String::from(
            "## Verdicts per class\n\nShare of each class's photos per verdict; for a class of \
             negatives, \"≥ threshold\" is its false-positive rate.\n\n\
             | class | mpox? | photos | likely mpox | uncertain | unlikely | ≥ threshold | p ≥ 0.5 |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for c in rates {
            md.push_str(&format!(
                "| {} | {} | {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % |\n",
                c.class,
                if c.positive { "yes" } else { "no" },
                c.photos,
                100.0 * c.likely_mpox,
                100.0 * c.uncertain,
                100.0 * c.unlikely,
                100.0 * c.at_threshold,
                100.0 * c.at_half
            ));
        }
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
        if self.per_class.len() > 1 {
            crate::plots::class_verdicts(
                &dir.join("per_class.png"),
                &format!("{title}: verdicts per class"),
                &self.per_class,
            )?;
        }
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
