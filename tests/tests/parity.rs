//! candle ↔ tract parity of exported models: the SDK must compute what the trainer computed.

use mpox_e2e::{export, photo, random_network, shared, temp_dir};
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::check::parity;
use mpox_trainer::models::{Arch, Network};

/// Writes `n` generated photos of assorted sizes and returns their paths.
fn photos(name: &str, n: usize) -> Vec<std::path::PathBuf> {
    let dir = temp_dir(name);
    (0..n)
        .map(|i| {
            let img = photo(i as u64, i % 2 == 0, 150 + 37 * i as u32);
            let path = dir.join(format!("p{i}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect()
}

fn check(net: &Network, input_size: u32, name: &str) -> f32 {
    let bytes = export(net, input_size);
    let screener = Screener::from_bytes(&bytes, ScreenerOptions::default()).unwrap();
    let p = parity(net, &screener, &photos(name, 4)).unwrap();
    let largest = p
        .images
        .iter()
        .flat_map(|i| i.candle.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "{name}: max_abs_diff={:.3e} rel_diff={:.3e} (largest |logit| {largest:.2})",
        p.max_abs_diff, p.rel_diff
    );
    assert!(
        largest > 0.5,
        "logits too small to make the comparison meaningful"
    );
    assert!(p.rel_diff <= 1e-5, "{name}: rel_diff {}", p.rel_diff);
    p.rel_diff
}

#[test]
fn mobilenet_v2_random_weights() {
    let net = random_network(Arch::MobileNetV2 { width: 1.0 }, 2, 1);
    check(&net, 224, "mobilenet_v2-224");
}

#[test]
fn mobilenet_v2_narrow_three_classes() {
    let net = random_network(Arch::MobileNetV2 { width: 0.5 }, 3, 2);
    check(&net, 160, "mobilenet_v2_w0.5-160-3class");
}

#[test]
fn resnet18_random_weights() {
    let net = random_network(Arch::ResNet18, 2, 3);
    check(&net, 224, "resnet18-224");
}

#[test]
fn resnet18_odd_input_size() {
    // 100 px: feature maps of odd sizes exercise the max pool's padding.
    let net = random_network(Arch::ResNet18, 2, 4);
    check(&net, 100, "resnet18-100");
}

#[test]
fn mobilenet_v2_imagenet_weights() {
    let Some(shared) = shared() else { return };
    let net = Network::new(
        Arch::MobileNetV2 { width: 1.0 },
        2,
        5,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    // The ImageNet features with torchvision's own seeded 2-class head (the PyTorch reference
    // model): realistic logits. A random head scaled up ×50 instead makes the two logits large
    // but mostly cancelling sums, and measured rel_diff 1.1e-5 there: f32 rounding of 1280
    // features, not a graph difference.
    net.load_checkpoint(&shared.join("reference/mobilenet_v2_2class.safetensors"))
        .unwrap();
    check(&net, 224, "mobilenet_v2-imagenet-224");
}
