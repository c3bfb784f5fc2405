//! Which generated photos to keep when more are drawn than needed: of the candidates that look
//! real (inside the training photos' support, as precision counts "realistic"), the ones
//! farthest apart. A generator that covers a fifth of the held-out photos still draws, now and
//! then, photos of the rest; keeping those instead of a fourth copy of its favourite texture is
//! what raises recall.

use nalgebra::DMatrix;

use super::eval::{knn_radii, squared_distances};

/// Indices of `n` rows of `candidates` in farthest-point order: the first realistic candidate,
/// then each time the one farthest from all kept so far. Realistic candidates lie inside a ball
/// around some training photo reaching that photo's `k`-th nearest training neighbour; when
/// fewer than `n` do, the rest are those nearest to such a ball. Every prefix of the result is
/// itself spread out, so an arm that takes the first half of the photos keeps a spread half.
/// With `k` or fewer training photos there is no support to draw: every candidate counts.
/// Panics if there are fewer than `n` candidates.
pub fn spread(
    candidates: &DMatrix<f64>,
    training: &DMatrix<f64>,
    n: usize,
    k: usize,
) -> Vec<usize> {
    assert!(
        candidates.nrows() >= n,
        "fewer candidates than photos asked for"
    );
    if n == 0 {
        return Vec::new();
    }
    // How far outside the support each candidate is (≤ 0: inside).
    let outside: Vec<f64> = if training.nrows() > k && k > 0 {
        let radii = knn_radii(training, k);
        let d = squared_distances(candidates, training);
        (0..candidates.nrows())
            .map(|c| {
                (0..training.nrows())
                    .map(|t| d[(c, t)] - radii[t])
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    } else {
        vec![0.0; candidates.nrows()]
    };
    let mut pool: Vec<usize> = (0..candidates.nrows())
        .filter(|&c| outside[c] <= 0.0)
        .collect();
    if pool.len() < n {
        let mut rest: Vec<usize> = (0..candidates.nrows())
            .filter(|&c| outside[c] > 0.0)
            .collect();
        rest.sort_by(|&a, &b| outside[a].total_cmp(&outside[b]));
        rest.truncate(n - pool.len());
        pool.extend(rest);
        pool.sort();
    }
    // Squared distance of each pool candidate to the nearest kept one, updated per pick (a full
    // candidate-by-candidate matrix would not fit for large draws).
    let rows: Vec<_> = pool.iter().map(|&c| candidates.row(c)).collect();
    let distance_to = |c: usize| -> Vec<f64> {
        let x = candidates.row(c);
        rows.iter().map(|r| (r - x).norm_squared()).collect()
    };
    let mut kept = vec![pool[0]];
    let mut nearest = distance_to(pool[0]);
    nearest[0] = f64::NEG_INFINITY;
    while kept.len() < n {
        let (i, _) = nearest
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .expect("the pool is not empty");
        kept.push(pool[i]);
        for (m, d) in nearest.iter_mut().zip(distance_to(pool[i])) {
            *m = m.min(d);
        }
        // A kept candidate is at distance 0 from itself; this keeps it from being picked again
        // when the rest of the pool are exact copies of kept ones.
        nearest[i] = f64::NEG_INFINITY;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a line at `xs` (one feature, the rest zero).
    fn line(xs: &[f64]) -> DMatrix<f64> {
        DMatrix::from_fn(xs.len(), 2, |i, j| if j == 0 { xs[i] } else { 0.0 })
    }

    /// Training photos in two modes, four around 0 and four around 10.
    fn two_modes() -> DMatrix<f64> {
        line(&[0.0, 0.1, 0.2, 0.3, 10.0, 10.1, 10.2, 10.3])
    }

    #[test]
    fn the_kept_photos_reach_every_mode_and_leave_out_unrealistic_ones() {
        // The generator draws mostly around 0, twice around 10 and twice far from any photo.
        let mut xs: Vec<f64> = (0..20).map(|i| 0.01 * i as f64).collect();
        xs.extend([10.15, 50.0, 10.05, -40.0]);
        let kept = spread(&line(&xs), &two_modes(), 4, 3);
        let value = |c: &usize| xs[*c];
        // First two picks: one of each mode (drawing the first four would keep only mode 0).
        let modes: Vec<bool> = kept[..2].iter().map(|c| value(c) > 5.0).collect();
        assert!(modes.contains(&true) && modes.contains(&false), "{kept:?}");
        assert!(kept.iter().all(|c| value(c).abs() < 11.0), "{kept:?}");
        let both_far = kept.iter().filter(|c| value(c) > 5.0).count();
        assert_eq!(both_far, 2, "{kept:?}");
        let mut unique = kept.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "a candidate kept twice: {kept:?}");
    }

    #[test]
    fn too_few_realistic_candidates_are_completed_by_the_nearest_others() {
        // One candidate inside the support; of the others, 12 is nearest to it, 100 farthest.
        let xs = [0.15, 100.0, 12.0, 30.0];
        let kept = spread(&line(&xs), &two_modes(), 2, 3);
        let mut got: Vec<f64> = kept.iter().map(|&c| xs[c]).collect();
        got.sort_by(f64::total_cmp);
        assert_eq!(got, vec![0.15, 12.0]);
    }

    #[test]
    fn a_prefix_is_spread_and_copies_are_kept_last() {
        // Candidates at 0..=4 (each twice): the farthest-point order takes the ends, then the
        // middle, before any copy.
        let xs = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        let kept = spread(&line(&xs), &line(&[]), 10, 3);
        let firsts: Vec<f64> = kept[..3].iter().map(|&c| xs[c]).collect();
        assert_eq!(firsts, vec![0.0, 4.0, 2.0]);
        let mut first_five: Vec<f64> = kept[..5].iter().map(|&c| xs[c]).collect();
        first_five.sort_by(f64::total_cmp);
        assert_eq!(first_five, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let mut all = kept.clone();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
