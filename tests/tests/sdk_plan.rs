//! The plan the SDK runs: MobileNetV2's and ResNet-18's convolutions (their activations and
//! residual additions fused) and ResNet-18's max pool go through the SDK's own ops, and
//! `Screener::profile` accounts for the nodes of that plan.

use mpox_e2e::{export, photo, random_network, tiny_model};
use mpox_sdk::{Error, Screener, ScreenerOptions};
use mpox_trainer::models::Arch;

const SIZE: u32 = 96;

#[test]
fn mobilenet_depthwise_convolutions_run_the_sdks_op() {
    let screener = Screener::from_bytes(&tiny_model(SIZE), ScreenerOptions::default()).unwrap();
    let input = screener
        .info()
        .meta
        .preprocessing
        .views_tensor(&photo(3, true, SIZE), 1)
        .unwrap();
    let nodes = screener.profile(&input, 2).unwrap();
    let count = |op: &str| nodes.iter().filter(|n| n.op == op).count();
    // MobileNetV2 has 17 depthwise 3×3 convolutions, every one followed by a ReLU6.
    assert_eq!(count("SdkDepthwise3x3"), 17, "{nodes:#?}");
    assert_eq!(count("DepthWiseConv"), 0);
    // The stem, the 34 pointwise convolutions of the blocks and the last one run the SDK's dense
    // op; every ReLU6 and every residual addition is fused into a convolution.
    assert_eq!(count("SdkConv"), 36, "{nodes:#?}");
    let ops: Vec<&str> = nodes.iter().map(|n| n.op.as_str()).collect();
    assert!(
        !ops.iter().any(|o| o.contains("Max") || o.contains("Add")),
        "{ops:?}"
    );
    assert!(nodes.iter().all(|n| n.ms >= 0.0));
    assert!(nodes.iter().map(|n| n.ms).sum::<f64>() > 0.0);
    let dw_fmas: u64 = nodes
        .iter()
        .filter(|n| n.op == "SdkDepthwise3x3")
        .map(|n| n.fmas)
        .sum();
    // The stem halves 96 px to 48, so the first depthwise layer alone does 48·48·16·9 (width
    // 0.35 rounds its 32 channels to 16).
    assert!(dw_fmas >= 48 * 48 * 16 * 9, "{dw_fmas}");
}

#[test]
fn profile_refuses_a_wrong_input_length() {
    let screener = Screener::from_bytes(&tiny_model(SIZE), ScreenerOptions::default()).unwrap();
    let err = screener.profile(&[0.0; 10], 1).unwrap_err();
    assert!(matches!(err, Error::Inference { .. }), "{err:?}");
}

#[test]
fn resnet_convolutions_and_max_pool_run_the_sdks_ops() {
    let bytes = export(&random_network(Arch::ResNet18, 2, 5), 64);
    let screener = Screener::from_bytes(&bytes, ScreenerOptions::default()).unwrap();
    let input = vec![0.25f32; screener.info().meta.preprocessing.tensor_len()];
    let nodes = screener.profile(&input, 1).unwrap();
    let ops: Vec<&str> = nodes.iter().map(|n| n.op.as_str()).collect();
    assert_eq!(
        ops.iter().filter(|&&o| o == "SdkMaxPool3x3").count(),
        1,
        "{ops:?}"
    );
    assert!(!ops.contains(&"OptMaxPool"), "{ops:?}");
    // Every convolution: the 7×7 stem, the 16 3×3 ones of the blocks, the three strided 1×1
    // projections and the class-map head's 1×1; their ReLUs and residual additions fused, so
    // tract runs only the classifier's product.
    assert_eq!(
        ops.iter().filter(|&&o| o == "SdkConv").count(),
        21,
        "{ops:?}"
    );
    for tracts in ["OptMaxByScalar", "Pad", "Downsample", "LazyIm2col"] {
        assert!(!ops.contains(&tracts), "{ops:?}");
    }
    assert!(!ops.iter().any(|o| o.contains("Add")), "{ops:?}");
}

#[test]
fn threads_give_the_same_logits_and_bad_counts_are_refused() {
    let bytes = tiny_model(SIZE);
    let load = |threads| {
        Screener::from_bytes(
            &bytes,
            ScreenerOptions {
                threads,
                ..Default::default()
            },
        )
    };
    let one = load(None).unwrap();
    let input = one
        .info()
        .meta
        .preprocessing
        .views_tensor(&photo(4, true, SIZE), 1)
        .unwrap();
    let want = one.infer(&input).unwrap();
    for threads in [1, 2, 4] {
        let got = load(Some(threads)).unwrap().infer(&input).unwrap();
        assert_eq!(got, want, "{threads} threads");
    }
    for bad in [0, mpox_sdk::MAX_THREADS + 1] {
        let err = load(Some(bad)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption { option, .. } if option == "threads"),
            "{err:?}"
        );
    }
}
