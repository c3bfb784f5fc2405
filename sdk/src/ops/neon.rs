//! The row kernel for aarch64 Advanced SIMD: four outputs per vector, four vectors in flight so
//! the multiply-add chains overlap.

use std::arch::aarch64::*;

/// `out[x] = clamp(bias + Σ_k w[k]·taps[k][x])`, `taps` and `w` of one length.
///
/// # Safety
/// The CPU must support NEON (every aarch64 CPU the SDK targets does), and every tap row must hold at least
/// `out.len().next_multiple_of(8)` values (the last vector reads whole; only its store is cut).
#[target_feature(enable = "neon")]
pub(super) unsafe fn row(taps: &[&[f32]], w: &[f32], bias: f32, relu6: bool, out: &mut [f32]) {
    let n = out.len();
    let b = vdupq_n_f32(bias);
    let (lo, hi) = (vdupq_n_f32(0.0), vdupq_n_f32(6.0));
    // A macro, not a closure: a closure would not inherit this function's target features.
    // NaN passes through when there is no ReLU6.
    macro_rules! act {
        ($v:expr) => {
            if relu6 {
                vminq_f32(vmaxq_f32($v, lo), hi)
            } else {
                $v
            }
        };
    }
    let o = out.as_mut_ptr();
    let mut x = 0;
    while x + 16 <= n {
        let (mut a0, mut a1, mut a2, mut a3) = (b, b, b, b);
        for (t, &wk) in taps.iter().zip(w) {
            let (wv, p) = (vdupq_n_f32(wk), t.as_ptr().add(x));
            a0 = vfmaq_f32(a0, wv, vld1q_f32(p));
            a1 = vfmaq_f32(a1, wv, vld1q_f32(p.add(4)));
            a2 = vfmaq_f32(a2, wv, vld1q_f32(p.add(8)));
            a3 = vfmaq_f32(a3, wv, vld1q_f32(p.add(12)));
        }
        vst1q_f32(o.add(x), act!(a0));
        vst1q_f32(o.add(x + 4), act!(a1));
        vst1q_f32(o.add(x + 8), act!(a2));
        vst1q_f32(o.add(x + 12), act!(a3));
        x += 16;
    }
    while x < n {
        let mut a = b;
        for (t, &wk) in taps.iter().zip(w) {
            a = vfmaq_f32(a, vdupq_n_f32(wk), vld1q_f32(t.as_ptr().add(x)));
        }
        let a = act!(a);
        store(out, x, a);
        x += 4;
    }
}

/// `out[x] = max_k taps[k][x]`.
///
/// # Safety
/// As for [`row`].
#[target_feature(enable = "neon")]
pub(super) unsafe fn max_row(taps: &[&[f32]; 9], out: &mut [f32]) {
    let n = out.len();
    let t: &[&[f32]] = taps;
    let mut x = 0;
    while x < n {
        let mut a = vld1q_f32(t[0].as_ptr().add(x));
        for tk in &t[1..] {
            a = vmaxq_f32(a, vld1q_f32(tk.as_ptr().add(x)));
        }
        store(out, x, a);
        x += 4;
    }
}

/// Stores the vector `a` at `out[x..]`, cut at the end of `out`.
///
/// # Safety
/// As for [`row`]; `x < out.len()`.
#[target_feature(enable = "neon")]
unsafe fn store(out: &mut [f32], x: usize, a: float32x4_t) {
    let n = out.len();
    if x + 4 <= n {
        vst1q_f32(out.as_mut_ptr().add(x), a);
    } else {
        let mut last = [0f32; 4];
        vst1q_f32(last.as_mut_ptr(), a);
        out[x..].copy_from_slice(&last[..n - x]);
    }
}

/// Rows of the NEON matrix tile.
pub(super) const MR: usize = 8;
/// Columns of the NEON matrix tile: three vectors, 24 accumulators of the 32 registers.
pub(super) const NR: usize = 12;

/// The NEON matrix tile of [`super::gemm`]: `MR` × `NR` outputs.
///
/// # Safety
/// The CPU must support NEON. Every `src[offsets[k] + x..][..NR]` lies within `src`; `out` is
/// writable at `r·ldo + j` for `r < MR`, `j < NR`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile(t: &super::gemm::Tile, x: usize, out: *mut f32, ldo: usize) {
    let s = t.src.as_ptr().add(x);
    let rows: [(&[f32], f32); MR] = std::array::from_fn(|r| t.row(r));
    let w: [*const f32; MR] = std::array::from_fn(|r| rows[r].0.as_ptr());
    let mut acc: [[float32x4_t; 3]; MR] = std::array::from_fn(|r| [vdupq_n_f32(rows[r].1); 3]);
    for (kk, &o) in t.offsets.iter().enumerate() {
        let p = s.add(o);
        let xs = [vld1q_f32(p), vld1q_f32(p.add(4)), vld1q_f32(p.add(8))];
        for (a, wr) in acc.iter_mut().zip(&w) {
            let wr = *wr.add(kk);
            for (aj, &xj) in a.iter_mut().zip(&xs) {
                *aj = vfmaq_n_f32(*aj, xj, wr);
            }
        }
    }
    let (lo, hi) = (vdupq_n_f32(0.0), vdupq_n_f32(6.0));
    for (r, a) in acc.iter().enumerate() {
        for (j, &v) in a.iter().enumerate() {
            let v = match t.act {
                super::gemm::Activation::Linear => v,
                super::gemm::Activation::Relu => vmaxq_f32(v, lo),
                super::gemm::Activation::Relu6 => vminq_f32(vmaxq_f32(v, lo), hi),
            };
            vst1q_f32(out.add(r * ldo + j * 4), v);
        }
    }
}
