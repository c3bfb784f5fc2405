//! The SDK's own ops, which replace tract's generic ones in a loaded plan: the depthwise 3×3
//! convolution (bias and an optional ReLU6 fused), the dense convolutions of any odd square
//! window (bias, ReLU or ReLU6 and a residual addition fused; [`gemm`] is their matrix product)
//! and the 3×3 max pool, with their SIMD kernels.
//!
//! MobileNetV2 spent 46 % of its time in tract's depthwise convolutions, ResNet-18 6 % in
//! tract's max pool, and both most of the rest in tract's matrix products and the packing of
//! their operands (`cargo bench -p mpox-e2e --bench sdk_profile`, docs/results.md). The window
//! ops copy a channel once into bordered planes laid out so that each tap of every output point
//! is one contiguous slice; the kernels below are then a plain multiply-add (or
//! max) over slices, vectorised along them.

pub mod gemm;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use gemm::Activation;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Values every tap row can be read to, past the output row's length rounded up to this: the
/// widest vector of the kernels.
const LANES: usize = 8;

/// Which row kernel an op runs; chosen once, at load, from what the CPU offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Scalar code the compiler may vectorise for the baseline target.
    Portable,
    /// x86_64 AVX2 with fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// x86_64 AVX-512F (with AVX2 and FMA): 16-lane matrix tiles, the AVX2 row kernels.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// aarch64 Advanced SIMD.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            return Isa::Avx2Fma;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
        Isa::Portable
    }

    /// Every kernel this CPU can run, the portable one first (for tests and benchmarks).
    pub fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx512 {
            all.push(Isa::Avx2Fma);
        }
        if Isa::detect() != Isa::Portable {
            all.push(Isa::detect());
        }
        all
    }

    /// Rows and columns of the matrix tile [`gemm::gemm`] computes per kernel call.
    pub fn tile(self) -> (usize, usize) {
        match self {
            Isa::Portable => (gemm::portable::MR, gemm::portable::NR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => (x86::MR_256, x86::NR_256),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (x86::MR_512, x86::NR_512),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => (neon::MR, neon::NR),
        }
    }

    /// Whether [`Isa::tail_kernel`] runs here.
    fn masks_tails(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 {
            return true;
        }
        false
    }

    /// Runs the matrix tile on the last `cols` (< nr) columns of a product without reading or
    /// writing past them; only where [`Isa::masks_tails`] (elsewhere the caller copies the
    /// columns out and runs the whole tile).
    ///
    /// # Safety
    /// As for [`Isa::tile_kernel`], with `cols` in place of `nr`.
    unsafe fn tail_kernel(self, t: &gemm::Tile, x: usize, cols: usize, out: *mut f32, ldo: usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::tile_512_tail(t, x, cols, out, ldo),
            _ => {
                let _ = (t, x, cols, out, ldo);
                unreachable!("{self:?} does not mask tails")
            }
        }
    }

    /// Runs the matrix tile.
    ///
    /// # Safety
    /// Every `t.src[t.offsets[k] + x..][..nr]` lies within `t.src`, `t` holds `mr` rows of
    /// weights and biases, and `out` is writable at `r·ldo + j` for `r < mr`, `j < nr`
    /// (`(mr, nr) = self.tile()`).
    unsafe fn tile_kernel(self, t: &gemm::Tile, x: usize, out: *mut f32, ldo: usize) {
        match self {
            Isa::Portable => gemm::portable::tile(t, x, out, ldo),
            // SAFETY: `detect` chose these kernels only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => x86::tile_256(t, x, out, ldo),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::tile_512(t, x, out, ldo),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::tile(t, x, out, ldo),
        }
    }

    /// `out[x] = clamp(bias + Σ_k w[k]·taps[k][x])` for every `x` of `out`.
    fn row(self, taps: &[&[f32]], w: &[f32], bias: f32, relu6: bool, out: &mut [f32]) {
        // The SIMD kernels read whole vectors past the row's end (their results are dropped).
        let readable = out.len().next_multiple_of(LANES);
        assert!(taps.len() == w.len() && taps.iter().all(|t| t.len() >= readable));
        match self {
            Isa::Portable => portable::row(taps, w, bias, relu6, out),
            // SAFETY: `detect` chose this kernel only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx512 => unsafe { x86::row(taps, w, bias, relu6, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::row(taps, w, bias, relu6, out) },
        }
    }

    /// `out[x] = max_k taps[k][x]` for every `x` of `out`.
    fn max_row(self, taps: &[&[f32]; 9], out: &mut [f32]) {
        let readable = out.len().next_multiple_of(LANES);
        assert!(taps.iter().all(|t| t.len() >= readable));
        match self {
            Isa::Portable => portable::max_row(taps, out),
            // SAFETY: `detect` chose this kernel only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx512 => unsafe { x86::max_row(taps, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::max_row(taps, out) },
        }
    }
}

