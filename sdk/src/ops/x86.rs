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

/// Rows of the AVX-512 matrix tile.
pub(super) const MR_512: usize = 8;
/// Columns of the AVX-512 matrix tile: three vectors, so 24 accumulators stay in registers.
pub(super) const NR_512: usize = 48;

/// The AVX-512 matrix tile of [`super::gemm`]: `MR_512` × `NR_512` outputs.
///
/// # Safety
/// The CPU must support AVX-512F. Every `src[offsets[k] + x..][..NR_512]` lies within `src`;
/// `out` is writable at `r·ldo + j` for `r < MR_512`, `j < NR_512`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_512(t: &super::gemm::Tile, x: usize, out: *mut f32, ldo: usize) {
    tile_512_masked::<3>(t, x, 0xffff, out, ldo)
}

/// The AVX-512 tile for the last `cols` (1 to `NR_512`) columns of a product: fewer vectors,
/// the last one read and written under a mask, so nothing past `cols` is touched.
///
/// # Safety
/// As for [`tile_512`], with `cols` in place of `NR_512`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_512_tail(
    t: &super::gemm::Tile,
    x: usize,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    const V: usize = 16;
    debug_assert!((1..=NR_512).contains(&cols));
    let mask: __mmask16 = (1u32 << ((cols - 1) % V + 1)).wrapping_sub(1) as u16;
    match cols.div_ceil(V) {
        1 => tile_512_masked::<1>(t, x, mask, out, ldo),
        2 => tile_512_masked::<2>(t, x, mask, out, ldo),
        _ => tile_512_masked::<3>(t, x, mask, out, ldo),
    }
}

/// `NV` vectors of columns by `MR_512` rows; the last vector under `mask`.
#[target_feature(enable = "avx512f")]
unsafe fn tile_512_masked<const NV: usize>(
    t: &super::gemm::Tile,
    x: usize,
    mask: __mmask16,
    out: *mut f32,
    ldo: usize,
) {
    const V: usize = 16;
    let s = t.src.as_ptr().add(x);
    let rows: [(&[f32], f32); MR_512] = std::array::from_fn(|r| t.row(r));
    let w: [*const f32; MR_512] = std::array::from_fn(|r| rows[r].0.as_ptr());
    let mut acc: [[__m512; NV]; MR_512] = std::array::from_fn(|r| [_mm512_set1_ps(rows[r].1); NV]);
    for (kk, &o) in t.offsets.iter().enumerate() {
        let p = s.add(o);
        let xs: [__m512; NV] = std::array::from_fn(|j| {
            if j + 1 == NV {
                _mm512_maskz_loadu_ps(mask, p.add(j * V))
            } else {
                _mm512_loadu_ps(p.add(j * V))
            }
        });
        for (a, wr) in acc.iter_mut().zip(&w) {
            let wr = _mm512_set1_ps(*wr.add(kk));
            for (aj, &xj) in a.iter_mut().zip(&xs) {
                *aj = _mm512_fmadd_ps(wr, xj, *aj);
            }
        }
    }
    let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
    for (r, a) in acc.iter().enumerate() {
        for (j, &v) in a.iter().enumerate() {
            let v = match t.act {
                super::gemm::Activation::Linear => v,
                super::gemm::Activation::Relu => _mm512_max_ps(v, lo),
                super::gemm::Activation::Relu6 => _mm512_min_ps(_mm512_max_ps(v, lo), hi),
            };
            let o = out.add(r * ldo + j * V);
            if j + 1 == NV {
                _mm512_mask_storeu_ps(o, mask, v);
            } else {
                _mm512_storeu_ps(o, v);
            }
        }
    }
}

/// Rows of the AVX2 matrix tile.
pub(super) const MR_256: usize = 4;
/// Columns of the AVX2 matrix tile: three vectors, 12 accumulators of the 16 registers.
pub(super) const NR_256: usize = 24;

/// The AVX2 matrix tile of [`super::gemm`]: `MR_256` × `NR_256` outputs.
///
/// # Safety
/// As for [`tile_512`], with AVX2 and FMA and the AVX2 tile's size.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_256(t: &super::gemm::Tile, x: usize, out: *mut f32, ldo: usize) {
    const V: usize = 8;
    let s = t.src.as_ptr().add(x);
    let rows: [(&[f32], f32); MR_256] = std::array::from_fn(|r| t.row(r));
    let w: [*const f32; MR_256] = std::array::from_fn(|r| rows[r].0.as_ptr());
    let mut acc: [[__m256; 3]; MR_256] = std::array::from_fn(|r| [_mm256_set1_ps(rows[r].1); 3]);
    for (kk, &o) in t.offsets.iter().enumerate() {
        let p = s.add(o);
        let (x0, x1, x2) = (
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(V)),
            _mm256_loadu_ps(p.add(2 * V)),
        );
        for (a, wr) in acc.iter_mut().zip(&w) {
            let wr = _mm256_set1_ps(*wr.add(kk));
            a[0] = _mm256_fmadd_ps(wr, x0, a[0]);
            a[1] = _mm256_fmadd_ps(wr, x1, a[1]);
            a[2] = _mm256_fmadd_ps(wr, x2, a[2]);
        }
    }
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
    for (r, a) in acc.iter().enumerate() {
        for (j, &v) in a.iter().enumerate() {
            let v = match t.act {
                super::gemm::Activation::Linear => v,
                super::gemm::Activation::Relu => _mm256_max_ps(v, lo),
                super::gemm::Activation::Relu6 => _mm256_min_ps(_mm256_max_ps(v, lo), hi),
            };
            _mm256_storeu_ps(out.add(r * ldo + j * V), v);
        }
    }
}
