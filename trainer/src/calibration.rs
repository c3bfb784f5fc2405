//! Calibration on validation data: temperature scaling of the logits, then an operating point
//! (threshold and uncertain band) on the calibrated probability of the positive class.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{top_label_ece, Confusion, ECE_BINS};

/// Smallest and largest temperature searched. Below 0.05 or above 20 the model is broken or the
/// validation set is too small to say; the fit reports hitting a bound.
pub const TEMPERATURE_RANGE: (f64, f64) = (0.05, 20.0);

/// Sensitivity the exported threshold is chosen for unless `--target-sensitivity` says otherwise.
///
/// The operating requirement the project was given is sensitivity ≥ 0.90 with specificity
/// ≥ 0.80 on photos from other sources. On MSLD v1 (57 mpox, 62 chickenpox or measles) every
/// model tried lost specificity between sensitivity 0.90 and 0.95: the warm-up WiSE-FT model of
/// fold 0 0.677 → 0.613, the warm-up probe 0.758 → 0.355, a logistic probe on all of MSID +
/// DermNet 0.903 → 0.565; while the uncertain band's lower edge (below) still keeps "unlikely" verdicts for
/// photos the model is sure about, so a 0.90 threshold does not turn misses into all-clears.
pub const DEFAULT_TARGET_SENSITIVITY: f64 = 0.90;

/// Sensitivity the lower edge of the uncertain band keeps at least (see [`operating_point`]).
pub const BAND_SENSITIVITY: f64 = 0.99;
/// Specificity the upper edge of the uncertain band reaches (see [`operating_point`]).
pub const BAND_SPECIFICITY: f64 = 0.95;

/// Result of [`fit_temperature`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemperatureFit {
    /// The fitted temperature: calibrated probabilities are `softmax(logits / temperature)`.
    pub temperature: f64,
    /// Mean negative log-likelihood at T = 1.
    pub nll_before: f64,
    /// Mean negative log-likelihood at the fitted T.
    pub nll_after: f64,
    /// Top-label ECE ([`ECE_BINS`] bins) at T = 1.
    pub ece_before: f64,
    /// Top-label ECE at the fitted T.
    pub ece_after: f64,
    /// Whether the optimum lies on a bound of [`TEMPERATURE_RANGE`] (then treat it with doubt).
    pub at_bound: bool,
}

/// Softmax of `logits / t`, in f64.
pub fn softmax_t(logits: &[f64], t: f64) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| ((l - max) / t).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Mean negative log-likelihood of `labels` under `softmax(logits / t)`.
pub fn nll(logits: &[Vec<f64>], labels: &[usize], t: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(z, &y)| {
            // log-sum-exp with the max taken out, so large logits do not overflow.
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = z.iter().map(|l| ((l - max) / t).exp()).sum::<f64>().ln() + max / t;
            lse - z[y] / t
        })
        .sum();
    total / logits.len() as f64
}

