//! The CUDA side of the custom ops: launches the kernels of `kernels.cu` (PTX compiled by
//! `trainer/build.rs`) on candle's CUDA storage, so the ops run on the GPU without candle's
//! fallbacks (a depthwise convolution as one convolution per channel, BatchNorm as a chain of
//! broadcast ops, max pooling as the maximum of k·k strided views).
//!
//! Each function takes the op's inputs as (storage, layout) pairs, as `cuda_fwd` receives them, and
//! returns what `cuda_fwd` returns.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result, Shape};

use super::activation::kernel_code;
use super::Activation;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ops.ptx"));
/// The name candle caches the loaded module under.
const MODULE: &str = "mpox_trainer_ops";
/// Threads per block of the per-channel reductions (a power of two: `block_sum` halves it).
const REDUCE_THREADS: u32 = 256;

/// The elements of a contiguous f32 tensor, from its first one.
fn view<'a>(s: &'a CudaStorage, l: &Layout, op: &str, what: &str) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{op}: {what} must be contiguous");
    };
    let slice: &CudaSlice<f32> = match s.as_cuda_slice::<f32>() {
        Ok(slice) => slice,
        Err(_) => bail!("{op}: {what} must be f32"),
    };
    Ok(slice.slice(start..end))
}

/// Refuses an input whose length is not what the kernel will read.
fn expect_len(v: &CudaView<'_, f32>, len: usize, op: &str, what: &str) -> Result<()> {
    if v.len() != len {
        bail!("{op}: {what} has {} elements, expected {len}", v.len());
    }
    Ok(())
}

/// A size as the kernels' `int`.
fn int(v: usize, op: &str) -> Result<i32> {
    match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{op}: {v} elements are more than the CUDA kernels index"),
    }
}

/// A fresh output buffer; every kernel here writes each of its elements.
fn alloc(dev: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
    // SAFETY: the kernel launched next writes all `len` elements before anything reads them.
    unsafe { dev.alloc::<f32>(len) }
}

fn elementwise(len: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(len.max(1) as u32)
}

/// One block per channel (or per channel and tap) for the reductions.
fn per_block(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (REDUCE_THREADS, 1, 1),
        shared_mem_bytes: REDUCE_THREADS * 8,
    }
}

fn wrap(out: CudaSlice<f32>, dev: &CudaDevice, shape: impl Into<Shape>) -> (CudaStorage, Shape) {
    (CudaStorage::wrap_cuda_slice(out, dev.clone()), shape.into())
}

/// `f(x)` element-wise.
pub(super) fn activation(
    s: &CudaStorage,
    l: &Layout,
    a: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = s.device();
    let x = view(s, l, "activation", "input")?;
    let n = l.shape().elem_count();
    let (act, slope) = kernel_code(Some(a));
    let out = alloc(dev, n)?;
    let f = dev.get_or_load_custom_func("act_fwd", MODULE, PTX)?;
    let mut b = f.builder();
    let n32 = int(n, "activation")?;
    b.arg(&n32).arg(&act).arg(&slope).arg(&x).arg(&out);
    // SAFETY: the arguments match the kernel's signature; `x` and `out` hold `n` elements.
    unsafe { b.launch(elementwise(n)) }.w()?;
    Ok(wrap(out, dev, l.shape().clone()))
}

/// `g · f'(x)` element-wise (`x` may be the activation's output: see [`Activation`]).
pub(super) fn activation_grad(
    (sx, lx): (&CudaStorage, &Layout),
    (sg, lg): (&CudaStorage, &Layout),
    a: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = sx.device();
    let x = view(sx, lx, "activation", "input")?;
    let g = view(sg, lg, "activation", "gradient")?;
    let n = lx.shape().elem_count();
    expect_len(&g, n, "activation", "gradient")?;
    let (act, slope) = kernel_code(Some(a));
    let out = alloc(dev, n)?;
    let f = dev.get_or_load_custom_func("act_grad", MODULE, PTX)?;
    let mut b = f.builder();
    let n32 = int(n, "activation")?;
    b.arg(&n32).arg(&act).arg(&slope).arg(&x).arg(&g).arg(&out);
    // SAFETY: as in `activation`; `g` holds `n` elements too.
    unsafe { b.launch(elementwise(n)) }.w()?;
    Ok(wrap(out, dev, lx.shape().clone()))
}

