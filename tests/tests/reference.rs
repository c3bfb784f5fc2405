//! Our candle networks against PyTorch/torchvision outputs in the shared data folder's
//! `reference/` (`$MPOX_SHARED`, see `mpox_e2e::shared`): a seeded input, MobileNetV2 with the
//! ImageNet weights, a seeded ResNet-18.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use mpox_e2e::{export, max_abs_diff, shared};
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::{Arch, Network};

fn expected() -> Option<HashMap<String, Tensor>> {
    let dir = shared()?;
    Some(
        candle_core::safetensors::load(dir.join("reference/expected.safetensors"), &Device::Cpu)
            .unwrap(),
    )
}

/// Largest |a − b| relative to max(1, largest |b|).
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    max_abs_diff(a, b) / scale.max(1.0)
}

fn sdk_logits(net: &Network, input: &Tensor) -> Tensor {
    let screener = Screener::from_bytes(&export(net, 224), ScreenerOptions::default()).unwrap();
    let n = input.dim(0).unwrap();
    let rows: Vec<Tensor> = (0..n)
        .map(|i| {
            let x = input
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            Tensor::new(screener.infer(&x).unwrap().logits, &Device::Cpu).unwrap()
        })
        .collect();
    Tensor::stack(&rows, 0).unwrap()
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    let Some(e) = expected() else { return };
    let dir = shared().unwrap();
    let net = Network::new(Arch::MobileNetV2 { width: 1.0 }, 2, 0, &Device::Cpu).unwrap();
    let report = net
        .load_checkpoint(&dir.join("reference/mobilenet_v2_2class.safetensors"))
        .unwrap();
    assert!(report.head_kept.is_empty());
    let x = &e["input"];
    let features = net.features(x, false).unwrap();
    let gap = Network::pool(&features).unwrap();
    let logits = net.classify(&gap).unwrap();
    let d = [
        rel_diff(&features, &e["mobilenet_v2_features"]),
        rel_diff(&gap, &e["mobilenet_v2_gap"]),
        rel_diff(&logits, &e["mobilenet_v2_logits"]),
    ];
    let tract = rel_diff(&sdk_logits(&net, x), &e["mobilenet_v2_logits"]);
    eprintln!("mobilenet_v2 vs torchvision: features {:.2e} gap {:.2e} logits {:.2e}; tract logits {tract:.2e}", d[0], d[1], d[2]);
    assert!(d.iter().all(|&v| v < 1e-4), "{d:?}");
    assert!(tract < 1e-4, "{tract}");
}

#[test]
fn imagenet_features_load_with_nothing_missing_from_safetensors_and_pth() {
    let Some(dir) = shared() else { return };
    let safetensors = dir.join("weights/mobilenet_v2_imagenet_features.safetensors");
    if !safetensors.is_file() {
        eprintln!("note: {} not found; test skipped", safetensors.display());
        return;
    }
    let a = Network::new(Arch::MobileNetV2 { width: 1.0 }, 2, 0, &Device::Cpu).unwrap();
    let ra = a.load_weights(&safetensors).unwrap();
    // 52 convolutions + 52 BatchNorms × 4 tensors; only the new head is left at its initial values.
    assert_eq!(ra.loaded, 260);
    assert_eq!(ra.head_kept.len(), 2);
    let b = Network::new(Arch::MobileNetV2 { width: 1.0 }, 2, 0, &Device::Cpu).unwrap();
    let rb = b
        .load_weights(&dir.join("reference/mobilenet_v2_imagenet_features.pth"))
        .unwrap();
    assert_eq!(rb.loaded, 260);
    let va = a.varmap().data().lock().unwrap();
    let vb = b.varmap().data().lock().unwrap();
    for (name, var) in va.iter() {
        let other = &vb[name];
        let diff = (var.as_tensor() - other.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(
            diff.to_scalar::<f32>().unwrap(),
            0.0,
            "{name} differs between .pth and .safetensors"
        );
    }
}

#[test]
fn resnet18_matches_torchvision() {
    let Some(e) = expected() else { return };
    let dir = shared().unwrap();
    let net = Network::new(Arch::ResNet18, 2, 0, &Device::Cpu).unwrap();
    net.load_checkpoint(&dir.join("reference/resnet18_seeded.safetensors"))
        .unwrap();
    let x = &e["input"];
    let gap = Network::pool(&net.features(x, false).unwrap()).unwrap();
    let logits = net.classify(&gap).unwrap();
    let d = [
        rel_diff(&gap, &e["resnet18_gap"]),
        rel_diff(&logits, &e["resnet18_logits"]),
    ];
    let tract = rel_diff(&sdk_logits(&net, x), &e["resnet18_logits"]);
    eprintln!(
        "resnet18 vs torchvision: gap {:.2e} logits {:.2e}; tract logits {tract:.2e}",
        d[0], d[1]
    );
    assert!(d.iter().all(|&v| v < 1e-4), "{d:?}");
    assert!(tract < 1e-4, "{tract}");
}
