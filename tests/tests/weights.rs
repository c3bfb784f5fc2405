//! Loading torchvision-named weight files that we generate ourselves.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use mpox_e2e::{max_abs_diff, random_network, temp_dir};
use mpox_trainer::models::{Arch, Network};
use mpox_trainer::Error;

fn tensors_of(net: &Network) -> HashMap<String, Tensor> {
    net.varmap()
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect()
}

#[test]
fn resnet18_weights_round_trip_through_a_torchvision_named_file() {
    let dir = temp_dir("weights-resnet");
    let a = random_network(Arch::ResNet18, 2, 21);
    let mut t = tensors_of(&a);
    // What a torchvision state dict also holds: batch counters and a 1000-class ImageNet head.
    t.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[7i64], &Device::Cpu).unwrap(),
    );
    t.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 512), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    t.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.join("resnet18_imagenet_like.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();

    let b = Network::new(Arch::ResNet18, 2, 99, &Device::Cpu).unwrap();
    let report = b.load_weights(&path).unwrap();
    assert_eq!(
        report.loaded, 100,
        "20 convolutions and 20 BatchNorms, not the head"
    );
    assert_eq!(report.head_kept.len(), 2);
    assert!(report
        .ignored
        .contains(&"bn1.num_batches_tracked".to_string()));
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let fa = Network::pool(&a.features(&x, false).unwrap()).unwrap();
    let fb = Network::pool(&b.features(&x, false).unwrap()).unwrap();
    assert_eq!(max_abs_diff(&fa, &fb), 0.0);
}

#[test]
fn a_mismatched_file_names_every_missing_and_mis_shaped_tensor() {
    let dir = temp_dir("weights-bad");
    let a = random_network(Arch::MobileNetV2 { width: 0.5 }, 2, 22);
    let mut t = tensors_of(&a);
    t.remove("features.3.conv.1.0.weight").unwrap();
    t.remove("features.18.1.running_var").unwrap();
    t.insert(
        "features.0.0.weight".into(),
        Tensor::zeros((16, 3, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.join("broken.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();
    let b = Network::new(Arch::MobileNetV2 { width: 0.5 }, 2, 0, &Device::Cpu).unwrap();
    match b.load_weights(&path) {
        Err(Error::WeightMismatch {
            missing,
            mis_shaped,
            ..
        }) => {
            assert_eq!(missing.len(), 2, "{missing:?}");
            assert!(missing[0].starts_with("features.18.1.running_var"));
            assert!(missing[1].starts_with("features.3.conv.1.0.weight"));
            assert_eq!(mis_shaped.len(), 1);
            assert!(mis_shaped[0].contains("features.0.0.weight"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // The message names them too, for the CLI user.
    let msg = b.load_weights(&path).unwrap_err().to_string();
    assert!(
        msg.contains("features.3.conv.1.0.weight") && msg.contains("wrong shape"),
        "{msg}"
    );
    // Loading into another architecture fails the same way, naming what the file has instead.
    let r = Network::new(Arch::ResNet18, 2, 0, &Device::Cpu)
        .unwrap()
        .load_weights(&path);
    match r {
        Err(Error::WeightMismatch {
            missing,
            unexpected,
            ..
        }) => {
            assert_eq!(missing.len(), 100);
            assert!(unexpected.iter().any(|u| u.starts_with("features.")));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_checkpoint_needs_its_head_and_garbage_is_a_clear_error() {
    let dir = temp_dir("weights-ckpt");
    let a = random_network(Arch::MobileNetV2 { width: 0.35 }, 2, 23);
    let path = dir.join("model.safetensors");
    a.save(&path).unwrap();
    let b = Network::new(Arch::MobileNetV2 { width: 0.35 }, 2, 1, &Device::Cpu).unwrap();
    b.load_checkpoint(&path).unwrap();
    let three = Network::new(Arch::MobileNetV2 { width: 0.35 }, 3, 1, &Device::Cpu).unwrap();
    assert!(matches!(
        three.load_checkpoint(&path),
        Err(Error::WeightMismatch { .. })
    ));
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a weights file at all").unwrap();
    assert!(matches!(b.load_weights(&junk), Err(Error::Weights { .. })));
    assert!(matches!(
        b.load_weights(&dir.join("absent.safetensors")),
        Err(Error::Io { .. })
    ));
}
