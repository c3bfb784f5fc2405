//! Which generated photos to keep when more are drawn than needed: `K` candidates are drawn per
//! photo, and each photo in turn is, of the candidates drawn so far that look real (inside the
//! training photos' support, as precision counts "realistic"), the one farthest from the photos
//! kept before it. A generator that covers a fifth of the held-out photos still draws, now and
//! then, photos of the rest; keeping those instead of a fourth copy of its favourite texture is
//! what raises recall.

use nalgebra::DMatrix;

use super::eval::{knn_radii, squared_distances};

/// Indices of `candidates.nrows() / per_photo` rows of `candidates`, one per photo in turn:
/// photo `i` chooses among the first `(i + 1) · per_photo` candidates not taken yet, the
/// realistic one whose nearest kept photo is farthest (the first photo: its first realistic
/// candidate); when none is realistic, the one nearest to the support. Realistic candidates lie
/// inside a ball around some training photo reaching that photo's `k`-th nearest training
/// neighbour; with `k` or fewer training photos there is no support to draw and every candidate
/// counts. The first `m` photos are chosen from the first `m · per_photo` candidates only, by the
/// same rule: exactly the photos of a draw of `m`, so an arm that takes half the photos gets
/// photos chosen as strictly as the whole set. Panics unless `candidates` has a whole number of
/// photos' candidates.
pub fn spread(
    candidates: &DMatrix<f64>,
    training: &DMatrix<f64>,
    per_photo: usize,
    k: usize,
) -> Vec<usize> {
    assert!(
        per_photo > 0 && candidates.nrows().is_multiple_of(per_photo),
        "candidates must come in groups of {per_photo}"
    );
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
    // Squared distance of every candidate to its nearest kept photo, updated per pick (a full
    // candidate-by-candidate matrix would not fit for large draws).
    let mut nearest = vec![f64::INFINITY; candidates.nrows()];
    let mut taken = vec![false; candidates.nrows()];
    let photos = candidates.nrows() / per_photo;
    let mut kept = Vec::with_capacity(photos);
    for photo in 0..photos {
        let open = (photo + 1) * per_photo;
        let available = || (0..open).filter(|&c| !taken[c]);
        // The farthest realistic candidate, the first of equals.
        let farthest =
            available()
                .filter(|&c| outside[c] <= 0.0)
                .fold(None, |best: Option<usize>, c| match best {
                    Some(b) if nearest[b] >= nearest[c] => Some(b),
                    _ => Some(c),
                });
        let pick = farthest.unwrap_or_else(|| {
            available()
                .min_by(|&a, &b| outside[a].total_cmp(&outside[b]))
                .expect("a photo's candidates are not all taken")
        });
        taken[pick] = true;
        kept.push(pick);
        let x = candidates.row(pick);
        for (c, m) in nearest.iter_mut().enumerate() {
            if !taken[c] {
                *m = m.min((candidates.row(c) - x).norm_squared());
            }
        }
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
    fn each_photo_is_the_open_candidate_farthest_from_the_kept_ones() {
        // Three candidates per photo. Photo 0 chooses among [50, 0.1, 0.15]: its first
        // realistic candidate, 0.1 (50 is outside the support). Photo 1 adds [0.12, 10.1, 0.11]
        // and takes 10.1, the farthest from 0.1. Photo 2 adds [0.3, -40, 0.12]: 0.3 is the
        // farthest realistic one from both kept photos; -40 is never taken.
        let xs = [50.0, 0.1, 0.15, 0.12, 10.1, 0.11, 0.3, -40.0, 0.12];
        let kept = spread(&line(&xs), &two_modes(), 3, 3);
        assert_eq!(kept, vec![1, 4, 6]);
        // With 10.1 drawn only for photo 2, photo 1 takes the farthest of what it has (0.15).
        let late = [50.0, 0.1, 0.15, 0.12, 0.13, 0.11, 0.3, 10.1, 0.12];
        assert_eq!(spread(&line(&late), &two_modes(), 3, 3), vec![1, 2, 7]);
    }

    #[test]
    fn without_realistic_candidates_the_nearest_to_the_support_is_kept() {
        let xs = [100.0, 12.0, 30.0];
        assert_eq!(spread(&line(&xs), &two_modes(), 3, 3), vec![1]);
    }

    #[test]
    fn a_prefix_is_the_draw_of_its_size() {
        // The first m photos of a draw of n are the photos of a draw of m, and no candidate is
        // kept twice.
        let xs: Vec<f64> = (0..40).map(|i| ((i * 37) % 23) as f64 * 0.5).collect();
        let training = line(&(0..12).map(|i| i as f64).collect::<Vec<_>>());
        let all = spread(&line(&xs), &training, 4, 3);
        let half = spread(&line(&xs[..20]), &training, 4, 3);
        assert_eq!(all.len(), 10);
        assert_eq!(&all[..5], &half[..]);
        for (photo, &c) in all.iter().enumerate() {
            assert!(c < (photo + 1) * 4, "{all:?}");
        }
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10, "{all:?}");
        // Spread out: the kept photos are at least 1 apart (0, 1, 2.5, 3.5, 5, 6, 7, 8, 9.5,
        // 11), the first ten candidates as little as 0.5 (0 and 0.5).
        let gap = |idx: &[usize]| {
            let mut v: Vec<f64> = idx.iter().map(|&c| xs[c]).collect();
            v.sort_by(f64::total_cmp);
            v.windows(2).map(|w| w[1] - w[0]).fold(f64::MAX, f64::min)
        };
        assert_eq!(gap(&all), 1.0, "{all:?}");
        assert_eq!(gap(&(0..10).collect::<Vec<_>>()), 0.5);
    }

    #[test]
    fn one_candidate_per_photo_keeps_every_candidate() {
        let xs = [3.0, 1.0, 2.0];
        assert_eq!(spread(&line(&xs), &line(&[]), 1, 3), vec![0, 1, 2]);
    }
}
