//! Classification metrics for screening: binary metrics on the probability of the positive class,
//! ROC, calibration error and reliability bins, multiclass confusion matrices, and fold summaries.
//!
//! # Conventions
//! - A sample is predicted positive when its probability is **≥ threshold** (as the SDK's verdict).
//! - A ratio whose denominator is zero is **NaN**, never 0 or 1: sensitivity without positives,
//!   specificity without negatives, precision without positive predictions, AUC with one class.
//!   Guessing a value would bias fold averages; NaN makes the hole visible (and is `null` in JSON).
//! - F1 is computed as 2·TP / (2·TP + FP + FN), which equals the harmonic mean of precision and
//!   sensitivity where both exist and is 0 (not NaN) when there are positives but none is found.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Number of equal-width bins of the expected calibration error and the reliability diagram.
///
/// 15 is the usual choice since Guo et al. (2017), so figures compare with the literature, and
/// with a few hundred validation photos it still leaves tens of samples in the busy bins.
pub const ECE_BINS: usize = 15;

/// Counts of a binary confusion matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Positives predicted positive.
    pub tp: usize,
    /// Negatives predicted positive.
    pub fp: usize,
    /// Negatives predicted negative.
    pub tn: usize,
    /// Positives predicted negative.
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl Confusion {
    /// Counts predictions `p ≥ threshold` against the truth.
    pub fn at(probs: &[f64], labels: &[bool], threshold: f64) -> Confusion {
        let mut c = Confusion::default();
        for (&p, &y) in probs.iter().zip(labels) {
            match (p >= threshold, y) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// Number of samples.
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// TP / (TP + FN); NaN without positives.
    pub fn sensitivity(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// TN / (TN + FP); NaN without negatives.
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }

    /// TP / (TP + FP); NaN without positive predictions.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// (TP + TN) / total; NaN when empty.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    /// 2·TP / (2·TP + FP + FN); NaN only when there is neither a positive nor a positive prediction.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// JSON has no NaN or infinity: serde_json writes them as `null`, and these read them back.
pub mod json_float {
    use serde::{Deserialize, Deserializer};

    /// Reads `null` as NaN (an undefined metric, e.g. AUC with one class).
    pub fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    /// Reads `null` as +∞ (the first threshold of a ROC curve).
    pub fn null_as_infinity<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// One point of a ROC curve: predicting `p ≥ threshold` gives this false and true positive rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// The threshold (`+∞` for the first point, where nothing is predicted positive; `null` in JSON).
    #[serde(deserialize_with = "json_float::null_as_infinity")]
    pub threshold: f64,
    /// False positive rate, 1 − specificity.
    pub fpr: f64,
    /// True positive rate, sensitivity.
    pub tpr: f64,
}

/// One bin of a reliability diagram over the predicted positive probability.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge (inclusive).
    pub lower: f64,
    /// Upper edge (exclusive, except 1.0 in the last bin).
    pub upper: f64,
    /// Samples in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin (NaN when empty).
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub mean_predicted: f64,
    /// Fraction of positives in the bin (NaN when empty).
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub observed: f64,
}

/// Binary screening metrics at one threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Fraction of correct predictions.
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub accuracy: f64,
    /// Fraction of positive predictions that are positive.
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub precision: f64,
    /// Fraction of positives found (recall, true positive rate).
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub sensitivity: f64,
    /// Fraction of negatives cleared (true negative rate).
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub specificity: f64,
    /// Harmonic mean of precision and sensitivity.
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub f1: f64,
    /// Area under the ROC curve (threshold-free; NaN with one class).
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub auc: f64,
    /// Expected calibration error of the positive probability over [`ECE_BINS`] bins.
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub ece: f64,
    /// The threshold the counts are taken at.
    #[serde(deserialize_with = "json_float::null_as_nan")]
    pub threshold: f64,
    /// Number of samples.
    pub n: usize,
    /// Number of positive samples.
    pub positives: usize,
    /// The confusion counts.
    pub confusion: Confusion,
}

/// Checks that `probs` are probabilities matching `labels` one to one.
fn check_inputs(probs: &[f64], labels_len: usize) -> Result<()> {
    if probs.len() != labels_len {
        return Err(Error::Invalid(format!(
            "{} probabilities for {labels_len} labels",
            probs.len()
        )));
    }
    if probs.is_empty() {
        return Err(Error::Invalid("no samples to score".into()));
    }
    if let Some((i, p)) = probs
        .iter()
        .enumerate()
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        return Err(Error::Invalid(format!(
            "probability #{i} is {p}, outside [0, 1]"
        )));
    }
    Ok(())
}