/// Depthwise 3×3 convolution of an NCHW (or CHW) tensor, padding 1 on every side, stride 1 or 2, with its
/// bias and optionally ReLU6 fused. Inputs: the image `[N, C, H, W]`, the kernel `[C, 1, 3, 3]`
/// and the bias `[C]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Depthwise3x3 {
    /// 1 or 2, along both axes.
    pub stride: usize,
    /// Clamp the output to [0, 6].
    pub relu6: bool,
    /// The row kernel.
    pub isa: Isa,
}

impl Depthwise3x3 {
    /// Runs the op on plain slices: `input` is `[n, c, h, w]`, `kernel` `[c, 9]`, `bias` `[c]`,
    /// `out` `[n, c, out_len(h), out_len(w)]`.
    pub fn run(
        &self,
        input: &[f32],
        dims: (usize, usize, usize, usize),
        kernel: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        let c = dims.1;
        assert!(kernel.len() == c * 9 && bias.len() == c);
        each_channel(self.stride, 0.0, input, dims, out, |ch, taps, long| {
            let wk: &[f32; 9] = kernel[ch * 9..ch * 9 + 9].try_into().expect("9 taps");
            self.isa.row(taps, wk, bias[ch], self.relu6, long);
        });
    }
}

/// Output height or width of a 3×3 window with padding 1 for an input one.
fn out_len(stride: usize, len: usize) -> usize {
    (len + 2 - 3) / stride + 1
}

/// Runs `f(channel, taps, long_row)` for every plane of `input` (`[n, c, h, w]`) and copies the
/// long row it fills into the plane's place in `out` (`[n, c, ho, wo]`); `border` is the value
/// of the padding. The planes are shared out over the plan's thread pool when it has one
/// (`ScreenerOptions::threads`); each plane's arithmetic is the same either way.
fn each_channel(
    stride: usize,
    border: f32,
    input: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    out: &mut [f32],
    f: impl Fn(usize, &[&[f32]; 9], &mut [f32]) + Sync,
) {
    let (ho, wo) = (out_len(stride, h), out_len(stride, w));
    assert!(input.len() == n * c * h * w && out.len() == n * c * ho * wo);
    if ho * wo == 0 || h * w == 0 {
        return;
    }
    let planes_in = |first: usize, input: &[f32], out: &mut [f32]| {
        let mut planes = Planes::new(stride, border, h, w);
        let mut long = vec![0f32; planes.long_len()];
        for (i, (img, dst)) in input
            .chunks_exact(h * w)
            .zip(out.chunks_exact_mut(ho * wo))
            .enumerate()
        {
            planes.fill(img);
            f((first + i) % c, &planes.taps(), &mut long);
            planes.scatter(&long, dst);
        }
    };
    #[cfg(feature = "threads")]
    if let tract_linalg::multithread::Executor::MultiThread(pool) =
        tract_linalg::multithread::current_tract_executor()
    {
        use rayon::prelude::*;
        if n * c > 1 {
            let threads = pool.current_num_threads();
            let per = (n * c).div_ceil(threads * 4).max(1);
            pool.install(|| {
                input
                    .par_chunks(per * h * w)
                    .zip(out.par_chunks_mut(per * ho * wo))
                    .enumerate()
                    .for_each(|(i, (input, out))| planes_in(i * per, input, out));
            });
            return;
        }
    }
    planes_in(0, input, out);
}

/// Dense convolution of an NCHW (or CHW) tensor through [`gemm::gemm`], read straight from the
/// image (1×1 with stride 1) or from [`Planes`] (any other square window of odd side with
/// padding `size / 2`, stride 1 or 2); any number of channels; the bias and activation fused,
/// and optionally a residual added before the activation (`act(conv(x) + r)`). Inputs: the image, the kernel (OIHW, as the model holds
/// it), the bias `[co]`, and the residual when there is one (the output's shape).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DenseConv {
    /// Window side, odd.
    pub size: usize,
    /// 1 or 2, along both axes.
    pub stride: usize,
    /// Output channels.
    pub co: usize,
    /// Input channels.
    pub ci: usize,
    /// Applied last.
    pub act: Activation,
    /// Whether a fourth input is added to the convolution.
    pub residual: bool,
    /// The matrix kernel.
    pub isa: Isa,
}