/// Fits the temperature T > 0 minimising the mean NLL of `softmax(logits / T)` on validation
/// data (Guo et al. 2017), by golden-section search on log T over [`TEMPERATURE_RANGE`].
///
/// The NLL is convex in 1/T, hence unimodal in log T, so golden-section finds the optimum; it
/// needs no gradients and 100 steps pin log T to ~1e-20. One scalar leaves the ranking, and so
/// accuracy and AUC, unchanged.
pub fn fit_temperature(logits: &[Vec<f64>], labels: &[usize]) -> Result<TemperatureFit> {
    if logits.is_empty() || logits.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "{} logit rows for {} labels",
            logits.len(),
            labels.len()
        )));
    }
    let classes = logits[0].len();
    if classes < 2 {
        return Err(Error::Invalid(
            "temperature scaling needs at least two classes".into(),
        ));
    }
    for (i, (z, &y)) in logits.iter().zip(labels).enumerate() {
        if z.len() != classes || y >= classes || z.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "row {i}: {} logits (finite ones expected, {classes} classes), label {y}",
                z.len()
            )));
        }
    }
    let f = |log_t: f64| nll(logits, labels, log_t.exp());
    let (mut lo, mut hi) = (TEMPERATURE_RANGE.0.ln(), TEMPERATURE_RANGE.1.ln());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut x1 = hi - ratio * (hi - lo);
    let mut x2 = lo + ratio * (hi - lo);
    let (mut f1, mut f2) = (f(x1), f(x2));
    for _ in 0..100 {
        if f1 <= f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - ratio * (hi - lo);
            f1 = f(x1);
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + ratio * (hi - lo);
            f2 = f(x2);
        }
    }
    let log_t = (lo + hi) / 2.0;
    let temperature = log_t.exp();
    let at_bound = (log_t - TEMPERATURE_RANGE.0.ln()).abs() < 1e-3
        || (log_t - TEMPERATURE_RANGE.1.ln()).abs() < 1e-3;
    let probs = |t: f64| logits.iter().map(|z| softmax_t(z, t)).collect::<Vec<_>>();
    Ok(TemperatureFit {
        temperature,
        nll_before: nll(logits, labels, 1.0),
        nll_after: nll(logits, labels, temperature),
        ece_before: top_label_ece(&probs(1.0), labels, ECE_BINS)?,
        ece_after: top_label_ece(&probs(temperature), labels, ECE_BINS)?,
        at_bound,
    })
}

fn check(probs: &[f64], labels: &[bool], target: f64, what: &str) -> Result<()> {
    if probs.len() != labels.len() || probs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} probabilities for {} labels",
            probs.len(),
            labels.len()
        )));
    }
    if !(target > 0.0 && target <= 1.0) {
        return Err(Error::Invalid(format!(
            "target {what} {target} is outside (0, 1]"
        )));
    }
    if probs.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(Error::Invalid("probabilities must lie in [0, 1]".into()));
    }
    Ok(())
}

/// The largest threshold `t` (predict positive when `p ≥ t`) whose sensitivity is at least
/// `target`: the most specific operating point that still finds that share of positives.
///
/// With the positives' scores sorted high to low, it is the k-th one for k = ⌈target·P⌉: any
/// higher threshold drops that photo and falls short. Fails without positives.
pub fn threshold_for_sensitivity(probs: &[f64], labels: &[bool], target: f64) -> Result<f64> {
    check(probs, labels, target, "sensitivity")?;
    let mut pos: Vec<f64> = probs
        .iter()
        .zip(labels)
        .filter(|(_, &y)| y)
        .map(|(&p, _)| p)
        .collect();
    if pos.is_empty() {
        return Err(Error::Invalid(
            "no positive samples to set a sensitivity on".into(),
        ));
    }
    pos.sort_by(|a, b| b.total_cmp(a));
    // The epsilon keeps 0.95 × 20 = 19.000000000000004 from asking for a 20th positive.
    let k = ((target * pos.len() as f64) - 1e-9).ceil().max(1.0) as usize;
    Ok(pos[k.min(pos.len()) - 1])
}

/// The smallest threshold among the observed scores (or 1 when none will do) whose
/// specificity is at least `target`: every negative at or above it counts against it.
pub fn threshold_for_specificity(probs: &[f64], labels: &[bool], target: f64) -> Result<f64> {
    check(probs, labels, target, "specificity")?;
    let neg_total = labels.iter().filter(|&&y| !y).count();
    if neg_total == 0 {
        return Err(Error::Invalid(
            "no negative samples to set a specificity on".into(),
        ));
    }
    let mut scores: Vec<f64> = probs.to_vec();
    scores.sort_by(f64::total_cmp);
    scores.dedup();
    for t in scores {
        if Confusion::at(probs, labels, t).specificity() >= target - 1e-12 {
            return Ok(t);
        }
    }
    Ok(1.0)
}