/// `f(y + r)` element-wise, `y + r` without an activation.
pub(super) fn residual(
    (sy, ly): (&CudaStorage, &Layout),
    (sr, lr): (&CudaStorage, &Layout),
    a: Option<Activation>,
) -> Result<(CudaStorage, Shape)> {
    let dev = sy.device();
    let y = view(sy, ly, "residual", "input")?;
    let r = view(sr, lr, "residual", "shortcut")?;
    let n = ly.shape().elem_count();
    expect_len(&r, n, "residual", "shortcut")?;
    let (act, slope) = kernel_code(a);
    let out = alloc(dev, n)?;
    let f = dev.get_or_load_custom_func("residual_fwd", MODULE, PTX)?;
    let mut b = f.builder();
    let n32 = int(n, "residual")?;
    b.arg(&n32).arg(&act).arg(&slope).arg(&y).arg(&r).arg(&out);
    // SAFETY: as in `activation`.
    unsafe { b.launch(elementwise(n)) }.w()?;
    Ok(wrap(out, dev, ly.shape().clone()))
}

/// The geometry of a depthwise convolution or a pooling window, as the kernels take it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    /// Images, channels, input height and width.
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Kernel size, stride, zero (or −∞) padding.
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    fn ints(&self, op: &str) -> Result<[i32; 9]> {
        let big = self.n * self.c * (self.h * self.w).max(self.oh * self.ow);
        int(big, op)?;
        Ok([
            self.n as i32,
            self.c as i32,
            self.h as i32,
            self.w as i32,
            self.k as i32,
            self.stride as i32,
            self.padding as i32,
            self.oh as i32,
            self.ow as i32,
        ])
    }
}

