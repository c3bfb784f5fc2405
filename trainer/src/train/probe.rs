//! The linear probe: class-weighted, L2-regularised multinomial logistic regression on
//! standardised pooled backbone features, solved to convergence by L-BFGS.
//!
//! LP-FT and WiSE-FT (Kumar et al. 2022, Wortsman et al. 2022) start from a *converged*,
//! regularised probe: the LP-FT paper fits it with an L-BFGS logistic regression whose penalty is
//! chosen on validation data. A few epochs of AdamW on raw features, which this trainer did
//! before, leave the head under-regularised; on MSLD v1 the solved probe separated mpox from
//! chickenpox and measles markedly better (docs/results.md, "Screening photos from other
//! sources"). Standardising the features first makes one penalty mean the same for every
//! feature; the solution is folded back into the network's units, so the exported head is
//! unchanged in form.

use nalgebra::{DMatrix, DVector};

use crate::error::{Error, Result};

/// Penalties tried (λ of `mean weighted cross-entropy + λ/2·‖W‖²`, features standardised),
/// weakest first; training keeps the one with the best selection score. The range brackets
/// what a 5-fold search inside MSID + DermNet chose (λ ≈ 0.02–0.05 for ~2,000 photos).
pub const PROBE_PENALTIES: [f64; 5] = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1];

/// Most L-BFGS iterations; standardised, regularised problems converge in far fewer.
const MAX_ITERATIONS: usize = 500;

/// Per-feature mean and scale of the training features.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// Mean of each feature.
    pub mean: Vec<f64>,
    /// Standard deviation of each feature (floored, so constant features stay finite).
    pub scale: Vec<f64>,
}

impl Standardizer {
    /// Statistics of the rows of `x`.
    pub fn fit(x: &DMatrix<f64>) -> Self {
        let n = x.nrows().max(1) as f64;
        let mut mean = Vec::with_capacity(x.ncols());
        let mut scale = Vec::with_capacity(x.ncols());
        for col in x.column_iter() {
            let m = col.sum() / n;
            let var = col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
            mean.push(m);
            // Pooled ReLU6 features that are (almost) never active would otherwise blow up.
            scale.push(var.sqrt().max(1e-3));
        }
        Self { mean, scale }
    }

    /// `x` standardised column by column.
    pub fn apply(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        let mut out = x.clone();
        for (j, mut col) in out.column_iter_mut().enumerate() {
            let (m, s) = (self.mean[j], self.scale[j]);
            col.apply(|v| *v = (*v - m) / s);
        }
        out
    }
}

/// A solved probe in standardised units: `logits = z·W + b`.
#[derive(Clone, Debug)]
pub struct Probe {
    /// `[D, K]`.
    pub weight: DMatrix<f64>,
    /// `[K]`.
    pub bias: DVector<f64>,
    /// The penalty it was solved with.
    pub penalty: f64,
    /// Weighted mean cross-entropy on the rows it was solved on (the penalty left out).
    pub loss: f64,
    /// L-BFGS iterations taken.
    pub iterations: usize,
    /// Largest gradient component at the end (0 at the exact optimum).
    pub gradient: f64,
}

impl Probe {
    /// The same classifier on raw features, as the network's head stores it:
    /// `weight [K, D]` and `bias [K]` with `raw·weightᵀ + bias = standardised·W + b`.
    pub fn to_head(&self, std: &Standardizer) -> (Vec<f32>, Vec<f32>) {
        let (d, k) = self.weight.shape();
        let mut weight = Vec::with_capacity(k * d);
        let mut bias = Vec::with_capacity(k);
        for c in 0..k {
            let mut shift = 0.0;
            for j in 0..d {
                let w = self.weight[(j, c)] / std.scale[j];
                weight.push(w as f32);
                shift += w * std.mean[j];
            }
            bias.push((self.bias[c] - shift) as f32);
        }
        (weight, bias)
    }
}

/// The probe's objective: weighted mean cross-entropy plus `λ/2·‖W‖²` (the bias is free).
pub struct Objective<'a> {
    x: &'a DMatrix<f64>,
    labels: &'a [usize],
    sample_weight: Vec<f64>,
    classes: usize,
    penalty: f64,
}