/// Fewest photos of each class (mpox, not mpox) the operating point may be set on unless
/// `--min-calibration-photos` lowers it (for toy runs): below it `fit` refuses before training.
/// With 4 positives a 0.90 sensitivity target picks the lowest-scoring one, and the band's edges
/// fall on the same photo: a 12-photo folder with 2 validation photos exported "band 0.440–0.440".
pub const MIN_CALIBRATION_PHOTOS: usize = 5;

/// Below this many photos of a class the operating point is flagged in the log and the model
/// card: with 20 positives a measured sensitivity of 0.90 (18 of 20) has a 95 % Wilson interval
/// of 0.70–0.97, already wider than the difference between the recipes being compared.
pub const RELIABLE_CALIBRATION_PHOTOS: usize = 20;

/// Checks the photos the temperature, threshold and band are chosen on: an error below
/// `minimum` photos of either class, a warning (returned, for the log and the model card) below
/// [`RELIABLE_CALIBRATION_PHOTOS`].
pub fn check_calibration_set(
    what: &str,
    positives: usize,
    negatives: usize,
    minimum: usize,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (class, n) in [("mpox", positives), ("not-mpox", negatives)] {
        if n < minimum {
            return Err(Error::Invalid(format!(
                "the {what} has {n} {class} photo(s): at least {minimum} of each class are needed \
                 to choose an operating point (the threshold and uncertain band would rest on a \
                 photo or two); add photos, pass --external-val, or lower \
                 --min-calibration-photos for a toy run"
            )));
        }
        if n < RELIABLE_CALIBRATION_PHOTOS {
            warnings.push(format!(
                "the operating point rests on {n} {class} photo(s) of the {what} (fewer than \
                 {RELIABLE_CALIBRATION_PHOTOS}): its sensitivity and specificity are rough \
                 estimates; do not use this model for screening without a larger validation set"
            ));
        }
    }
    Ok(warnings)
}

/// A decision threshold with its uncertain band, chosen on validation data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// Predict positive when `p ≥ threshold`.
    pub threshold: f64,
    /// `[low, high]`: below `low` "unlikely", from `high` "likely", between "uncertain" (refer).
    pub uncertain_band: [f64; 2],
    /// The sensitivity the threshold was chosen for.
    pub target_sensitivity: f64,
    /// Sensitivity at the threshold on the data it was chosen on.
    pub sensitivity: f64,
    /// Specificity at the threshold on that data.
    pub specificity: f64,
}