impl DenseConv {
    /// Runs the op on plain slices: `input` is `[n, ci, h, w]`, `residual` and `out`
    /// `[n, co, ho, wo]`.
    pub fn run(
        &self,
        input: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        weights: gemm::Weights,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) {
        // Every odd window with padding size / 2 gives the sizes a 3×3 one does.
        let (ho, wo) = (out_len(self.stride, h), out_len(self.stride, w));
        let taps = self.size * self.size;
        assert!(c == self.ci && weights.k == c * taps && weights.m == self.co);
        assert!(input.len() == n * c * h * w && out.len() == n * self.co * ho * wo);
        if out.is_empty() {
            return;
        }
        let act = if residual.is_some() {
            Activation::Linear
        } else {
            self.act
        };
        let images = input
            .chunks_exact((c * h * w).max(1))
            .zip(out.chunks_exact_mut(self.co * ho * wo));
        if self.size == 1 && self.stride == 1 {
            // The image itself is the source: one offset per channel.
            let hw = h * w;
            let offsets: Vec<usize> = (0..c).map(|ch| ch * hw).collect();
            for (img, dst) in images {
                gemm::gemm(self.isa, weights, img, &offsets, hw, act, dst, hw);
            }
        } else {
            let geometry = Planes::geometry(self.size, self.stride, h, w);
            let per = Planes::channel_len(self.size, self.stride, h, w);
            let window = geometry.offsets();
            let offsets: Vec<usize> = (0..c)
                .flat_map(|ch| window.iter().map(move |o| ch * per + o))
                .collect();
            let long = geometry.long_len();
            let mut planes = vec![0f32; c * per];
            let mut longs = vec![0f32; self.co * long];
            for (img, dst) in images {
                for (ch, channel) in img.chunks_exact(h * w).enumerate() {
                    geometry.fill_into(&mut planes[ch * per..][..per], channel);
                }
                gemm::gemm(
                    self.isa, weights, &planes, &offsets, long, act, &mut longs, long,
                );
                for (o, d) in dst.chunks_exact_mut(ho * wo).enumerate() {
                    geometry.scatter(&longs[o * long..][..long], d);
                }
            }
        }
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len());
            for (o, &r) in out.iter_mut().zip(r) {
                *o = self.act.apply(*o + r);
            }
        }
    }
}

impl Op for DenseConv {
    fn name(&self) -> StaticName {
        "SdkConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{0}×{0} stride {1}, {2}→{3}, {4:?}, residual {5}, {6:?}",
            self.size, self.stride, self.ci, self.co, self.act, self.residual, self.isa
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DenseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let img = &inputs[0];
        let dims = nchw("SdkConv", img.shape())?;
        let weights = gemm::Weights {
            m: self.co,
            k: self.ci * self.size * self.size,
            weights: inputs[1].try_as_plain_ram()?.as_slice::<f32>()?,
            bias: inputs[2].try_as_plain_ram()?.as_slice::<f32>()?,
        };
        ensure!(
            dims.1 == self.ci
                && weights.weights.len() == weights.m * weights.k
                && weights.bias.len() == weights.m,
            "SdkConv: kernel, bias and image disagree"
        );
        let residual = if self.residual {
            let (n, h, w) = (dims.0, dims.2, dims.3);
            let len = n * self.co * out_len(self.stride, h) * out_len(self.stride, w);
            ensure!(inputs[3].len() == len, "SdkConv: residual shape");
            Some(inputs[3].try_as_plain_ram()?.as_slice::<f32>()?)
        } else {
            None
        };
        eval_window(
            "SdkConv",
            self.stride,
            Some(self.co),
            img,
            |x, dims, out| self.run(x, dims, weights, residual, out),
        )
    }
}

impl TypedOp for DenseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        window_fact("SdkConv", self.stride, Some(self.co), inputs[0])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let out = self.output_facts(inputs)?;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            out[0].shape.volume() * (self.ci * self.size * self.size)
        )))
    }

    as_op!();
}

/// Max pool 3×3 of an NCHW (or CHW) tensor, padding 1 on every side (padding never wins),
/// stride 1 or 2. Input: the image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool3x3 {
    /// 1 or 2, along both axes.
    pub stride: usize,
    /// The row kernel.
    pub isa: Isa,
}

