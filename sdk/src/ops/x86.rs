//! The row kernel for x86_64 with AVX2 and FMA: eight outputs per vector, four vectors in flight
//! so the multiply-add chains overlap.

use std::arch::x86_64::*;

/// `out[x] = clamp(bias + Σ_k w[k]·taps[k][x])`, `taps` and `w` of one length.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and every tap row must hold at least
/// `out.len().next_multiple_of(8)` values (the last vector reads whole; only its store is cut).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn row(taps: &[&[f32]], w: &[f32], bias: f32, relu6: bool, out: &mut [f32]) {
    let n = out.len();
    let b = _mm256_set1_ps(bias);
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
    // A macro, not a closure: a closure would not inherit this function's target features.
    // NaN passes through when there is no ReLU6.
    macro_rules! act {
        ($v:expr) => {
            if relu6 {
                _mm256_min_ps(_mm256_max_ps($v, lo), hi)
            } else {
                $v
            }
        };
    }
    let o = out.as_mut_ptr();
    let mut x = 0;
    while x + 32 <= n {
        let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
        for (t, &wk) in taps.iter().zip(w) {
            let (wv, p) = (_mm256_set1_ps(wk), t.as_ptr().add(x));
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p.add(8)), a1);
            a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p.add(16)), a2);
            a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p.add(24)), a3);
        }
        _mm256_storeu_ps(o.add(x), act!(a0));
        _mm256_storeu_ps(o.add(x + 8), act!(a1));
        _mm256_storeu_ps(o.add(x + 16), act!(a2));
        _mm256_storeu_ps(o.add(x + 24), act!(a3));
        x += 32;
    }
    while x < n {
        let mut a = b;
        for (t, &wk) in taps.iter().zip(w) {
            a = _mm256_fmadd_ps(_mm256_set1_ps(wk), _mm256_loadu_ps(t.as_ptr().add(x)), a);
        }
        let a = act!(a);
        store(out, x, a);
        x += 8;
    }
}

/// `out[x] = max_k taps[k][x]`.
///
/// # Safety
/// As for [`row`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn max_row(taps: &[&[f32]; 9], out: &mut [f32]) {
    let n = out.len();
    let t: &[&[f32]] = taps;
    let mut x = 0;
    while x < n {
        let mut a = _mm256_loadu_ps(t[0].as_ptr().add(x));
        for tk in &t[1..] {
            a = _mm256_max_ps(a, _mm256_loadu_ps(tk.as_ptr().add(x)));
        }
        store(out, x, a);
        x += 8;
    }
}

/// Stores the vector `a` at `out[x..]`, cut at the end of `out`.
///
/// # Safety
/// As for [`row`]; `x < out.len()`.
#[target_feature(enable = "avx2,fma")]
unsafe fn store(out: &mut [f32], x: usize, a: __m256) {
    let n = out.len();
    if x + 8 <= n {
        _mm256_storeu_ps(out.as_mut_ptr().add(x), a);
    } else {
        let mut last = [0f32; 8];
        _mm256_storeu_ps(last.as_mut_ptr(), a);
        out[x..].copy_from_slice(&last[..n - x]);
    }
}
