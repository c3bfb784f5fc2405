//! The SDK's own depthwise 3×3 convolution: the op that replaces tract's generic `DepthWiseConv`
//! in a loaded plan, with bias and an optional ReLU6 fused, and its SIMD row kernels.
//!
//! MobileNetV2 spends most of its time in its 17 depthwise convolutions when tract runs them
//! (`cargo bench -p mpox-e2e --bench sdk_profile`, docs/results.md). Each output row is a sum of
//! nine shifted input rows; the op copies a channel once into a zero-bordered plane (split into
//! even and odd columns for stride 2), so every tap becomes one contiguous row and the kernels
//! below are a plain multiply-add over rows, vectorised across the row.

#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
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
        if Isa::detect() != Isa::Portable {
            all.push(Isa::detect());
        }
        all
    }

    /// `out[x] = clamp(bias + Σ_k w[k]·taps[k][x])` for every `x` of `out`.
    fn row(self, taps: &[&[f32]; 9], w: &[f32; 9], bias: f32, relu6: bool, out: &mut [f32]) {
        // The SIMD kernels read whole vectors past the row's end (their results are dropped).
        let readable = out.len().next_multiple_of(LANES);
        assert!(taps.iter().all(|t| t.len() >= readable));
        match self {
            Isa::Portable => portable::row(taps, w, bias, relu6, out),
            // SAFETY: `detect` chose this kernel only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { x86::row(taps, w, bias, relu6, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::row(taps, w, bias, relu6, out) },
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
    /// Output height or width for an input one.
    pub fn out_len(&self, len: usize) -> usize {
        (len + 2 - 3) / self.stride + 1
    }

    /// Runs the op on plain slices: `input` is `[n, c, h, w]`, `kernel` `[c, 9]`, `bias` `[c]`,
    /// `out` `[n, c, out_len(h), out_len(w)]`.
    pub fn run(
        &self,
        input: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        kernel: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        let (ho, wo) = (self.out_len(h), self.out_len(w));
        assert!(input.len() == n * c * h * w && out.len() == n * c * ho * wo);
        assert!(kernel.len() == c * 9 && bias.len() == c);
        if ho * wo == 0 {
            return;
        }
        let mut planes = Planes::new(self.stride, h, w, ho, wo);
        for (plane, (img, dst)) in input
            .chunks_exact(h * w)
            .zip(out.chunks_exact_mut(ho * wo))
            .enumerate()
        {
            let ch = plane % c;
            let wk: &[f32; 9] = kernel[ch * 9..ch * 9 + 9].try_into().expect("9 taps");
            planes.fill(img);
            let pitch = planes.pitch;
            let (taps, long) = planes.taps_and_output();
            self.isa.row(&taps, wk, bias[ch], self.relu6, long);
            for (oy, row) in dst.chunks_exact_mut(wo).enumerate() {
                row.copy_from_slice(&long[oy * pitch..][..wo]);
            }
        }
    }
}

/// One channel copied into zero-bordered planes laid out so that the whole output channel is
/// one long row of a multiply-add over nine slices (the kernels' per-call cost is paid once per
/// channel, not per output row, which matters on 7×7 and 14×14 maps).
///
/// Output point (oy, ox) sits at `oy·pitch + ox` of the long row; the `pitch - wo` points
/// between two output rows are computed and dropped. For stride 1 the one plane is the padded
/// channel. For stride 2 the padded channel is split four ways by row and column parity, so
/// that tap (ky, kx) of every output point lies at the same offset of one of the four.
struct Planes {
    stride: usize,
    h: usize,
    w: usize,
    /// Values per plane row.
    pitch: usize,
    /// Stride 1: `[padded]`. Stride 2: `[even rows even cols, even rows odd cols, odd rows
    /// even cols, odd rows odd cols]` of the padded channel.
    planes: Vec<Vec<f32>>,
    /// The output channel in pitch layout.
    long: Vec<f32>,
}

impl Planes {
    fn new(stride: usize, h: usize, w: usize, ho: usize, wo: usize) -> Planes {
        let (pitch, rows, count) = if stride == 1 {
            (w + 2, h + 2, 1)
        } else {
            (wo + 1, ho + 1, 4)
        };
        // Room for the kernels' whole-vector reads past the last point.
        let len = rows * pitch + LANES;
        Planes {
            stride,
            h,
            w,
            pitch,
            planes: vec![vec![0.0; len]; count],
            long: vec![0.0; (ho - 1) * pitch + wo],
        }
    }

    /// Copies one `h × w` channel in; the borders stay zero.
    fn fill(&mut self, img: &[f32]) {
        let p = self.pitch;
        for (y, src) in img.chunks_exact(self.w).enumerate().take(self.h) {
            if self.stride == 1 {
                let r = (y + 1) * p + 1;
                self.planes[0][r..r + self.w].copy_from_slice(src);
                continue;
            }
            // Padded (y + 1, x + 1): row parity picks the pair of planes, even x lands in the
            // odd-column plane at x / 2, odd x in the even-column one at (x + 1) / 2.
            let padded_y = y + 1;
            let (parity, r) = (padded_y % 2, padded_y / 2 * p);
            let [even_cols, odd_cols] = &mut self.planes[2 * parity..2 * parity + 2] else {
                unreachable!("four planes for stride 2");
            };
            let (even, odd) = (&mut even_cols[r + 1..r + p], &mut odd_cols[r..r + p]);
            let pairs = src.chunks_exact(2);
            if let [last] = pairs.remainder() {
                odd[self.w / 2] = *last;
            }
            for ((pair, e), o) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
                *o = pair[0];
                *e = pair[1];
            }
        }
    }

    /// The nine tap slices in kernel order (row-major 3×3), each running on to the end of its
    /// plane, and the long output row they fill.
    fn taps_and_output(&mut self) -> ([&[f32]; 9], &mut [f32]) {
        let p = self.pitch;
        let planes = &self.planes;
        let taps = if self.stride == 1 {
            std::array::from_fn(|k| &planes[0][(k / 3) * p + k % 3..])
        } else {
            std::array::from_fn(|k| {
                let (ky, kx) = (k / 3, k % 3);
                &planes[2 * (ky % 2) + kx % 2][(ky / 2) * p + kx / 2..]
            })
        };
        (taps, &mut self.long)
    }
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
        let (n, c, h, w) = match *img.shape() {
            [n, c, h, w] => (n, c, h, w),
            [c, h, w] => (1, c, h, w),
            ref other => bail!("SdkDepthwise3x3 takes NCHW or CHW input, got {other:?}"),
        };
        ensure!(kernel.len() == c * 9 && bias.len() == c);
        let mut shape: TVec<usize> = img.shape().into();
        let r = shape.len();
        shape[r - 2] = self.out_len(h);
        shape[r - 1] = self.out_len(w);
        // SAFETY: `run` writes every element of the output.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        self.run(
            img.try_as_plain_ram()?.as_slice::<f32>()?,
            (n, c, h, w),
            kernel.try_as_plain_ram()?.as_slice::<f32>()?,
            bias.try_as_plain_ram()?.as_slice::<f32>()?,
            out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.clone();
        let r = shape.rank();
        ensure!(r == 3 || r == 4, "SdkDepthwise3x3 takes NCHW or CHW input");
        for axis in [r - 2, r - 1] {
            let len = self.out_len(shape[axis].to_usize()?);
            shape.set(axis, len.into());
        }
        Ok(tvec!(f32::fact(shape)))
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

/// Replaces, in a decluttered model, every depthwise 3×3 f32 convolution that the SDK's op
/// computes (NCHW or CHW, padding 1, stride 1 or 2, no dilation, constant kernel and bias) by
/// [`Depthwise3x3`] running `isa`, fusing a ReLU6 that follows it alone. Returns how many it
/// replaced.
pub fn rewrite(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(stride) = eligible(model, node, conv)? else {
            continue;
        };
        let kernel = model.outlet_fact(node.inputs[1])?.konst.clone();
        let bias = model.outlet_fact(node.inputs[2])?.konst.clone();
        let (Some(kernel), Some(bias)) = (kernel, bias) else {
            continue;
        };
        let c = conv.pool_spec.input_channels;
        let bias = if bias.len() == 1 {
            let b = bias.cast_to_scalar::<f32>()?;
            tensor1(&vec![b; c])
        } else if bias.len() == c {
            bias.into_tensor().into_shape(&[c])?
        } else {
            continue;
        };
        let kernel = kernel.into_tensor().into_shape(&[c, 9])?;
        // A ReLU6 read only by this convolution is folded into it.
        let (last, relu6) = match relu6_after(model, id)? {
            Some(clip) => (clip, true),
            None => (id, false),
        };
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new("sdk-depthwise");
        let x = patch.tap_model(model, node.inputs[0])?;
        let k = patch.add_const(format!("{name}.sdk_kernel"), kernel)?;
        let b = patch.add_const(format!("{name}.sdk_bias"), bias)?;
        let op = Depthwise3x3 { stride, relu6, isa };
        let out = patch.wire_node(&name, op, &[x, k, b])?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), out)?;
        patch.apply(model)?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}