impl MaxPool3x3 {
    /// Runs the op on plain slices: `input` is `[n, c, h, w]`, `out` `[n, c, ho, wo]`.
    pub fn run(&self, input: &[f32], dims: (usize, usize, usize, usize), out: &mut [f32]) {
        each_channel(
            self.stride,
            f32::NEG_INFINITY,
            input,
            dims,
            out,
            |_, taps, long| self.isa.max_row(taps, long),
        );
    }
}

/// One channel copied into bordered planes laid out so that the whole output channel is one long
/// row of a multiply-add over the window's taps (the kernels' per-call cost is paid once per
/// channel, not per output row, which matters on 7×7 and 14×14 maps). The window is `size`×`size`
/// (odd) with padding `size / 2` on every side, so the output has the size [`out_len`] gives.
///
/// Output point (oy, ox) sits at `oy·pitch + ox` of the long row; the `pitch - wo` points
/// between two output rows are computed and dropped. For stride 1 the one plane is the padded
/// channel. For stride 2 the padded channel is split four ways by row and column parity, so
/// that tap (ky, kx) of every output point lies at the same offset of one of the four.
struct Planes {
    size: usize,
    stride: usize,
    h: usize,
    w: usize,
    /// Values per plane row.
    pitch: usize,
    /// Values per plane.
    plane: usize,
    /// Stride 1: `[padded]`. Stride 2: `[even rows even cols, even rows odd cols, odd rows
    /// even cols, odd rows odd cols]` of the padded channel, one after another.
    buf: Vec<f32>,
    /// Output rows and columns.
    ho: usize,
    wo: usize,
}

impl Planes {
    /// One 3×3 window's planes with their own buffer, the borders set to `border`.
    fn new(stride: usize, border: f32, h: usize, w: usize) -> Planes {
        Planes {
            // Room for the row kernels' whole-vector reads past the last point.
            buf: vec![border; Planes::channel_len(3, stride, h, w) + LANES],
            ..Planes::geometry(3, stride, h, w)
        }
    }

    /// The layout alone, for callers that keep the planes of many channels in one buffer.
    fn geometry(size: usize, stride: usize, h: usize, w: usize) -> Planes {
        let (pitch, rows) = Planes::layout(size, stride, h, w);
        Planes {
            size,
            stride,
            h,
            w,
            pitch,
            plane: rows * pitch,
            buf: Vec::new(),
            ho: out_len(stride, h),
            wo: out_len(stride, w),
        }
    }

    /// Values per plane row and rows per plane.
    fn layout(size: usize, stride: usize, h: usize, w: usize) -> (usize, usize) {
        let pad = size / 2;
        if stride == 1 {
            (w + 2 * pad, h + 2 * pad)
        } else {
            (out_len(2, w) + pad, out_len(2, h) + pad)
        }
    }

    /// Values the planes of one channel take.
    fn channel_len(size: usize, stride: usize, h: usize, w: usize) -> usize {
        let (pitch, rows) = Planes::layout(size, stride, h, w);
        rows * pitch * if stride == 1 { 1 } else { 4 }
    }

    /// Length of the long output row: the output channel in pitch layout.
    fn long_len(&self) -> usize {
        (self.ho - 1) * self.pitch + self.wo
    }

    /// Copies the output points of a long row into an `ho × wo` channel.
    fn scatter(&self, long: &[f32], dst: &mut [f32]) {
        for (oy, row) in dst.chunks_exact_mut(self.wo).enumerate() {
            row.copy_from_slice(&long[oy * self.pitch..][..self.wo]);
        }
    }

    /// Copies one `h × w` channel in; the borders keep their value.
    fn fill(&mut self, img: &[f32]) {
        let mut buf = std::mem::take(&mut self.buf);
        self.fill_into(&mut buf, img);
        self.buf = buf;
    }