impl<'a> Objective<'a> {
    /// Rows `x` (standardised) with `labels`, each class weighted by `class_weights`.
    pub fn new(
        x: &'a DMatrix<f64>,
        labels: &'a [usize],
        class_weights: &[f64],
        penalty: f64,
    ) -> Result<Self> {
        let classes = class_weights.len();
        if labels.len() != x.nrows() || x.nrows() == 0 {
            return Err(Error::Invalid(format!(
                "probe: {} feature rows for {} labels",
                x.nrows(),
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(Error::Invalid(format!(
                "probe: label {bad} with {classes} class weights"
            )));
        }
        if !(penalty.is_finite() && penalty > 0.0) {
            return Err(Error::Invalid(format!(
                "probe: the penalty must be positive, got {penalty}"
            )));
        }
        let raw: Vec<f64> = labels.iter().map(|&l| class_weights[l]).collect();
        let total: f64 = raw.iter().sum();
        Ok(Self {
            x,
            labels,
            sample_weight: raw.into_iter().map(|w| w / total).collect(),
            classes,
            penalty,
        })
    }

    /// Number of parameters (`D·K` weights, then `K` biases).
    pub fn len(&self) -> usize {
        (self.x.ncols() + 1) * self.classes
    }

    /// Whether there is nothing to fit (never, for a valid objective).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn unpack(&self, theta: &DVector<f64>) -> (DMatrix<f64>, DVector<f64>) {
        let (d, k) = (self.x.ncols(), self.classes);
        let w = DMatrix::from_column_slice(d, k, &theta.as_slice()[..d * k]);
        let b = DVector::from_column_slice(&theta.as_slice()[d * k..]);
        (w, b)
    }

    /// Value and gradient at `theta` (`W` column-major, then `b`).
    pub fn eval(&self, theta: &DVector<f64>) -> (f64, DVector<f64>) {
        let (d, k) = (self.x.ncols(), self.classes);
        let (w, b) = self.unpack(theta);
        let mut logits = self.x * &w;
        let mut loss = 0.0;
        for (i, mut row) in logits.row_iter_mut().enumerate() {
            for c in 0..k {
                row[c] += b[c];
            }
            let max = row.max();
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            let log_z = max + sum.ln();
            let y = self.labels[i];
            loss -= self.sample_weight[i] * (row[y] - log_z);
            // The row becomes the loss gradient with respect to the logits.
            for c in 0..k {
                let p = (row[c] - log_z).exp();
                row[c] = self.sample_weight[i] * (p - if c == y { 1.0 } else { 0.0 });
            }
        }
        let gw = self.x.transpose() * &logits + &w * self.penalty;
        let gb: Vec<f64> = (0..k).map(|c| logits.column(c).sum()).collect();
        loss += 0.5 * self.penalty * w.norm_squared();
        let mut grad = DVector::zeros(self.len());
        grad.as_mut_slice()[..d * k].copy_from_slice(gw.as_slice());
        grad.as_mut_slice()[d * k..].copy_from_slice(&gb);
        (loss, grad)
    }

    /// Minimises the objective by L-BFGS (memory 10, backtracking Armijo line search), from
    /// `start` (a previous penalty's solution converges faster) or from zero.
    pub fn solve(&self, start: Option<&Probe>) -> Probe {
        let n = self.len();
        let mut theta = DVector::zeros(n);
        if let Some(p) = start {
            if p.weight.len() + p.bias.len() == n {
                theta.as_mut_slice()[..p.weight.len()].copy_from_slice(p.weight.as_slice());
                theta.as_mut_slice()[p.weight.len()..].copy_from_slice(p.bias.as_slice());
            }
        }
        let (mut f, mut g) = self.eval(&theta);
        let mut history: Vec<(DVector<f64>, DVector<f64>, f64)> = Vec::new();
        let mut iterations = 0;
        while iterations < MAX_ITERATIONS && g.amax() > 1e-7 {
            iterations += 1;
            let direction = two_loop(&g, &history);
            let slope = g.dot(&direction);
            let (direction, slope) = if slope < 0.0 {
                (direction, slope)
            } else {
                // Curvature pairs gone stale: restart from steepest descent.
                history.clear();
                (-&g, -g.norm_squared())
            };
            let mut step = if history.is_empty() {
                1.0 / g.norm().max(1.0)
            } else {
                1.0
            };
            let mut accepted = None;
            for _ in 0..40 {
                let candidate = &theta + &direction * step;
                let (fc, gc) = self.eval(&candidate);
                if fc <= f + 1e-4 * step * slope {
                    accepted = Some((candidate, fc, gc));
                    break;
                }
                step *= 0.5;
            }
            let Some((next, f_next, g_next)) = accepted else {
                break; // no decrease representable in f64: converged as far as it goes
            };
            let s = &next - &theta;
            let y = &g_next - &g;
            let sy = s.dot(&y);
            if sy > 1e-12 {
                if history.len() == 10 {
                    history.remove(0);
                }
                history.push((s, y, 1.0 / sy));
            }
            let decrease = f - f_next;
            theta = next;
            f = f_next;
            g = g_next;
            if decrease.abs() <= 1e-13 * f.abs().max(1.0) {
                break;
            }
        }
        let (weight, bias) = self.unpack(&theta);
        Probe {
            loss: f - 0.5 * self.penalty * weight.norm_squared(),
            weight,
            bias,
            penalty: self.penalty,
            iterations,
            gradient: g.amax(),
        }
    }
}

/// L-BFGS's two-loop recursion: `−H·g` from the stored `(s, y, 1/sᵀy)` pairs.
fn two_loop(g: &DVector<f64>, history: &[(DVector<f64>, DVector<f64>, f64)]) -> DVector<f64> {
    let mut q = g.clone();
    let mut alphas = Vec::with_capacity(history.len());
    for (s, y, rho) in history.iter().rev() {
        let a = rho * s.dot(&q);
        q -= y * a;
        alphas.push(a);
    }
    if let Some((s, y, _)) = history.last() {
        q *= s.dot(y) / y.norm_squared();
    }
    for ((s, y, rho), a) in history.iter().zip(alphas.into_iter().rev()) {
        let b = rho * y.dot(&q);
        q += s * (a - b);
    }
    -q
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Two overlapping Gaussian classes in `d` dimensions, the second shifted along feature 0.
    fn blobs(n: usize, d: usize, seed: u64) -> (DMatrix<f64>, Vec<usize>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut x = DMatrix::zeros(n, d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let label = usize::from(i % 3 == 0);
            for j in 0..d {
                let noise: f64 = rng.random_range(-1.0..1.0);
                x[(i, j)] =
                    noise * (1.0 + j as f64) + if j == 0 { 1.5 * label as f64 } else { 0.0 };
            }
            y.push(label);
        }
        (x, y)
    }

    /// The analytic gradient matches central finite differences.
    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = blobs(40, 4, 1);
        let obj = Objective::new(&x, &y, &[1.0, 2.0], 0.3).unwrap();
        let theta = DVector::from_fn(obj.len(), |i, _| 0.1 * (i as f64) - 0.4);
        let (_, g) = obj.eval(&theta);
        for i in 0..obj.len() {
            let mut e = DVector::zeros(obj.len());
            e[i] = 1e-5;
            let numeric = (obj.eval(&(&theta + &e)).0 - obj.eval(&(&theta - &e)).0) / 2e-5;
            assert!(
                (numeric - g[i]).abs() < 1e-7,
                "parameter {i}: {numeric} vs {}",
                g[i]
            );
        }
    }

    /// The solver reaches the optimum (zero gradient), a stronger penalty gives smaller weights,
    /// and the raw-unit head reproduces the standardised logits exactly.
    #[test]
    fn solves_to_the_optimum_and_folds_the_scaling() {
        let (raw, y) = blobs(300, 6, 2);
        let std = Standardizer::fit(&raw);
        let z = std.apply(&raw);
        let weak = Objective::new(&z, &y, &[1.0, 2.0], 1e-3)
            .unwrap()
            .solve(None);
        let strong = Objective::new(&z, &y, &[1.0, 2.0], 1.0)
            .unwrap()
            .solve(Some(&weak));
        assert!(weak.gradient < 1e-6, "gradient {}", weak.gradient);
        assert!(strong.gradient < 1e-6, "gradient {}", strong.gradient);
        assert!(strong.weight.norm() < 0.5 * weak.weight.norm());
        // The stronger penalty fits the training rows worse, and both beat a zero head (ln 2).
        assert!(weak.loss < strong.loss && strong.loss < std::f64::consts::LN_2);
        // The informative feature carries the decision, in the right direction.
        let margin = weak.weight[(0, 1)] - weak.weight[(0, 0)];
        assert!(margin > 1.0, "feature 0 margin {margin}");

        let (w, b) = weak.to_head(&std);
        for i in 0..raw.nrows() {
            for c in 0..2 {
                let head: f64 = (0..6)
                    .map(|j| raw[(i, j)] * f64::from(w[c * 6 + j]))
                    .sum::<f64>()
                    + f64::from(b[c]);
                let solved: f64 =
                    (0..6).map(|j| z[(i, j)] * weak.weight[(j, c)]).sum::<f64>() + weak.bias[c];
                assert!(
                    (head - solved).abs() < 1e-4,
                    "row {i} class {c}: {head} vs {solved}"
                );
            }
        }
    }

    /// Mismatched rows and labels, unknown labels and a non-positive penalty are refused.
    #[test]
    fn bad_problems_are_refused() {
        let (x, y) = blobs(10, 2, 3);
        assert!(Objective::new(&x, &y[..9], &[1.0, 1.0], 0.1).is_err());
        let bad: Vec<usize> = y.iter().map(|&l| l + 1).collect();
        assert!(Objective::new(&x, &bad, &[1.0, 1.0], 0.1).is_err());
        assert!(Objective::new(&x, &y, &[1.0, 1.0], 0.0).is_err());
    }
}