/// Chooses the threshold for `target_sensitivity` and an uncertain band around it.
///
/// The band's rule, matching the SDK's verdicts (`p < low` unlikely, `p ≥ high` likely mpox):
/// - `low` = [`threshold_for_sensitivity`] at max(target, [`BAND_SENSITIVITY`]): an "unlikely"
///   verdict misses at most 1 % of positives, so a clear answer is rarely a wrong all-clear;
/// - `high` = [`threshold_for_specificity`] at [`BAND_SPECIFICITY`]: a "likely mpox" verdict
///   is wrong for at most 5 % of negatives;
/// - clamped so that 0 ≤ low ≤ threshold ≤ high ≤ 1 (with a well separated model the band
///   collapses onto the threshold, which is the right answer: nothing is uncertain).
pub fn operating_point(
    probs: &[f64],
    labels: &[bool],
    target_sensitivity: f64,
) -> Result<OperatingPoint> {
    let threshold = threshold_for_sensitivity(probs, labels, target_sensitivity)?;
    let low = threshold_for_sensitivity(probs, labels, target_sensitivity.max(BAND_SENSITIVITY))?;
    let high = threshold_for_specificity(probs, labels, BAND_SPECIFICITY)?;
    let c = Confusion::at(probs, labels, threshold);
    Ok(OperatingPoint {
        threshold,
        uncertain_band: [low.clamp(0.0, threshold), high.clamp(threshold, 1.0)],
        target_sensitivity,
        sensitivity: c.sensitivity(),
        specificity: c.specificity(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn nll_by_hand() {
        // Two classes, logits (0, 0): p = ½ whatever the label → NLL = ln 2.
        assert!((nll(&[vec![0.0, 0.0]], &[1], 1.0) - 2f64.ln()).abs() < 1e-12);
        // Logits (2, 0), label 0, T = 2 → p0 = e/(e+1) → NLL = ln(1 + e^-1).
        let v = nll(&[vec![2.0, 0.0]], &[0], 2.0);
        assert!((v - (1.0 + (-1f64).exp()).ln()).abs() < 1e-12);
        // Huge logits do not overflow.
        assert!(nll(&[vec![1000.0, 0.0]], &[0], 1.0).abs() < 1e-12);
    }

    /// Logits from a calibrated model, then sharpened by `t_true`: fitting must undo it.
    fn overconfident(
        n: usize,
        classes: usize,
        t_true: f64,
        seed: u64,
    ) -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut logits = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let z: Vec<f64> = (0..classes)
                .map(|_| {
                    1.5 * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)
                })
                .collect();
            // Draw the label from the calibrated distribution softmax(z).
            let p = softmax_t(&z, 1.0);
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let y = p
                .iter()
                .position(|&q| {
                    acc += q;
                    u < acc
                })
                .unwrap_or(classes - 1);
            logits.push(z.iter().map(|v| v * t_true).collect());
            labels.push(y);
        }
        (logits, labels)
    }

    #[test]
    fn recovers_a_known_temperature() {
        for (t_true, classes, seed) in [(2.5, 3, 1), (0.6, 2, 2), (1.0, 4, 3)] {
            let (logits, labels) = overconfident(20_000, classes, t_true, seed);
            let fit = fit_temperature(&logits, &labels).unwrap();
            assert!(
                (fit.temperature / t_true - 1.0).abs() < 0.05,
                "T {t_true}: fitted {}",
                fit.temperature
            );
            assert!(fit.nll_after <= fit.nll_before + 1e-12);
            assert!(!fit.at_bound);
            if t_true != 1.0 {
                assert!(fit.ece_after < fit.ece_before, "{fit:?}");
                assert!(fit.ece_after < 0.02, "{fit:?}");
            }
        }
    }

    #[test]
    fn separable_data_hits_the_lower_bound() {
        let logits = vec![vec![5.0, 0.0], vec![0.0, 5.0]];
        let fit = fit_temperature(&logits, &[0, 1]).unwrap();
        assert!(fit.at_bound);
        assert!((fit.temperature - TEMPERATURE_RANGE.0).abs() < 1e-3);
    }

    #[test]
    fn rejects_bad_logits() {
        assert!(fit_temperature(&[], &[]).is_err());
        assert!(fit_temperature(&[vec![1.0]], &[0]).is_err());
        assert!(fit_temperature(&[vec![1.0, 2.0]], &[2]).is_err());
        assert!(fit_temperature(&[vec![1.0, f64::NAN]], &[0]).is_err());
        assert!(fit_temperature(&[vec![1.0, 2.0], vec![1.0]], &[0, 0]).is_err());
    }

    // Hand-made case, scores high to low:
    //   p: .95 .90 .80 .70 .60 .50 .40 .30 .20 .10
    //   y:  1   1   0   1   0   1   0   0   1   0      (5 positives, 5 negatives)
    // Positives sorted: .95 .90 .70 .50 .20.
    //   sensitivity 0.6 → k = 3 → threshold .70 (sens 3/5; spec: negatives ≥ .70 = {.80} → 4/5)
    //   sensitivity 0.8 → k = 4 → .50;   sensitivity 1.0 → k = 5 → .20; 0.99 → k = 5 → .20
    // Specificity ≥ 0.95 needs all 5 negatives below t: smallest score above .80 is .90.
    const P: [f64; 10] = [0.95, 0.90, 0.80, 0.70, 0.60, 0.50, 0.40, 0.30, 0.20, 0.10];
    const Y: [bool; 10] = [
        true, true, false, true, false, true, false, false, true, false,
    ];

    #[test]
    fn thresholds_by_hand() {
        assert_eq!(threshold_for_sensitivity(&P, &Y, 0.6).unwrap(), 0.70);
        assert_eq!(threshold_for_sensitivity(&P, &Y, 0.8).unwrap(), 0.50);
        assert_eq!(threshold_for_sensitivity(&P, &Y, 0.99).unwrap(), 0.20);
        assert_eq!(threshold_for_sensitivity(&P, &Y, 1.0).unwrap(), 0.20);
        assert_eq!(threshold_for_sensitivity(&P, &Y, 0.01).unwrap(), 0.95);
        assert_eq!(threshold_for_specificity(&P, &Y, 0.95).unwrap(), 0.90);
        // Specificity ≥ 0.6 needs 3 negatives below t: .10 .30 .40 are below .50.
        assert_eq!(threshold_for_specificity(&P, &Y, 0.6).unwrap(), 0.50);
        // Largest such threshold: just above it, sensitivity falls short.
        let t = threshold_for_sensitivity(&P, &Y, 0.6).unwrap();
        assert!(Confusion::at(&P, &Y, t).sensitivity() >= 0.6);
        assert!(Confusion::at(&P, &Y, t + 1e-9).sensitivity() < 0.6);
    }

    #[test]
    fn operating_point_by_hand() {
        let op = operating_point(&P, &Y, 0.8).unwrap();
        assert_eq!(op.threshold, 0.50);
        assert_eq!(op.uncertain_band, [0.20, 0.90]);
        assert_eq!(op.sensitivity, 0.8);
        // Negatives at or above .50: .80 and .60 → specificity 3/5.
        assert_eq!(op.specificity, 0.6);
        // Perfectly separated: the band collapses onto the threshold.
        let op = operating_point(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false], 0.95).unwrap();
        assert_eq!(op.threshold, 0.8);
        assert_eq!(op.uncertain_band, [0.8, 0.8]);
    }

    #[test]
    fn band_is_always_ordered() {
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..50 {
            let n = rng.random_range(4..60);
            // At least two of each class, the rest random.
            let labels: Vec<bool> = (0..n)
                .map(|i| i < 2 || (i < n - 2 && rng.random_bool(0.4)))
                .collect();
            let probs: Vec<f64> = (0..n).map(|_| rng.random()).collect();
            let target = rng.random_range(0.5..1.0);
            let op = operating_point(&probs, &labels, target).unwrap();
            let [low, high] = op.uncertain_band;
            assert!(
                0.0 <= low && low <= op.threshold && op.threshold <= high && high <= 1.0,
                "{op:?}"
            );
            assert!(op.sensitivity >= target - 1e-12);
        }
    }

    #[test]
    fn rejects_impossible_targets() {
        assert!(threshold_for_sensitivity(&P, &Y, 0.0).is_err());
        assert!(threshold_for_sensitivity(&P, &Y, 1.5).is_err());
        assert!(threshold_for_sensitivity(&[0.3], &[false], 0.9).is_err());
        assert!(threshold_for_specificity(&[0.3], &[true], 0.9).is_err());
    }

    #[test]
    fn a_small_calibration_set_is_refused_or_flagged() {
        let e = check_calibration_set("validation fold 1", 4, 30, MIN_CALIBRATION_PHOTOS);
        assert!(
            matches!(e, Err(Error::Invalid(ref m)) if m.contains("4 mpox photo(s)") && m.contains("validation fold 1"))
        );
        let e = check_calibration_set("external validation set", 30, 1, MIN_CALIBRATION_PHOTOS);
        assert!(matches!(e, Err(Error::Invalid(ref m)) if m.contains("1 not-mpox photo(s)")));
        let w = check_calibration_set("validation fold 1", 5, 19, MIN_CALIBRATION_PHOTOS).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("5 mpox photo(s)") && w[1].contains("19 not-mpox photo(s)"));
        assert!(check_calibration_set("x", 20, 20, MIN_CALIBRATION_PHOTOS)
            .unwrap()
            .is_empty());
        // A toy run may lower the minimum, and is still warned.
        assert_eq!(check_calibration_set("x", 2, 2, 1).unwrap().len(), 2);
    }
}