    /// Copies one `h × w` channel into `dst` laid out as this channel's planes (see
    /// [`Planes::offsets`]); what `dst` holds at the borders stays.
    fn fill_into(&self, dst: &mut [f32], img: &[f32]) {
        let (p, plane, pad) = (self.pitch, self.plane, self.size / 2);
        for (y, src) in img.chunks_exact(self.w).enumerate().take(self.h) {
            if self.stride == 1 {
                let r = (y + pad) * p + pad;
                dst[r..r + self.w].copy_from_slice(src);
                continue;
            }
            // Padded (y + pad, x + pad): row parity picks the pair of planes. Of each pair of
            // columns (2i, 2i + 1) one lands in the even-column plane and the other in the
            // odd-column one, at i plus a shift that depends only on the padding's parity.
            let padded_y = y + pad;
            let (parity, r) = (padded_y % 2, padded_y / 2 * p);
            let pair = &mut dst[2 * parity * plane..(2 * parity + 2) * plane];
            let (even_cols, odd_cols) = pair.split_at_mut(plane);
            let (first, second, shift) = if pad % 2 == 0 {
                (even_cols, odd_cols, pad / 2)
            } else {
                (odd_cols, even_cols, pad / 2 + 1)
            };
            let (a, b) = (
                &mut first[r + pad / 2..r + p],
                &mut second[r + shift..r + p],
            );
            let pairs = src.chunks_exact(2);
            if let [last] = pairs.remainder() {
                a[self.w / 2] = *last;
            }
            for ((pair, x0), x1) in pairs.zip(a.iter_mut()).zip(b.iter_mut()) {
                *x0 = pair[0];
                *x1 = pair[1];
            }
        }
    }

    /// Where each tap (kernel order, row-major) starts in a channel's planes: tap k of output
    /// point i of the long row is at `offsets[k] + i`.
    fn offsets(&self) -> Vec<usize> {
        let (p, n) = (self.pitch, self.size);
        (0..n * n)
            .map(|k| {
                let (ky, kx) = (k / n, k % n);
                if self.stride == 1 {
                    ky * p + kx
                } else {
                    (2 * (ky % 2) + kx % 2) * self.plane + (ky / 2) * p + kx / 2
                }
            })
            .collect()
    }

    /// The nine tap slices of a 3×3 window's filled planes, each running on to the end of the
    /// buffer, so the row kernels may read whole vectors past the long row's end.
    fn taps(&self) -> [&[f32]; 9] {
        debug_assert_eq!(self.size, 3);
        let offsets = self.offsets();
        std::array::from_fn(|k| &self.buf[offsets[k]..])
    }
}

/// `(n, c, h, w)` of an NCHW or CHW shape.
fn nchw(op: &str, shape: &[usize]) -> TractResult<(usize, usize, usize, usize)> {
    match *shape {
        [n, c, h, w] => Ok((n, c, h, w)),
        [c, h, w] => Ok((1, c, h, w)),
        ref other => bail!("{op} takes NCHW or CHW input, got {other:?}"),
    }
}

/// Evaluates a window op (3×3 with padding 1, or 1×1 with stride 1, whose sizes agree): an output
/// of the input's rank with the last two axes resized for `stride` (and `channels_out` channels,
/// when it changes them), filled by `run(input, dims, out)`.
fn eval_window(
    op: &str,
    stride: usize,
    channels_out: Option<usize>,
    img: &Tensor,
    run: impl FnOnce(&[f32], (usize, usize, usize, usize), &mut [f32]),
) -> TractResult<TVec<TValue>> {
    let dims = nchw(op, img.shape())?;
    let mut shape: TVec<usize> = img.shape().into();
    let r = shape.len();
    if let Some(c) = channels_out {
        shape[r - 3] = c;
    }
    shape[r - 2] = out_len(stride, dims.2);
    shape[r - 1] = out_len(stride, dims.3);
    // SAFETY: every op's `run` writes every element of the output.
    let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
    run(
        img.try_as_plain_ram()?.as_slice::<f32>()?,
        dims,
        out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
    );
    Ok(tvec!(out.into_tvalue()))
}

/// The output fact of a window op (see [`eval_window`]).
fn window_fact(
    op: &str,
    stride: usize,
    channels_out: Option<usize>,
    input: &TypedFact,
) -> TractResult<TVec<TypedFact>> {
    let mut shape = input.shape.clone();
    let r = shape.rank();
    ensure!(r == 3 || r == 4, "{op} takes NCHW or CHW input");
    if let Some(c) = channels_out {
        shape.set(r - 3, c.into());
    }
    for axis in [r - 2, r - 1] {
        let len = out_len(stride, shape[axis].to_usize()?);
        shape.set(axis, len.into());
    }
    Ok(tvec!(f32::fact(shape)))
}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        "SdkDepthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "stride {}, relu6 {}, {:?}",
            self.stride, self.relu6, self.isa
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (img, kernel, bias) = args_3!(inputs);
        let c = nchw("SdkDepthwise3x3", img.shape())?.1;
        ensure!(
            kernel.len() == c * 9 && bias.len() == c,
            "SdkDepthwise3x3: kernel, bias and image disagree"
        );
        let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        eval_window(
            "SdkDepthwise3x3",
            self.stride,
            None,
            &img,
            |x, dims, out| self.run(x, dims, kernel, bias, out),
        )
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        window_fact("SdkDepthwise3x3", self.stride, None, inputs[0])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let out = self.output_facts(inputs)?;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            out[0].shape.volume() * 9
        )))
    }

    as_op!();
}