/// The stride when `conv` is a convolution the SDK's op computes exactly.
fn eligible(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<usize>> {
    let spec = &conv.pool_spec;
    let x = model.outlet_fact(node.inputs[0])?;
    let c = spec.input_channels;
    let ok = conv.q_params.is_none()
        && x.datum_type == f32::datum_type()
        && x.shape
            .as_concrete()
            .is_some_and(|s| match spec.data_format {
                DataFormat::NCHW => s.len() == 4 && s[1] == c,
                DataFormat::CHW => s.len() == 3 && s[0] == c,
                _ => false,
            })
        && conv.kernel_fmt == KernelFormat::OIHW
        && conv.group == c
        && spec.output_channels == c
        && spec.kernel_shape.as_slice() == [3, 3]
        && spec
            .dilations
            .as_ref()
            .is_none_or(|d| d.iter().all(|&d| d == 1))
        && matches!(&spec.padding, PaddingSpec::Explicit(b, a) if b.as_slice() == [1, 1] && a.as_slice() == [1, 1])
        && node.inputs.len() == 3;
    if !ok {
        return Ok(None);
    }
    let strides = spec.strides.clone().unwrap_or_else(|| tvec![1, 1]);
    Ok(match strides.as_slice() {
        [1, 1] => Some(1),
        [2, 2] => Some(2),
        _ => None,
    })
}

/// The node that clamps `id`'s output to [0, 6] (ONNX `Clip(0, 6)`, which tract declutters to
/// `Max(x, 0)` then `Min(x, 6)`) when nothing else reads the values before the clamp.
fn relu6_after(model: &TypedModel, id: usize) -> TractResult<Option<usize>> {
    /// The only node reading `id`'s output when it applies the binary op `name` with a uniform
    /// constant equal to `value`.
    fn only_bin_successor(
        model: &TypedModel,
        id: usize,
        name: &str,
        value: f32,
    ) -> TractResult<Option<usize>> {
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
        let Some(k) = model.outlet_fact(other)?.konst.as_ref() else {
            return Ok(None);
        };
        let uniform = k.datum_type() == f32::datum_type()
            && k.is_uniform()
            && k.cast_to_scalar::<f32>()? == value;
        // The clamp must not broadcast the convolution's output to a larger shape.
        let same_shape = model.outlet_fact(OutletId::new(next.id, 0))?.shape
            == model.outlet_fact(OutletId::new(id, 0))?.shape;
        Ok((uniform && same_shape).then_some(next.id))
    }
    let Some(max) = only_bin_successor(model, id, "Max", 0.0)? else {
        return Ok(None);
    };
    only_bin_successor(model, max, "Min", 6.0)
}

#[cfg(test)]
mod tests;