/// Accuracy, precision, sensitivity, specificity, F1 at `threshold`, plus ROC-AUC and ECE, from
/// the probabilities of the positive class and the truth (`true` = positive).
///
/// Fails on mismatched lengths, no samples, or a probability outside [0, 1] (NaN included).
pub fn binary_metrics(probs: &[f64], labels: &[bool], threshold: f64) -> Result<BinaryMetrics> {
    check_inputs(probs, labels.len())?;
    let confusion = Confusion::at(probs, labels, threshold);
    Ok(BinaryMetrics {
        accuracy: confusion.accuracy(),
        precision: confusion.precision(),
        sensitivity: confusion.sensitivity(),
        specificity: confusion.specificity(),
        f1: confusion.f1(),
        auc: roc_auc(probs, labels)?,
        ece: ece(probs, labels, ECE_BINS)?,
        threshold,
        n: probs.len(),
        positives: labels.iter().filter(|&&y| y).count(),
        confusion,
    })
}

/// ROC-AUC as the Mann–Whitney statistic: the probability that a random positive scores above a
/// random negative, ties counting one half. NaN without positives or without negatives.
///
/// O(n log n) through average ranks: AUC = (Σ ranks of positives − P(P+1)/2) / (P·N).
pub fn roc_auc(probs: &[f64], labels: &[bool]) -> Result<f64> {
    check_inputs(probs, labels.len())?;
    let pos = labels.iter().filter(|&&y| y).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Ok(f64::NAN);
    }
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && probs[order[j + 1]] == probs[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 shared equally by the tied block.
        let avg_rank = (i + j + 2) as f64 / 2.0;
        rank_sum += avg_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let p = pos as f64;
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * neg as f64))
}

/// The ROC curve from (0, 0) to (1, 1): one point per distinct score, thresholds descending.
/// Its trapezoidal area equals [`roc_auc`] (tied scores become one diagonal step).
pub fn roc_curve(probs: &[f64], labels: &[bool]) -> Result<Vec<RocPoint>> {
    check_inputs(probs, labels.len())?;
    let pos = labels.iter().filter(|&&y| y).count() as f64;
    let neg = labels.len() as f64 - pos;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut points = vec![RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let t = probs[order[i]];
        while i < order.len() && probs[order[i]] == t {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold: t,
            fpr: if neg > 0.0 { fp as f64 / neg } else { f64::NAN },
            tpr: if pos > 0.0 { tp as f64 / pos } else { f64::NAN },
        });
    }
    Ok(points)
}

/// Trapezoidal area under a curve of (fpr, tpr) points sorted by fpr.
pub fn trapezoid_area(points: &[RocPoint]) -> f64 {
    points
        .windows(2)
        .map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0)
        .sum()
}

/// Reliability bins: `bins` equal-width bins over [0, 1] of the predicted positive probability
/// (a probability of exactly 1 falls in the last bin).
pub fn reliability_bins(
    probs: &[f64],
    labels: &[bool],
    bins: usize,
) -> Result<Vec<ReliabilityBin>> {
    check_inputs(probs, labels.len())?;
    if bins == 0 {
        return Err(Error::Invalid(
            "at least one calibration bin is needed".into(),
        ));
    }
    let mut sum_p = vec![0.0; bins];
    let mut sum_y = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (&p, &y) in probs.iter().zip(labels) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        sum_p[b] += p;
        sum_y[b] += f64::from(u8::from(y));
        count[b] += 1;
    }
    Ok((0..bins)
        .map(|b| ReliabilityBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            count: count[b],
            mean_predicted: if count[b] > 0 {
                sum_p[b] / count[b] as f64
            } else {
                f64::NAN
            },
            observed: if count[b] > 0 {
                sum_y[b] / count[b] as f64
            } else {
                f64::NAN
            },
        })
        .collect())
}

/// Expected calibration error of the positive probability: Σ over bins of
/// (bin count / n) · |fraction positive − mean predicted probability|.
///
/// Binned on p(positive), not on the top-label confidence, because the screening verdict
/// thresholds p(mpox) itself: a p(mpox) of 0.3 should mean mpox 30 % of the time.
pub fn ece(probs: &[f64], labels: &[bool], bins: usize) -> Result<f64> {
    let n = probs.len() as f64;
    Ok(reliability_bins(probs, labels, bins)?
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| b.count as f64 / n * (b.observed - b.mean_predicted).abs())
        .sum())
}