impl Op for MaxPool3x3 {
    fn name(&self) -> StaticName {
        "SdkMaxPool3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("stride {}, {:?}", self.stride, self.isa)])
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let img = args_1!(inputs);
        eval_window("SdkMaxPool3x3", self.stride, None, &img, |x, dims, out| {
            self.run(x, dims, out)
        })
    }
}

impl TypedOp for MaxPool3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        window_fact("SdkMaxPool3x3", self.stride, None, inputs[0])
    }

    as_op!();
}

/// Replaces, in a typed model before tract declutters it (which would turn them into generic
/// matrix products), every f32 1×1 convolution of stride 1 or 2 without padding (NCHW or CHW,
/// constant kernel and bias) by [`DenseConv`] running `isa`. [`rewrite`]
/// then folds what follows them. Returns how many nodes it replaced.
pub fn prepare(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    // Biases arrive behind casts that only constant propagation folds.
    model.prop_consts()?;
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(PlainConv { conv, ci, co, bias }) = plain_conv(model, node)? else {
            continue;
        };
        let (1, Some((1, stride))) = (conv.group, window(model, node, &conv.pool_spec)?) else {
            continue;
        };
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new("sdk-pointwise");
        // The kernel is read where the model holds it: wired, not copied.
        let inputs = [
            patch.tap_model(model, node.inputs[0])?,
            patch.tap_model(model, node.inputs[1])?,
            patch.add_const(format!("{name}.sdk_bias"), bias)?,
        ];
        let op = DenseConv {
            size: 1,
            stride,
            co,
            ci,
            act: Activation::Linear,
            residual: false,
            isa,
        };
        let out = patch.wire_node(&name, op, &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), out)?;
        patch.apply(model)?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}

/// Folds into a [`DenseConv`] node the residual added to its output alone and the activation
/// after it, when they are there; returns whether it changed the model.
fn fuse_dense(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(op) = node.op_as::<DenseConv>() else {
        return Ok(false);
    };
    if op.residual || op.act != Activation::Linear {
        return Ok(false);
    }
    let (after_add, residual) = match bin_successor(model, id, "Add", None)? {
        Some((add, other)) => (add, Some(other)),
        None => (id, None),
    };
    let (last, act) = activation_after(model, after_add)?;
    if last == id {
        return Ok(false);
    }
    let fused = DenseConv {
        act,
        residual: residual.is_some(),
        ..op.clone()
    };
    let mut patch = TypedModelPatch::new("sdk-conv-fuse");
    let mut inputs: Vec<OutletId> = node
        .inputs
        .iter()
        .map(|&i| patch.tap_model(model, i))
        .collect::<TractResult<_>>()?;
    if let Some(r) = residual {
        inputs.push(patch.tap_model(model, r)?);
    }
    let out = patch.wire_node(&node.name, fused, &inputs)?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), out)?;
    patch.apply(model)?;
    Ok(true)
}

