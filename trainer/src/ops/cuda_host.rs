//! The CUDA kernels (`cuda/kernels.cu`) run on the host, against the CPU ops, value and gradient:
//! `cuda/emulate.cpp` compiles the same source for the CPU with each block as one thread, so
//! their indexing and arithmetic are tested on every machine, CI included. The launches below
//! mirror `cuda/mod.rs` (one call for element-wise kernels, one per block for the per-channel
//! sums). What only a GPU shows (many threads at once, the driver) is `cuda/tests.rs`, run by
//! scripts/gpu-check.sh.

use candle_core::{Device, Result, Tensor, Var};

use super::activation::kernel_code;
use super::{batch_norm, channel_stats, depthwise_conv2d, max_pool2d, residual, Activation};

extern "C" {
    fn mpox_emu_block(block: u32, grid: u32);
    fn mpox_emu_act_fwd(n: i32, act: i32, slope: f32, x: *const f32, y: *mut f32);
    fn mpox_emu_act_grad(n: i32, act: i32, slope: f32, x: *const f32, g: *const f32, out: *mut f32);
    fn mpox_emu_residual_fwd(
        n: i32,
        act: i32,
        slope: f32,
        y: *const f32,
        r: *const f32,
        out: *mut f32,
    );
    fn mpox_emu_dw_fwd(
        n: i32,
        c: i32,
        h: i32,
        w: i32,
        k: i32,
        s: i32,
        p: i32,
        oh: i32,
        ow: i32,
        x: *const f32,
        wt: *const f32,
        y: *mut f32,
    );
    fn mpox_emu_dw_grad_x(
        n: i32,
        c: i32,
        h: i32,
        w: i32,
        k: i32,
        s: i32,
        p: i32,
        oh: i32,
        ow: i32,
        g: *const f32,
        wt: *const f32,
        gx: *mut f32,
    );
    fn mpox_emu_dw_grad_w(
        n: i32,
        c: i32,
        h: i32,
        w: i32,
        k: i32,
        s: i32,
        p: i32,
        oh: i32,
        ow: i32,
        x: *const f32,
        g: *const f32,
        gw: *mut f32,
    );
    fn mpox_emu_bn_stats(n: i32, c: i32, plane: i32, x: *const f32, out: *mut f32);
    fn mpox_emu_bn_fwd(
        n: i32,
        c: i32,
        plane: i32,
        eps: f64,
        act: i32,
        slope: f32,
        x: *const f32,
        params: *const f32,
        y: *mut f32,
    );
    fn mpox_emu_bn_grad_sums(
        n: i32,
        c: i32,
        plane: i32,
        eps: f64,
        act: i32,
        slope: f32,
        x: *const f32,
        dy: *const f32,
        y: *const f32,
        params: *const f32,
        sums: *mut f64,
        dp: *mut f32,
    );
    fn mpox_emu_bn_grad_x(
        n: i32,
        c: i32,
        plane: i32,
        eps: f64,
        act: i32,
        slope: f32,
        batch_stats: i32,
        x: *const f32,
        dy: *const f32,
        y: *const f32,
        params: *const f32,
        sums: *const f64,
        dx: *mut f32,
    );
    fn mpox_emu_pool_fwd(
        planes: i32,
        h: i32,
        w: i32,
        k: i32,
        s: i32,
        p: i32,
        oh: i32,
        ow: i32,
        x: *const f32,
        y: *mut f32,
    );
    fn mpox_emu_pool_grad(
        planes: i32,
        h: i32,
        w: i32,
        k: i32,
        s: i32,
        p: i32,
        oh: i32,
        ow: i32,
        x: *const f32,
        g: *const f32,
        gx: *mut f32,
    );
}

/// Runs `launch` as block 0 of a one-block grid (the element-wise kernels' grid-stride loops
/// then cover every element), or once per block of `blocks`.
fn blocks(blocks: usize, mut launch: impl FnMut()) {
    for b in 0..blocks {
        // SAFETY: sets the calling thread's emulated block index; no memory is touched.
        unsafe { mpox_emu_block(b as u32, blocks as u32) };
        launch();
    }
}

