//! The row kernel in plain Rust, for CPUs without the SIMD paths and as the tests' yardstick.

/// `out[x] = clamp(bias + Σ_k w[k]·taps[k][x])`, `taps` and `w` of one length.
pub(super) fn row(taps: &[&[f32]], w: &[f32], bias: f32, relu6: bool, out: &mut [f32]) {
    let n = out.len();
    out.fill(bias);
    for (t, &wk) in taps.iter().zip(w) {
        for (o, &v) in out.iter_mut().zip(&t[..n]) {
            *o += wk * v;
        }
    }
    if relu6 {
        for o in out.iter_mut() {
            *o = o.clamp(0.0, 6.0);
        }
    }
}

/// `out[x] = max_k taps[k][x]`.
pub(super) fn max_row(taps: &[&[f32]; 9], out: &mut [f32]) {
    let n = out.len();
    out.copy_from_slice(&taps[0][..n]);
    for t in &taps[1..] {
        for (o, &v) in out.iter_mut().zip(&t[..n]) {
            *o = o.max(v);
        }
    }
}