/// Replaces, in a decluttered model, every f32 3×3 depthwise convolution and max pool, and every
/// dense convolution, that the SDK's ops compute (NCHW or CHW, a square [`window`] of odd side
/// with padding `size / 2`, stride 1 or 2, no dilation; constant kernel and bias) by [`Depthwise3x3`], [`DenseConv`] and [`MaxPool3x3`] running `isa`; folds
/// into a depthwise convolution a ReLU6 that follows it alone, and into every [`DenseConv`]
/// (also those [`prepare`] made) the residual added to it alone and the activation after.
/// Returns how many nodes it replaced.
pub fn rewrite(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let name = node.name.clone();
        if let Some(pool) = node.op_as::<MaxPool>() {
            let Some(stride) = window_stride(model, node, &pool.pool_spec)? else {
                continue;
            };
            if pool.with_index_outputs.is_some() {
                continue;
            }
            let mut patch = TypedModelPatch::new("sdk-maxpool");
            let x = patch.tap_model(model, node.inputs[0])?;
            let out = patch.wire_node(&name, MaxPool3x3 { stride, isa }, &[x])?[0];
            patch.shunt_outside(model, OutletId::new(id, 0), out)?;
            patch.apply(model)?;
            replaced += 1;
            continue;
        }
        let Some(PlainConv { conv, ci, co, bias }) = plain_conv(model, node)? else {
            continue;
        };
        let depthwise = conv.group == ci && co == ci;
        let Some((size, stride)) = window(model, node, &conv.pool_spec)? else {
            continue;
        };
        if (depthwise && size != 3) || (!depthwise && conv.group != 1) {
            continue;
        }
        let mut patch = TypedModelPatch::new("sdk-conv");
        let x = patch.tap_model(model, node.inputs[0])?;
        // The kernel is read where the model holds it (`[co, ci / group, size, size]`): wired,
        // not copied.
        let k = patch.tap_model(model, node.inputs[1])?;
        let b = patch.add_const(format!("{name}.sdk_bias"), bias)?;
        if depthwise {
            // A ReLU6 read only by this convolution is folded into it.
            let (last, relu6) = match relu6_after(model, id)? {
                Some(clip) => (clip, true),
                None => (id, false),
            };
            let op = Depthwise3x3 { stride, relu6, isa };
            let out = patch.wire_node(&name, op, &[x, k, b])?[0];
            patch.shunt_outside(model, OutletId::new(last, 0), out)?;
        } else {
            let op = DenseConv {
                size,
                stride,
                co,
                ci,
                act: Activation::Linear,
                residual: false,
                isa,
            };
            let out = patch.wire_node(&name, op, &[x, k, b])?[0];
            patch.shunt_outside(model, OutletId::new(id, 0), out)?;
        }
        patch.apply(model)?;
        replaced += 1;
    }
    for id in model.eval_order()? {
        fuse_dense(model, id)?;
    }
    model.compact()?;
    Ok(replaced)
}

/// What the SDK's convolution ops take from a tract convolution.
struct PlainConv<'m> {
    conv: &'m Conv,
    ci: usize,
    co: usize,
    /// `[co]` f32 values.
    bias: Tensor,
}

/// `node` as a [`PlainConv`] when it is an f32 convolution (not quantised, OIHW kernel) whose
/// kernel and bias are constants.
fn plain_conv<'m>(
    model: &'m TypedModel,
    node: &'m TypedNode,
) -> TractResult<Option<PlainConv<'m>>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    if conv.q_params.is_some() || conv.kernel_fmt != KernelFormat::OIHW || node.inputs.len() != 3 {
        return Ok(None);
    }
    let (ci, co) = (
        conv.pool_spec.input_channels,
        conv.pool_spec.output_channels,
    );
    let kernel = model.outlet_fact(node.inputs[1])?.konst.as_ref();
    let bias = model.outlet_fact(node.inputs[2])?.konst.as_ref();
    let (Some(kernel), Some(bias)) = (kernel, bias) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    Ok(bias_of(bias, co)?.map(|bias| PlainConv { conv, ci, co, bias }))
}

/// A convolution's bias as `[co]` f32 values (ONNX allows one for all), `None` when it is
/// neither.
fn bias_of(bias: &Tensor, co: usize) -> TractResult<Option<Tensor>> {
    Ok(if bias.len() == 1 {
        let b = bias.cast_to_scalar::<f32>()?;
        Some(tensor1(&vec![b; co]))
    } else if bias.len() == co {
        Some(bias.cast_to::<f32>()?.into_owned().into_shape(&[co])?)
    } else {
        None
    })
}

/// Whether `node` reads an f32 image of a known NCHW or CHW shape with `spec`'s channels.
fn f32_image(model: &TypedModel, node: &TypedNode, spec: &PoolSpec) -> TractResult<bool> {
    let x = model.outlet_fact(node.inputs[0])?;
    let c = spec.input_channels;
    Ok(x.datum_type == f32::datum_type()
        && x.shape
            .as_concrete()
            .is_some_and(|s| match spec.data_format {
                DataFormat::NCHW => s.len() == 4 && s[1] == c,
                DataFormat::CHW => s.len() == 3 && s[0] == c,
                _ => false,
            }))
}