/// Launches one of the depthwise kernels, which all take the window's nine sizes and then two
/// inputs and the output.
fn depthwise_launch(
    dev: &CudaDevice,
    name: &str,
    g: &Window,
    inputs: [&CudaView<'_, f32>; 2],
    out: &CudaSlice<f32>,
    cfg: LaunchConfig,
) -> Result<()> {
    let ints = g.ints("depthwise conv")?;
    let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
    let mut b = f.builder();
    for v in &ints {
        b.arg(v);
    }
    b.arg(inputs[0]).arg(inputs[1]).arg(out);
    // SAFETY: every depthwise kernel takes nine ints, two input pointers and the output; the
    // callers size the buffers from the same window.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// Depthwise convolution of `x [n, c, h, w]` with `w [c, 1, k, k]`.
pub(super) fn depthwise(
    (sx, lx): (&CudaStorage, &Layout),
    (sw, lw): (&CudaStorage, &Layout),
    g: &Window,
) -> Result<(CudaStorage, Shape)> {
    let dev = sx.device();
    let x = view(sx, lx, "depthwise conv", "input")?;
    let w = view(sw, lw, "depthwise conv", "weight")?;
    expect_len(&x, g.n * g.c * g.h * g.w, "depthwise conv", "input")?;
    expect_len(&w, g.c * g.k * g.k, "depthwise conv", "weight")?;
    let len = g.n * g.c * g.oh * g.ow;
    let out = alloc(dev, len)?;
    depthwise_launch(dev, "dw_fwd", g, [&x, &w], &out, elementwise(len))?;
    Ok(wrap(out, dev, (g.n, g.c, g.oh, g.ow)))
}

/// dL/dx of a depthwise convolution from dL/dy and the weight.
pub(super) fn depthwise_grad_input(
    (sg, lg): (&CudaStorage, &Layout),
    (sw, lw): (&CudaStorage, &Layout),
    g: &Window,
) -> Result<(CudaStorage, Shape)> {
    let dev = sg.device();
    let dy = view(sg, lg, "depthwise conv", "gradient")?;
    let w = view(sw, lw, "depthwise conv", "weight")?;
    expect_len(&dy, g.n * g.c * g.oh * g.ow, "depthwise conv", "gradient")?;
    expect_len(&w, g.c * g.k * g.k, "depthwise conv", "weight")?;
    let len = g.n * g.c * g.h * g.w;
    let out = alloc(dev, len)?;
    depthwise_launch(dev, "dw_grad_x", g, [&dy, &w], &out, elementwise(len))?;
    Ok(wrap(out, dev, (g.n, g.c, g.h, g.w)))
}

/// dL/dw of a depthwise convolution from the input and dL/dy.
pub(super) fn depthwise_grad_weight(
    (sx, lx): (&CudaStorage, &Layout),
    (sg, lg): (&CudaStorage, &Layout),
    g: &Window,
) -> Result<(CudaStorage, Shape)> {
    let dev = sx.device();
    let x = view(sx, lx, "depthwise conv", "input")?;
    let dy = view(sg, lg, "depthwise conv", "gradient")?;
    expect_len(&x, g.n * g.c * g.h * g.w, "depthwise conv", "input")?;
    expect_len(&dy, g.n * g.c * g.oh * g.ow, "depthwise conv", "gradient")?;
    let taps = g.c * g.k * g.k;
    let out = alloc(dev, taps)?;
    depthwise_launch(dev, "dw_grad_w", g, [&x, &dy], &out, per_block(taps))?;
    Ok(wrap(out, dev, (g.c, 1, g.k, g.k)))
}

/// Per-channel mean and biased variance of `x [n, c, h, w]` as `[2, c]`.
pub(super) fn channel_stats(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = s.device();
    let x = view(s, l, "batch norm", "input")?;
    let (n, c, h, w) = l.shape().dims4()?;
    int(n * c * h * w, "batch norm")?;
    let out = alloc(dev, 2 * c)?;
    let f = dev.get_or_load_custom_func("bn_stats", MODULE, PTX)?;
    let mut b = f.builder();
    let (n, c32, plane) = (n as i32, c as i32, (h * w) as i32);
    b.arg(&n).arg(&c32).arg(&plane).arg(&x).arg(&out);
    // SAFETY: the arguments match `bn_stats`; one block per channel writes its two values.
    unsafe { b.launch(per_block(c)) }.w()?;
    Ok(wrap(out, dev, (2, c)))
}

/// `act(γ·(x − μ)/√(σ² + ε) + β)` with `params = [γ; β; μ; σ²]`.
pub(super) fn batch_norm(
    (sx, lx): (&CudaStorage, &Layout),
    (sp, lp): (&CudaStorage, &Layout),
    eps: f64,
    a: Option<Activation>,
) -> Result<(CudaStorage, Shape)> {
    let dev = sx.device();
    let x = view(sx, lx, "batch norm", "input")?;
    let p = view(sp, lp, "batch norm", "params")?;
    let (n, c, h, w) = lx.shape().dims4()?;
    if lp.shape().dims() != [4, c] {
        bail!("batch norm: params {:?}, expected [4, {c}]", lp.shape());
    }
    let len = n * c * h * w;
    int(len, "batch norm")?;
    let (act, slope) = kernel_code(a);
    let out = alloc(dev, len)?;
    let f = dev.get_or_load_custom_func("bn_fwd", MODULE, PTX)?;
    let mut b = f.builder();
    let (n, c, plane) = (n as i32, c as i32, (h * w) as i32);
    b.arg(&n)
        .arg(&c)
        .arg(&plane)
        .arg(&eps)
        .arg(&act)
        .arg(&slope);
    b.arg(&x).arg(&p).arg(&out);
    // SAFETY: the arguments match `bn_fwd`; `x` and `out` hold `len` elements, `p` 4·c.
    unsafe { b.launch(elementwise(len)) }.w()?;
    Ok(wrap(out, dev, lx.shape().clone()))
}

/// The gradient of [`batch_norm`]: `[dx; dγ; dβ; 0; 0]` flattened, from the input `x`, the
/// gradient `dy` of the output and the output `y`, with `params` as the forward pass had them.
#[allow(clippy::too_many_arguments)]
pub(super) fn batch_norm_grad(
    (sx, lx): (&CudaStorage, &Layout),
    (sg, lg): (&CudaStorage, &Layout),
    (sy, ly): (&CudaStorage, &Layout),
    params: &[f32],
    eps: f64,
    batch_stats: bool,
    a: Option<Activation>,
) -> Result<(CudaStorage, Shape)> {
    let dev = sx.device();
    let x = view(sx, lx, "batch norm", "input")?;
    let dy = view(sg, lg, "batch norm", "gradient")?;
    let y = view(sy, ly, "batch norm", "output")?;
    let (n, c, h, w) = lx.shape().dims4()?;
    let len = n * c * h * w;
    if lg.shape().elem_count() != len || ly.shape().elem_count() != len || params.len() != 4 * c {
        bail!(
            "batch norm: gradient {:?}, output {:?} or {} params for input {:?}",
            lg.shape(),
            ly.shape(),
            params.len(),
            lx.shape()
        );
    }
    int(len, "batch norm")?;
    let p = dev.clone_htod(params)?;
    // SAFETY: `bn_grad_sums` writes all 2·c sums before `bn_grad_x` reads them.
    let sums = unsafe { dev.alloc::<f64>(2 * c)? };
    let out = alloc(dev, len + 4 * c)?;
    let (dx, dp) = (out.slice(..len), out.slice(len..));
    let (act, slope) = kernel_code(a);
    let (n32, c32, plane) = (n as i32, c as i32, (h * w) as i32);

    let f = dev.get_or_load_custom_func("bn_grad_sums", MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&n32)
        .arg(&c32)
        .arg(&plane)
        .arg(&eps)
        .arg(&act)
        .arg(&slope);
    b.arg(&x).arg(&dy).arg(&y).arg(&p).arg(&sums).arg(&dp);
    // SAFETY: the arguments match `bn_grad_sums`; one block per channel.
    unsafe { b.launch(per_block(c)) }.w()?;

    let f = dev.get_or_load_custom_func("bn_grad_x", MODULE, PTX)?;
    let mut b = f.builder();
    let batch_stats = i32::from(batch_stats);
    b.arg(&n32)
        .arg(&c32)
        .arg(&plane)
        .arg(&eps)
        .arg(&act)
        .arg(&slope);
    b.arg(&batch_stats)
        .arg(&x)
        .arg(&dy)
        .arg(&y)
        .arg(&p)
        .arg(&sums)
        .arg(&dx);
    // SAFETY: the arguments match `bn_grad_x`; `dx` holds `len` elements. Same stream, so it
    // runs after the sums.
    unsafe { b.launch(elementwise(len)) }.w()?;
    Ok(wrap(out, dev, len + 4 * c))
}

/// Max pooling of `x [n, c, h, w]`, padding with −∞, first maximum of each window.
pub(super) fn max_pool(s: &CudaStorage, l: &Layout, g: &Window) -> Result<(CudaStorage, Shape)> {
    let dev = s.device();
    let x = view(s, l, "max pool", "input")?;
    let len = g.n * g.c * g.oh * g.ow;
    let out = alloc(dev, len)?;
    pool_launch(dev, "pool_fwd", g, &[&x], &out, len)?;
    Ok(wrap(out, dev, (g.n, g.c, g.oh, g.ow)))
}

/// dL/dx of [`max_pool`]: each output's gradient goes to its window's first maximum.
pub(super) fn max_pool_grad(
    (sx, lx): (&CudaStorage, &Layout),
    (sg, lg): (&CudaStorage, &Layout),
    g: &Window,
) -> Result<(CudaStorage, Shape)> {
    let dev = sx.device();
    let x = view(sx, lx, "max pool", "input")?;
    let dy = view(sg, lg, "max pool", "gradient")?;
    expect_len(&dy, g.n * g.c * g.oh * g.ow, "max pool", "gradient")?;
    let len = g.n * g.c * g.h * g.w;
    let out = alloc(dev, len)?;
    pool_launch(dev, "pool_grad", g, &[&x, &dy], &out, len)?;
    Ok(wrap(out, dev, (g.n, g.c, g.h, g.w)))
}

fn pool_launch(
    dev: &CudaDevice,
    name: &str,
    g: &Window,
    inputs: &[&CudaView<'_, f32>],
    out: &CudaSlice<f32>,
    len: usize,
) -> Result<()> {
    let [_, _, h, w, k, s, p, oh, ow] = g.ints("max pool")?;
    let planes = (g.n * g.c) as i32;
    let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
    let mut b = f.builder();
    for v in [&planes, &h, &w, &k, &s, &p, &oh, &ow] {
        b.arg(v);
    }
    for x in inputs {
        b.arg(*x);
    }
    b.arg(out);
    // SAFETY: both pooling kernels take eight ints, their inputs and the output, each sized from
    // the window `g`.
    unsafe { b.launch(elementwise(len)) }.w()?;
    Ok(())
}

#[cfg(test)]
mod tests;