/// Top-label expected calibration error of multiclass probabilities: samples binned by their
/// highest probability (confidence), Σ (bin count / n) · |accuracy − mean confidence|.
/// Used for temperature scaling, which works on all classes at once.
pub fn top_label_ece(probs: &[Vec<f64>], labels: &[usize], bins: usize) -> Result<f64> {
    if probs.len() != labels.len() || probs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} probability rows for {} labels",
            probs.len(),
            labels.len()
        )));
    }
    let mut conf = Vec::with_capacity(probs.len());
    let mut correct = Vec::with_capacity(probs.len());
    for (row, &y) in probs.iter().zip(labels) {
        let k = argmax(row);
        conf.push(row[k].clamp(0.0, 1.0));
        correct.push(k == y);
    }
    ece(&conf, &correct, bins)
}

/// Index of the largest value (the first of equals); 0 for an empty slice.
pub fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// Multiclass confusion matrix: `m[truth][prediction]` counts.
pub fn confusion_matrix(
    truth: &[usize],
    predicted: &[usize],
    classes: usize,
) -> Result<Vec<Vec<usize>>> {
    if truth.len() != predicted.len() {
        return Err(Error::Invalid(format!(
            "{} labels for {} predictions",
            truth.len(),
            predicted.len()
        )));
    }
    let mut m = vec![vec![0; classes]; classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        if t >= classes || p >= classes {
            return Err(Error::Invalid(format!(
                "class index {} out of range for {classes} classes",
                t.max(p)
            )));
        }
        m[t][p] += 1;
    }
    Ok(m)
}

/// Mean and sample standard deviation (n − 1 denominator, as "mean ± std over k folds" is
/// usually reported). The std is NaN for fewer than two values, both are NaN for none, and a
/// NaN value (an undefined fold metric) makes both NaN rather than being silently skipped.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// What a paired comparison over folds says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The 95 % interval of the mean difference lies above zero.
    Helps,
    /// It lies below zero.
    Hurts,
    /// It contains zero.
    NoDifference,
    /// Fewer than two folds: no interval.
    TooFewFolds,
}

/// Mean per-fold difference `b − a` of two arms on the same folds, with its 95 % t-interval.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct PairedDifference {
    /// Folds compared.
    pub folds: usize,
    /// Mean of the differences.
    pub mean: f64,
    /// Their sample standard deviation.
    pub std: f64,
    /// 95 % confidence interval of the mean (a paired t-test at 5 % rejects "no difference"
    /// exactly when it excludes zero).
    pub ci95: (f64, f64),
    /// The interval read out.
    pub verdict: Verdict,
}

/// Two-sided 97.5 % quantiles of Student's t for 1 to 30 degrees of freedom (then 1.96).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.wrapping_sub(1)).copied().unwrap_or(1.960)
}