/// `(size, stride)` when `spec` describes a square window of odd side with padding `size / 2`
/// on every side, stride 1 or 2 and no dilation over `node`'s f32 NCHW or CHW input: the windows
/// the SDK's ops compute.
fn window(
    model: &TypedModel,
    node: &TypedNode,
    spec: &PoolSpec,
) -> TractResult<Option<(usize, usize)>> {
    let &[size, side] = spec.kernel_shape.as_slice() else {
        return Ok(None);
    };
    let pad = |v: &TVec<usize>| v.iter().all(|&p| p == size / 2);
    let ok = f32_image(model, node, spec)?
        && size == side
        && size % 2 == 1
        && spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|&d| d == 1))
        && match &spec.padding {
            PaddingSpec::Valid => size == 1,
            PaddingSpec::Explicit(b, a) => pad(b) && pad(a),
            PaddingSpec::ExplicitOnnxPool(b, a, ceil) => pad(b) && pad(a) && !ceil,
            _ => false,
        };
    if !ok {
        return Ok(None);
    }
    let strides = spec.strides.clone().unwrap_or_else(|| tvec![1, 1]);
    Ok(match strides.as_slice() {
        [1, 1] => Some((size, 1)),
        [2, 2] => Some((size, 2)),
        _ => None,
    })
}

/// The stride when `spec` describes a 3×3 [`window`].
fn window_stride(
    model: &TypedModel,
    node: &TypedNode,
    spec: &PoolSpec,
) -> TractResult<Option<usize>> {
    Ok(match window(model, node, spec)? {
        Some((3, stride)) => Some(stride),
        _ => None,
    })
}

/// The node that clamps `id`'s output to [0, 6] (ONNX `Clip(0, 6)`, which tract declutters to
/// `Max(x, 0)` then `Min(x, 6)`) when nothing else reads the values before the clamp.
fn relu6_after(model: &TypedModel, id: usize) -> TractResult<Option<usize>> {
    let Some(max) = only_bin_successor(model, id, "Max", Some(0.0))? else {
        return Ok(None);
    };
    only_bin_successor(model, max, "Min", Some(6.0))
}

/// The activation that alone reads `id`'s output, if any: the node whose output carries the
/// activated values and which activation (ReLU6 before ReLU, as ReLU6 starts with one).
fn activation_after(model: &TypedModel, id: usize) -> TractResult<(usize, Activation)> {
    if let Some(clip) = relu6_after(model, id)? {
        return Ok((clip, Activation::Relu6));
    }
    Ok(match only_bin_successor(model, id, "Max", Some(0.0))? {
        Some(relu) => (relu, Activation::Relu),
        None => (id, Activation::Linear),
    })
}

/// The only node reading `id`'s output when it applies the binary op `name` to it and another
/// input of the same shape: a uniform constant equal to `value` when one is given, else any
/// wire (then returned too).
fn only_bin_successor(
    model: &TypedModel,
    id: usize,
    name: &str,
    value: Option<f32>,
) -> TractResult<Option<usize>> {
    Ok(bin_successor(model, id, name, value)?.map(|(next, _)| next))
}

/// As [`only_bin_successor`], with the other input's outlet.
fn bin_successor(
    model: &TypedModel,
    id: usize,
    name: &str,
    value: Option<f32>,
) -> TractResult<Option<(usize, OutletId)>> {
    let node = model.node(id);
    let [succ] = node.outputs[0].successors.as_slice() else {
        return Ok(None);
    };
    if model.outputs.contains(&OutletId::new(id, 0)) {
        return Ok(None);
    }
    let next = model.node(succ.node);
    let Some(bin) = next.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if bin.0.name() != name || next.inputs.len() != 2 {
        return Ok(None);
    }
    let other = next.inputs[1 - succ.slot];
    let fact = model.outlet_fact(other)?;
    let ours = model.outlet_fact(OutletId::new(id, 0))?;
    let other_ok = match value {
        Some(value) => fact.konst.as_ref().is_some_and(|k| {
            k.datum_type() == f32::datum_type()
                && k.is_uniform()
                && k.cast_to_scalar::<f32>().is_ok_and(|v| v == value)
        }),
        // A residual: the same shape, values computed elsewhere.
        None => {
            fact.konst.is_none() && fact.shape == ours.shape && fact.datum_type == ours.datum_type
        }
    };
    // The operation must not broadcast the convolution's output to a larger shape.
    let same_shape = model.outlet_fact(OutletId::new(next.id, 0))?.shape == ours.shape;
    Ok((other_ok && same_shape).then_some((next.id, other)))
}

#[cfg(test)]
mod tests;
