//! The SDK's depthwise, dense and max-pool ops against tract's own on random shapes, weights and
//! strides, the matrix kernels against a plain sum, for every kernel this CPU runs; and the plan
//! rewrite on small graphs.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::gemm::{gemm, Weights};
use super::{prepare, rewrite, Activation, DenseConv, Depthwise3x3, Isa, MaxPool3x3};

/// A typed model of one depthwise 3×3 convolution (tract's own op), padding 1.
fn conv_model(
    shape: [usize; 4],
    stride: usize,
    kernel: &[f32],
    bias: &[f32],
) -> TractResult<TypedModel> {
    grouped_conv_model(shape, shape[1], shape[1], stride, kernel, bias)
}

/// A typed model of one 3×3 convolution (tract's own op) with `group` groups and `co` outputs,
/// padding 1.
fn grouped_conv_model(
    shape: [usize; 4],
    co: usize,
    group: usize,
    stride: usize,
    kernel: &[f32],
    bias: &[f32],
) -> TractResult<TypedModel> {
    window_conv_model(shape, co, group, 3, stride, kernel, bias)
}

/// A typed model of one dense `size`×`size` convolution (tract's own op), padding `size / 2`.
fn dense_model(
    shape: [usize; 4],
    co: usize,
    size: usize,
    stride: usize,
    kernel: &[f32],
    bias: &[f32],
) -> TractResult<TypedModel> {
    window_conv_model(shape, co, 1, size, stride, kernel, bias)
}

/// A typed model of one `size`×`size` convolution (tract's own op) with `group` groups and `co`
/// outputs, padding `size / 2`.
fn window_conv_model(
    shape: [usize; 4],
    co: usize,
    group: usize,
    size: usize,
    stride: usize,
    kernel: &[f32],
    bias: &[f32],
) -> TractResult<TypedModel> {
    let c = shape[1];
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(shape))?;
    let k = model.add_const(
        "k",
        Tensor::from_shape(&[co, c / group, size, size], kernel)?,
    )?;
    let b = model.add_const("b", Tensor::from_shape(&[co], bias)?)?;
    let p = size / 2;
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![size, size],
            padding: PaddingSpec::Explicit(tvec![p, p], tvec![p, p]),
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: c,
            output_channels: co,
        },
        kernel_fmt: KernelFormat::OIHW,
        group,
        q_params: None,
    };
    let y = model.wire_node("conv", conv, &[x, k, b])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