/// The paired comparison of per-fold values `a` (baseline) and `b`, fold by fold; pairs with a
/// missing (NaN) value on either side are left out.
pub fn paired_difference(a: &[f64], b: &[f64]) -> PairedDifference {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| y - x)
        .filter(|v| v.is_finite())
        .collect();
    let (mean, std) = mean_std(&d);
    if d.len() < 2 {
        return PairedDifference {
            folds: d.len(),
            mean,
            std,
            ci95: (f64::NAN, f64::NAN),
            verdict: Verdict::TooFewFolds,
        };
    }
    let half = t975(d.len() - 1) * std / (d.len() as f64).sqrt();
    let ci95 = (mean - half, mean + half);
    let verdict = if ci95.0 > 0.0 {
        Verdict::Helps
    } else if ci95.1 < 0.0 {
        Verdict::Hurts
    } else {
        Verdict::NoDifference
    };
    PairedDifference {
        folds: d.len(),
        mean,
        std,
        ci95,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_differences_on_constructed_folds() {
        // Differences 0.02, 0.03, 0.01, 0.02, 0.02: mean 0.02, std √(0.0002/4) = 0.00707,
        // half-width 2.776 · 0.00707 / √5 = 0.00878.
        let a = [0.80, 0.70, 0.90, 0.85, 0.75];
        let b = [0.82, 0.73, 0.91, 0.87, 0.77];
        let p = paired_difference(&a, &b);
        assert_eq!(p.folds, 5);
        assert!((p.mean - 0.02).abs() < 1e-12, "{p:?}");
        assert!((p.ci95.0 - (0.02 - 0.008_78)).abs() < 1e-4, "{p:?}");
        assert_eq!(p.verdict, Verdict::Helps);
        assert_eq!(paired_difference(&b, &a).verdict, Verdict::Hurts);
        // Large fold-to-fold swings around a small mean: no difference.
        let c = [0.85, 0.68, 0.95, 0.80, 0.80];
        assert_eq!(paired_difference(&a, &c).verdict, Verdict::NoDifference);
        // One fold (or one usable pair) gives a difference but no interval.
        let one = paired_difference(&[0.8, f64::NAN], &[0.9, 0.7]);
        assert_eq!((one.folds, one.verdict), (1, Verdict::TooFewFolds));
        assert!((one.mean - 0.1).abs() < 1e-12);
        assert_eq!(t975(4), 2.776);
        assert_eq!(t975(100), 1.960);
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    // The 10-sample case worked by hand, sorted by score:
    //   p: .95 .85 .75 .65 .55 | .45 .35 .25 .15 .05   (threshold 0.5 between the halves)
    //   y:  1   1   0   1   1  |  0   0   1   0   0
    // Predicted positive: the first five → TP 4, FP 1; the rest → FN 1, TN 4.
    // accuracy 8/10, precision 4/5, sensitivity 4/5, specificity 4/5, F1 2·4/(8+1+1) = 0.8.
    // AUC: positives beat 5 + 5 + 4 + 4 + 2 = 20 of 25 negative pairs → 0.8.
    // ECE: every score falls in its own bin of width 1/15 (bins 14,12,11,9,8,6,5,3,2,0), so
    //   ECE = Σ|y − p| / 10 = (.05+.15+.75+.35+.45+.45+.35+.75+.15+.05) / 10 = 0.35.
    const P10: [f64; 10] = [0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.05];
    const Y10: [bool; 10] = [
        true, true, false, true, true, false, false, true, false, false,
    ];

    #[test]
    fn ten_sample_case_by_hand() {
        let m = binary_metrics(&P10, &Y10, 0.5).unwrap();
        assert_eq!(
            m.confusion,
            Confusion {
                tp: 4,
                fp: 1,
                tn: 4,
                fn_: 1
            }
        );
        for (name, v) in [
            ("accuracy", m.accuracy),
            ("precision", m.precision),
            ("sensitivity", m.sensitivity),
            ("specificity", m.specificity),
            ("f1", m.f1),
            ("auc", m.auc),
        ] {
            assert!(close(v, 0.8), "{name} = {v}");
        }
        assert!(close(m.ece, 0.35), "ece = {}", m.ece);
        assert_eq!((m.n, m.positives), (10, 5));
    }

    #[test]
    fn json_has_the_agreed_keys() {
        let m = binary_metrics(&P10, &Y10, 0.5).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        for key in [
            "accuracy",
            "precision",
            "sensitivity",
            "specificity",
            "f1",
            "auc",
            "ece",
        ] {
            assert!(v[key].is_number(), "{key} missing in {v}");
        }
        assert_eq!(v["confusion"]["fn"], 1);
        let back: BinaryMetrics = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn roc_curve_by_hand_and_area_equals_auc() {
        let roc = roc_curve(&P10, &Y10).unwrap();
        let pts: Vec<(f64, f64)> = roc.iter().map(|p| (p.fpr, p.tpr)).collect();
        let expected = [
            (0.0, 0.0),
            (0.0, 0.2),
            (0.0, 0.4),
            (0.2, 0.4),
            (0.2, 0.6),
            (0.2, 0.8),
            (0.4, 0.8),
            (0.6, 0.8),
            (0.6, 1.0),
            (0.8, 1.0),
            (1.0, 1.0),
        ];
        assert_eq!(pts.len(), expected.len());
        for (a, b) in pts.iter().zip(expected) {
            assert!(close(a.0, b.0) && close(a.1, b.1), "{a:?} vs {b:?}");
        }
        assert!(roc[0].threshold.is_infinite());
        assert_eq!(roc[1].threshold, 0.95);
        assert!(close(trapezoid_area(&roc), 0.8));
    }

    #[test]
    fn ties_count_one_half() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]).unwrap(), 0.5);
        // 0.8 beats both negatives, 0.5 ties one (½) and beats one: 3.5 of 4.
        let (p, y) = ([0.8, 0.5, 0.5, 0.2], [true, true, false, false]);
        assert_eq!(roc_auc(&p, &y).unwrap(), 0.875);
        assert!(close(trapezoid_area(&roc_curve(&p, &y).unwrap()), 0.875));
        // Perfect and inverted rankings.
        assert_eq!(roc_auc(&[0.9, 0.1], &[true, false]).unwrap(), 1.0);
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, false]).unwrap(), 0.0);
    }

    #[test]
    fn degenerate_cases_are_nan_not_guesses() {
        let m = binary_metrics(&[0.2, 0.7], &[false, false], 0.5).unwrap();
        assert!(m.sensitivity.is_nan());
        assert!(m.auc.is_nan());
        assert_eq!(m.specificity, 0.5);
        assert_eq!(m.precision, 0.0);
        assert_eq!(m.f1, 0.0);
        // Nothing predicted positive: precision undefined, F1 still 0 since positives were missed.
        let m = binary_metrics(&[0.2, 0.3], &[true, false], 0.5).unwrap();
        assert!(m.precision.is_nan());
        assert_eq!(m.f1, 0.0);
        assert_eq!(m.sensitivity, 0.0);
        // NaN serialises as null rather than failing.
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["precision"].is_null());
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(binary_metrics(&[0.5], &[true, false], 0.5).is_err());
        assert!(binary_metrics(&[], &[], 0.5).is_err());
        assert!(binary_metrics(&[1.5], &[true], 0.5).is_err());
        assert!(binary_metrics(&[f64::NAN], &[true], 0.5).is_err());
    }

    #[test]
    fn threshold_is_inclusive() {
        let c = Confusion::at(&[0.5, 0.4999], &[true, true], 0.5);
        assert_eq!((c.tp, c.fn_), (1, 1));
    }

    #[test]
    fn reliability_bins_and_ece() {
        // Perfectly calibrated within each bin: four samples at 0.25 (one positive), and
        // four at 0.75 (three positive) → ECE 0.
        let p = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75];
        let y = [true, false, false, false, true, true, true, false];
        assert!(close(ece(&p, &y, 2).unwrap(), 0.0));
        // Always 0.9 for a 50 % event: ECE 0.4.
        assert!(close(
            ece(&[0.9, 0.9], &[true, false], ECE_BINS).unwrap(),
            0.4
        ));
        let bins = reliability_bins(&[0.0, 1.0, 0.5], &[false, true, true], 4).unwrap();
        assert_eq!(
            bins.iter().map(|b| b.count).collect::<Vec<_>>(),
            [1, 0, 1, 1]
        );
        assert!(bins[1].observed.is_nan());
        assert_eq!(bins[3].upper, 1.0);
        assert_eq!(bins[2].mean_predicted, 0.5);
    }

    #[test]
    fn top_label_ece_by_hand() {
        // Confidences 0.9 (right) and 0.6 (wrong), separate bins: (|1−.9| + |0−.6|)/2 = 0.35.
        let probs = vec![vec![0.9, 0.1], vec![0.4, 0.6]];
        assert!(close(
            top_label_ece(&probs, &[0, 0], ECE_BINS).unwrap(),
            0.35
        ));
    }

    #[test]
    fn multiclass_confusion() {
        let m = confusion_matrix(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2], 3).unwrap();
        assert_eq!(m, vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 2]]);
        assert!(confusion_matrix(&[3], &[0], 3).is_err());
        assert!(confusion_matrix(&[0, 1], &[0], 3).is_err());
    }

    #[test]
    fn mean_and_sample_std() {
        // Deviations from 5: −3 −1 −1 −1 0 0 2 4 → squares sum to 32; 32/7 under the root.
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!(close(m, 5.0));
        assert!(close(s, (32.0f64 / 7.0).sqrt()));
        let (m, s) = mean_std(&[0.7]);
        assert_eq!(m, 0.7);
        assert!(s.is_nan());
        assert!(mean_std(&[]).0.is_nan());
        assert!(mean_std(&[1.0, f64::NAN]).0.is_nan());
    }

    #[test]
    fn argmax_takes_first_of_equals() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn undefined_values_survive_a_json_round_trip() {
        let roc = roc_curve(&[0.9, 0.2, 0.6], &[true, false, true]).unwrap();
        assert_eq!(roc[0].threshold, f64::INFINITY);
        let text = serde_json::to_string(&roc).unwrap();
        assert!(text.contains("null"), "{text}");
        let back: Vec<RocPoint> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, roc);
        // One class only: AUC is undefined (NaN), and reads back as NaN.
        let m = binary_metrics(&[0.9, 0.7], &[true, true], 0.5).unwrap();
        assert!(m.auc.is_nan());
        let back: BinaryMetrics =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert!(back.auc.is_nan());
        assert_eq!(back.confusion, m.confusion);
        let bins = reliability_bins(&[0.05], &[false], 4).unwrap();
        let back: Vec<ReliabilityBin> =
            serde_json::from_str(&serde_json::to_string(&bins).unwrap()).unwrap();
        assert!(back[3].observed.is_nan() && back[0].observed == 0.0);
    }
}