/// Deterministic N(0, 1) values of `shape` on the CPU (also the GPU tests' inputs).
pub(super) fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0f32, 1.0).unwrap();
    let v: Vec<f32> = (0..shape.iter().product())
        .map(|_| normal.sample(&mut rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest |a − b| over the largest |b| (at least 1).
pub(super) fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    d / b.iter().map(|y| y.abs()).fold(1f32, f32::max)
}

/// The CPU op's value and the gradients of `Σ y·g` for its inputs, `g` an upstream gradient.
fn cpu_grads(
    inputs: &[Tensor],
    g: &Tensor,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let grads = (&y * g).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = vars
        .iter()
        .map(|v| grads.get(v).map(values).unwrap_or_default())
        .collect();
    (values(&y), gs)
}

#[test]
fn activation_and_residual_kernels_match_the_cpu() {
    let x = values(&(randn(&[5000], 1) * 4.0).unwrap());
    let r = values(&randn(&[5000], 2));
    let n = x.len() as i32;
    for a in [Activation::Relu, Activation::Relu6, Activation::Leaky(0.2)] {
        let (act, slope) = kernel_code(Some(a));
        let mut y = vec![f32::NAN; x.len()];
        let mut d = vec![f32::NAN; x.len()];
        blocks(1, || unsafe {
            // SAFETY: every buffer holds `n` elements.
            mpox_emu_act_fwd(n, act, slope, x.as_ptr(), y.as_mut_ptr());
            mpox_emu_act_grad(n, act, slope, x.as_ptr(), r.as_ptr(), d.as_mut_ptr());
        });
        for i in 0..x.len() {
            assert_eq!(y[i], a.f(x[i]), "{a:?} at {}", x[i]);
            assert_eq!(d[i], r[i] * a.df(x[i]), "{a:?}' at {}", x[i]);
        }
    }
    let (xt, rt) = (randn(&[4, 1250], 1), randn(&[4, 1250], 2));
    for a in [None, Some(Activation::Relu6)] {
        let cpu = values(&residual(&xt, &rt, a).unwrap());
        let (act, slope) = kernel_code(a);
        let mut out = vec![f32::NAN; x.len()];
        let (xs, rs) = (values(&xt), values(&rt));
        blocks(1, || unsafe {
            // SAFETY: every buffer holds `n` elements.
            mpox_emu_residual_fwd(n, act, slope, xs.as_ptr(), rs.as_ptr(), out.as_mut_ptr())
        });
        assert_eq!(out, cpu, "residual {a:?}");
    }
}

#[test]
fn depthwise_kernels_match_the_cpu_op_and_its_gradients() {
    for (k, s, p, (h, w)) in [
        (3, 1, 1, (13, 11)),
        (3, 2, 1, (14, 9)),
        (5, 2, 2, (10, 10)),
        (3, 2, 0, (9, 9)),
    ] {
        let (n, c) = (2, 5);
        let x = randn(&[n, c, h, w], 3);
        let wt = randn(&[c, 1, k, k], 4);
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let g = randn(&[n, c, oh, ow], 5);
        let (y, grads) = cpu_grads(&[x.clone(), wt.clone()], &g, |t| {
            depthwise_conv2d(&t[0], &t[1], s, p)
        });
        let (xs, ws, gs) = (values(&x), values(&wt), values(&g));
        let dims = [n, c, h, w, k, s, p, oh, ow].map(|v| v as i32);
        let [n_, c_, h_, w_, k_, s_, p_, oh_, ow_] = dims;
        let mut ey = vec![f32::NAN; y.len()];
        let mut egx = vec![f32::NAN; xs.len()];
        let mut egw = vec![f32::NAN; ws.len()];
        blocks(1, || unsafe {
            // SAFETY: the buffers are sized from the same geometry as the kernels read it.
            mpox_emu_dw_fwd(
                n_,
                c_,
                h_,
                w_,
                k_,
                s_,
                p_,
                oh_,
                ow_,
                xs.as_ptr(),
                ws.as_ptr(),
                ey.as_mut_ptr(),
            );
            mpox_emu_dw_grad_x(
                n_,
                c_,
                h_,
                w_,
                k_,
                s_,
                p_,
                oh_,
                ow_,
                gs.as_ptr(),
                ws.as_ptr(),
                egx.as_mut_ptr(),
            );
        });
        blocks(c * k * k, || unsafe {
            // SAFETY: as above; one block per channel and tap.
            mpox_emu_dw_grad_w(
                n_,
                c_,
                h_,
                w_,
                k_,
                s_,
                p_,
                oh_,
                ow_,
                xs.as_ptr(),
                gs.as_ptr(),
                egw.as_mut_ptr(),
            )
        });
        let what = format!("depthwise k{k} s{s} p{p} {h}x{w}");
        assert!(max_rel(&ey, &y) < 1e-5, "{what}: value");
        assert!(max_rel(&egx, &grads[0]) < 1e-5, "{what}: input gradient");
        assert!(max_rel(&egw, &grads[1]) < 1e-5, "{what}: weight gradient");
    }
}

#[test]
fn batch_norm_kernels_match_the_cpu_op_and_its_gradients() {
    let (n, c, h, w) = (3, 4, 7, 5);
    let plane = h * w;
    let x = randn(&[n, c, h, w], 6).affine(3.0, 2.0).unwrap();
    let gamma = randn(&[c], 7).affine(0.5, 1.0).unwrap();
    let beta = randn(&[c], 8);
    let g = randn(&[n, c, h, w], 9);
    let eps = 1e-5;
    let xs = values(&x);
    let gs = values(&g);
    let (n_, c_, p_) = (n as i32, c as i32, plane as i32);

    let mut stats = vec![f32::NAN; 2 * c];
    blocks(c, || unsafe {
        // SAFETY: `x` holds n·c·plane values, `stats` 2·c.
        mpox_emu_bn_stats(n_, c_, p_, xs.as_ptr(), stats.as_mut_ptr())
    });
    let cpu_stats = values(&channel_stats(&x).unwrap());
    assert!(
        max_rel(&stats, &cpu_stats) < 1e-6,
        "statistics {stats:?} vs {cpu_stats:?}"
    );

    for batch_stats in [true, false] {
        for a in [
            None,
            Some(Activation::Relu),
            Some(Activation::Relu6),
            Some(Activation::Leaky(0.1)),
        ] {
            let (mean, var) = if batch_stats {
                (cpu_stats[..c].to_vec(), cpu_stats[c..].to_vec())
            } else {
                (vec![0.3; c], vec![1.7; c])
            };
            let (y, grads) = cpu_grads(&[x.clone(), gamma.clone(), beta.clone()], &g, |t| {
                let dev = &Device::Cpu;
                let m = Tensor::new(mean.as_slice(), dev)?;
                let v = Tensor::new(var.as_slice(), dev)?;
                let params = Tensor::stack(&[&t[1], &t[2], &m, &v], 0)?;
                batch_norm(&t[0], &params, eps, batch_stats, a)
            });
            let params: Vec<f32> =
                [values(&gamma), values(&beta), mean.clone(), var.clone()].concat();
            let (act, slope) = kernel_code(a);
            let mut ey = vec![f32::NAN; xs.len()];
            blocks(1, || unsafe {
                // SAFETY: `x`, `y` hold n·c·plane values, `params` 4·c.
                mpox_emu_bn_fwd(
                    n_,
                    c_,
                    p_,
                    eps,
                    act,
                    slope,
                    xs.as_ptr(),
                    params.as_ptr(),
                    ey.as_mut_ptr(),
                )
            });
            let what = format!("batch norm {a:?} batch_stats={batch_stats}");
            assert!(max_rel(&ey, &y) < 1e-5, "{what}: value");
            let mut sums = vec![f64::NAN; 2 * c];
            let mut dp = vec![f32::NAN; 4 * c];
            let mut dx = vec![f32::NAN; xs.len()];
            blocks(c, || unsafe {
                // SAFETY: as above; `sums` holds 2·c values, `dp` 4·c.
                mpox_emu_bn_grad_sums(
                    n_,
                    c_,
                    p_,
                    eps,
                    act,
                    slope,
                    xs.as_ptr(),
                    gs.as_ptr(),
                    ey.as_ptr(),
                    params.as_ptr(),
                    sums.as_mut_ptr(),
                    dp.as_mut_ptr(),
                )
            });
            blocks(1, || unsafe {
                // SAFETY: as above.
                mpox_emu_bn_grad_x(
                    n_,
                    c_,
                    p_,
                    eps,
                    act,
                    slope,
                    i32::from(batch_stats),
                    xs.as_ptr(),
                    gs.as_ptr(),
                    ey.as_ptr(),
                    params.as_ptr(),
                    sums.as_ptr(),
                    dx.as_mut_ptr(),
                )
            });
            assert!(max_rel(&dx, &grads[0]) < 1e-4, "{what}: input gradient");
            assert!(
                max_rel(&dp[..c], &grads[1]) < 1e-4,
                "{what}: gamma gradient"
            );
            assert!(
                max_rel(&dp[c..2 * c], &grads[2]) < 1e-4,
                "{what}: beta gradient"
            );
            assert!(
                dp[2 * c..].iter().all(|&v| v == 0.0),
                "{what}: statistics get no gradient"
            );
        }
    }
}

#[test]
fn max_pool_kernels_match_the_cpu_op_with_ties() {
    for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
        let (n, c, h, w) = (2, 3, 11, 10);
        // Rounded values tie often: the first maximum of a window must take its gradient.
        let x = randn(&[n, c, h, w], 10)
            .affine(2.0, 0.0)
            .unwrap()
            .round()
            .unwrap();
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let g = randn(&[n, c, oh, ow], 11);
        let (y, grads) = cpu_grads(std::slice::from_ref(&x), &g, |t| max_pool2d(&t[0], k, s, p));
        let (xs, gs) = (values(&x), values(&g));
        let [pl, h_, w_, k_, s_, p_, oh_, ow_] = [n * c, h, w, k, s, p, oh, ow].map(|v| v as i32);
        let mut ey = vec![f32::NAN; y.len()];
        let mut egx = vec![f32::NAN; xs.len()];
        blocks(1, || unsafe {
            // SAFETY: the buffers are sized from the same geometry as the kernels read it.
            mpox_emu_pool_fwd(
                pl,
                h_,
                w_,
                k_,
                s_,
                p_,
                oh_,
                ow_,
                xs.as_ptr(),
                ey.as_mut_ptr(),
            );
            mpox_emu_pool_grad(
                pl,
                h_,
                w_,
                k_,
                s_,
                p_,
                oh_,
                ow_,
                xs.as_ptr(),
                gs.as_ptr(),
                egx.as_mut_ptr(),
            );
        });
        assert_eq!(ey, y, "max pool {k}/{s}/{p}: value");
        assert!(
            max_rel(&egx, &grads[0]) < 1e-6,
            "max pool {k}/{s}/{p}: gradient"
        );
    }
}