fn run(model: TypedModel, input: &Tensor) -> TractResult<Vec<f32>> {
    let plan = model.into_runnable()?;
    let out = plan.run(tvec!(input.clone().into()))?;
    Ok(out[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-5 * (1.0 + y.abs());
        assert!((x - y).abs() <= tol, "{what}: element {i}: {x} vs {y}");
    }
}

#[test]
fn every_kernel_matches_tracts_depthwise_on_random_shapes() -> TractResult<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut cases: Vec<[usize; 4]> = vec![
        [1, 1, 1, 1],
        [1, 2, 2, 3],
        [1, 3, 7, 7],
        [2, 4, 8, 9],
        [1, 5, 14, 14],
        [1, 2, 33, 40],
        [1, 1, 1, 70],
    ];
    for _ in 0..12 {
        cases.push([
            rng.random_range(1..3),
            rng.random_range(1..12),
            rng.random_range(1..40),
            rng.random_range(1..72),
        ]);
    }
    for shape in cases {
        let [n, c, h, w] = shape;
        let input = random(&mut rng, n * c * h * w);
        let kernel = random(&mut rng, c * 9);
        let bias = random(&mut rng, c);
        let x = Tensor::from_shape(&shape, &input)?;
        for stride in [1, 2] {
            let tract = run(
                conv_model(shape, stride, &kernel, &bias)?.into_optimized()?,
                &x,
            )?;
            for isa in Isa::available() {
                for relu6 in [false, true] {
                    let op = Depthwise3x3 { stride, relu6, isa };
                    let mut ours = vec![f32::NAN; tract.len()];
                    op.run(&input, (n, c, h, w), &kernel, &bias, &mut ours);
                    let want: Vec<f32> = if relu6 {
                        tract.iter().map(|v| v.clamp(0.0, 6.0)).collect()
                    } else {
                        tract.clone()
                    };
                    assert_close(
                        &ours,
                        &want,
                        &format!("{shape:?} stride {stride} {isa:?} relu6 {relu6}"),
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_rewrite_replaces_tracts_op_and_keeps_the_result() -> TractResult<()> {
    let mut rng = StdRng::seed_from_u64(11);
    let shape = [1, 6, 17, 23];
    let input = random(&mut rng, shape.iter().product());
    let kernel = random(&mut rng, 6 * 9);
    let bias = random(&mut rng, 6);
    let x = Tensor::from_shape(&shape, &input)?;
    for stride in [1, 2] {
        let model = conv_model(shape, stride, &kernel, &bias)?;
        let want = run(model.clone().into_optimized()?, &x)?;
        let mut decluttered = model.into_decluttered()?;
        assert_eq!(rewrite(&mut decluttered, Isa::detect())?, 1);
        let optimised = decluttered.into_optimized()?;
        let ops: Vec<String> = optimised
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        assert!(ops.contains(&"SdkDepthwise3x3".to_string()), "{ops:?}");
        assert!(!ops.iter().any(|o| o == "DepthWiseConv"), "{ops:?}");
        assert_close(&run(optimised, &x)?, &want, &format!("stride {stride}"));
    }
    Ok(())
}

#[test]
fn convolutions_the_op_does_not_compute_are_left_to_tract() -> TractResult<()> {
    // Stride 3 is not one of the op's strides.
    let shape = [1, 4, 9, 9];
    let model = conv_model(shape, 3, &[0.5; 36], &[0.0; 4])?;
    let mut decluttered = model.into_decluttered()?;
    assert_eq!(rewrite(&mut decluttered, Isa::detect())?, 0);
    Ok(())
}

#[test]
fn a_relu6_after_the_convolution_is_fused_and_kept_exact() -> TractResult<()> {
    use tract_onnx::tract_core::ops::math::{max, min};
    let mut rng = StdRng::seed_from_u64(13);
    let input: Vec<f32> = random(&mut rng, 600).iter().map(|v| v * 4.0).collect();
    let kernel = random(&mut rng, 45);
    let bias = random(&mut rng, 5);
    let mut model = conv_model([1, 5, 12, 10], 1, &kernel, &bias)?;
    let conv = model.output_outlets()?[0];
    let zero = model.add_const("zero", tensor4(&[[[[0f32]]]]))?;
    let six = model.add_const("six", tensor4(&[[[[6f32]]]]))?;
    let clamped_low = model.wire_node("relu6.max", max(), &[conv, zero])?;
    let clamped = model.wire_node("relu6.min", min(), &[clamped_low[0], six])?;
    model.select_output_outlets(&clamped)?;
    let mut decluttered = model.into_decluttered()?;
    // Declutter drops the batch axis of one: the op then reads CHW.
    let x4 = Tensor::from_shape(&[1, 5, 12, 10], &input)?;
    let want = run(decluttered.clone().into_optimized()?, &x4)?;
    assert!(want.contains(&6.0) && want.contains(&0.0));
    assert_eq!(rewrite(&mut decluttered, Isa::detect())?, 1);
    let ops: Vec<String> = decluttered
        .nodes()
        .iter()
        .map(|n| format!("{:?}", n.op))
        .collect();
    assert!(ops.iter().any(|o| o.contains("relu6: true")), "{ops:?}");
    assert!(
        !ops.iter().any(|o| o.contains("Max") || o.contains("Min")),
        "{ops:?}"
    );
    assert_close(
        &run(decluttered.into_optimized()?, &x4)?,
        &want,
        "relu6 fused",
    );
    Ok(())
}

#[cfg(target_arch = "aarch64")]
#[test]
fn neon_is_the_kernel_on_arm() {
    // The Arm runs of these tests (scripts/test-arm.sh) must exercise the NEON kernel.
    assert_eq!(Isa::detect(), Isa::Neon);
    assert!(Isa::available().contains(&Isa::Neon));
}

/// A typed model of one 3×3 max pool (tract's own op), padding 1 as ONNX writes it.
fn pool_model(shape: [usize; 4], stride: usize) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(shape))?;
    let pool = MaxPool {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::ExplicitOnnxPool(tvec![1, 1], tvec![1, 1], false),
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: shape[1],
            output_channels: shape[1],
        },
        with_index_outputs: None,
    };
    let y = model.wire_node("pool", pool, &[x])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

#[test]
fn every_max_kernel_matches_tracts_max_pool_on_random_shapes() -> TractResult<()> {
    let mut rng = StdRng::seed_from_u64(17);
    let mut cases: Vec<[usize; 4]> =
        vec![[1, 1, 1, 1], [1, 3, 7, 7], [1, 4, 112, 112], [2, 2, 9, 8]];
    for _ in 0..10 {
        cases.push([
            rng.random_range(1..3),
            rng.random_range(1..8),
            rng.random_range(1..40),
            rng.random_range(1..72),
        ]);
    }
    for shape in cases {
        let [n, c, h, w] = shape;
        // All negative in one case: the padding must never win.
        let shift = if c % 2 == 0 { -3.0 } else { 0.0 };
        let input: Vec<f32> = random(&mut rng, n * c * h * w)
            .iter()
            .map(|v| v + shift)
            .collect();
        let x = Tensor::from_shape(&shape, &input)?;
        for stride in [1, 2] {
            let tract = run(pool_model(shape, stride)?.into_optimized()?, &x)?;
            for isa in Isa::available() {
                let mut ours = vec![f32::NAN; tract.len()];
                MaxPool3x3 { stride, isa }.run(&input, (n, c, h, w), &mut ours);
                // A maximum is one of the inputs: equal, not just close.
                assert_eq!(ours, tract, "{shape:?} stride {stride} {isa:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn the_rewrite_replaces_tracts_max_pool() -> TractResult<()> {
    let mut rng = StdRng::seed_from_u64(19);
    let shape = [1, 3, 21, 18];
    let input = random(&mut rng, shape.iter().product());
    let x = Tensor::from_shape(&shape, &input)?;
    let model = pool_model(shape, 2)?;
    let want = run(model.clone().into_optimized()?, &x)?;
    let mut decluttered = model.into_decluttered()?;
    assert_eq!(rewrite(&mut decluttered, Isa::detect())?, 1);
    let optimised = decluttered.into_optimized()?;
    let ops: Vec<String> = optimised
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    assert!(ops.contains(&"SdkMaxPool3x3".to_string()), "{ops:?}");
    assert_eq!(run(optimised, &x)?, want);
    Ok(())
}

#[test]
fn every_matrix_kernel_matches_a_plain_sum() {
    // Heights around the tiles' (4 and 8 rows), widths around theirs (8 to 48 columns), and
    // offsets that overlap, as a 3×3 convolution's taps do.
    let mut rng = StdRng::seed_from_u64(31);
    for case in 0..40 {
        let m = [1, 3, 4, 8, 9, 17][case % 6];
        let k = rng.random_range(1..40);
        let n = [1, 7, 8, 13, 24, 47, 48, 49, 100][case % 9];
        let offsets: Vec<usize> = (0..k).map(|_| rng.random_range(0..30)).collect();
        let src = random(&mut rng, 30 + n);
        let weights = random(&mut rng, m * k);
        let bias = random(&mut rng, m);
        let view = Weights {
            m,
            k,
            weights: &weights,
            bias: &bias,
        };
        for act in [Activation::Linear, Activation::Relu, Activation::Relu6] {
            let want: Vec<f32> = (0..m)
                .flat_map(|r| {
                    let (w, b, s, o) = (&weights, bias[r], &src, &offsets);
                    (0..n).map(move |j| {
                        act.apply(b + (0..k).map(|kk| w[r * k + kk] * s[o[kk] + j]).sum::<f32>())
                    })
                })
                .collect();
            for isa in Isa::available() {
                // Rows of `n + 3`: the columns past `n` must stay untouched.
                let ldo = n + 3;
                let mut out = vec![f32::NAN; m * ldo];
                gemm(isa, view, &src, &offsets, n, act, &mut out, ldo);
                let ours: Vec<f32> = out.chunks(ldo).flat_map(|r| r[..n].to_vec()).collect();
                let what = format!("m {m} k {k} n {n} {act:?} {isa:?}");
                assert_close(&ours, &want, &what);
                assert!(
                    out.chunks(ldo).all(|r| r[n..].iter().all(|v| v.is_nan())),
                    "{what}: wrote past n"
                );
            }
        }
    }
}

#[test]
fn every_kernel_matches_tracts_dense_convolution() -> TractResult<()> {
    let mut rng = StdRng::seed_from_u64(23);
    // MobileNetV2's stem, ResNet-18's on a smaller photo (the Arm runs of these tests are
    // emulated), a ResNet layer-4 shape, and random ones around the tiles.
    let mut cases: Vec<([usize; 4], usize, usize)> = vec![
        ([1, 3, 224, 224], 32, 3),
        ([1, 3, 61, 58], 64, 7),
        ([1, 64, 7, 7], 24, 3),
        ([1, 1, 1, 1], 1, 7),
        ([1, 2, 5, 4], 3, 5),
        ([1, 1, 1, 1], 1, 3),
        ([1, 1, 1, 1], 1, 1),
        ([1, 40, 14, 14], 17, 1),
    ];
    for _ in 0..12 {
        cases.push((
            [
                rng.random_range(1..3),
                rng.random_range(1..24),
                rng.random_range(1..30),
                rng.random_range(1..50),
            ],
            rng.random_range(1..20),
            [1, 3, 5, 7][rng.random_range(0..4)],
        ));
    }
    for (shape, co, size) in cases {
        let [n, ci, h, w] = shape;
        let input = random(&mut rng, n * ci * h * w);
        let kernel = random(&mut rng, co * ci * size * size);
        let bias = random(&mut rng, co);
        let x = Tensor::from_shape(&shape, &input)?;
        for stride in [1, 2] {
            let model = dense_model(shape, co, size, stride, &kernel, &bias)?;
            let tract = run(model.into_optimized()?, &x)?;
            // Σ|w·x| + |b| of every output: the rounding of a long sum scales with it, not with
            // the (possibly cancelled) result.
            let abs = |v: &[f32]| v.iter().map(|v| v.abs()).collect::<Vec<f32>>();
            let magnitude = run(
                dense_model(shape, co, size, stride, &abs(&kernel), &abs(&bias))?
                    .into_optimized()?,
                &Tensor::from_shape(&shape, &abs(&input))?,
            )?;
            let residual = random(&mut rng, tract.len());
            let weights = Weights {
                m: co,
                k: ci * size * size,
                weights: &kernel,
                bias: &bias,
            };
            for isa in Isa::available() {
                for act in [Activation::Linear, Activation::Relu, Activation::Relu6] {
                    for with_residual in [false, true] {
                        let op = DenseConv {
                            size,
                            stride,
                            co,
                            ci,
                            act,
                            residual: with_residual,
                            isa,
                        };
                        let r = with_residual.then_some(&residual[..]);
                        let mut ours = vec![f32::NAN; tract.len()];
                        op.run(&input, (n, ci, h, w), weights, r, &mut ours);
                        let want: Vec<f32> = tract
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| act.apply(v + r.map_or(0.0, |r| r[i])))
                            .collect();
                        let what = format!(
                            "{shape:?}->{co} {size}x{size} stride {stride} {isa:?} {act:?} residual {with_residual}"
                        );
                        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                            let tol = 1e-5 * (1.0 + b.abs() + r.map_or(0.0, |r| r[i].abs()))
                                + 1e-7 * magnitude[i];
                            assert!((a - b).abs() <= tol, "{what}: element {i}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The ops of `model` by name.
fn op_names(model: &TypedModel) -> Vec<String> {
    model
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect()
}

#[test]
fn the_rewrite_takes_dense_convolutions_of_any_width_and_leaves_grouped_ones_to_tract(
) -> TractResult<()> {
    let mut rng = StdRng::seed_from_u64(29);
    for (shape, co, stride) in [([1, 3, 19, 26], 8, 2), ([1, 12, 9, 11], 20, 1)] {
        let ci = shape[1];
        let input = random(&mut rng, shape.iter().product());
        let kernel = random(&mut rng, co * ci * 9);
        let bias = random(&mut rng, co);
        let x = Tensor::from_shape(&shape, &input)?;
        let model = dense_model(shape, co, 3, stride, &kernel, &bias)?;
        let want = run(model.clone().into_optimized()?, &x)?;
        let mut decluttered = model.into_decluttered()?;
        assert_eq!(rewrite(&mut decluttered, Isa::detect())?, 1);
        let optimised = decluttered.into_optimized()?;
        let ops = op_names(&optimised);
        assert!(ops.contains(&"SdkConv".to_string()), "{ops:?}");
        assert_close(&run(optimised, &x)?, &want, &format!("{shape:?}"));
    }
    // Two groups of four channels: neither depthwise nor dense.
    let grouped = grouped_conv_model([1, 8, 9, 9], 4, 2, 1, &[0.1; 4 * 4 * 9], &[0.0; 4])?;
    assert_eq!(rewrite(&mut grouped.into_decluttered()?, Isa::detect())?, 0);
    Ok(())
}

#[test]
fn a_residual_and_relu_after_a_pointwise_convolution_are_fused_and_kept_exact() -> TractResult<()> {
    use tract_onnx::tract_core::ops::math::{add, max};
    let mut rng = StdRng::seed_from_u64(37);
    let shape = [1, 16, 10, 12];
    let input = random(&mut rng, shape.iter().product());
    let kernel = random(&mut rng, 16 * 16);
    let bias = random(&mut rng, 16);
    // x → 1×1 conv → + x → ReLU, as a residual block ends.
    let mut model = dense_model(shape, 16, 1, 1, &kernel, &bias)?;
    let conv = model.output_outlets()?[0];
    let x = model.input_outlets()?[0];
    let sum = model.wire_node("residual", add(), &[conv, x])?;
    let zero = model.add_const("zero", tensor4(&[[[[0f32]]]]))?;
    let relu = model.wire_node("relu", max(), &[sum[0], zero])?;
    model.select_output_outlets(&relu)?;
    let x = Tensor::from_shape(&shape, &input)?;
    let want = run(model.clone().into_optimized()?, &x)?;
    assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
    let isa = Isa::detect();
    assert_eq!(prepare(&mut model, isa)?, 1);
    let mut decluttered = model.into_decluttered()?;
    rewrite(&mut decluttered, isa)?;
    let fused: Vec<&DenseConv> = decluttered
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<DenseConv>())
        .collect();
    assert_eq!(fused.len(), 1);
    assert!(
        fused[0].residual && fused[0].act == Activation::Relu,
        "{fused:?}"
    );
    let ops = op_names(&decluttered);
    assert!(!ops.iter().any(|o| o == "Add" || o == "Max"), "{ops:?}");
    assert_close(
        &run(decluttered.into_optimized()?, &x)?,
        &want,
        "residual fused",
    );
    Ok(())
}
