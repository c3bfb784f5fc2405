//! Writes the Arm parity fixtures: the parity tests' networks exported to model files, with
//! preprocessed inputs and the logits candle computes for them on this host. The SDK built for
//! aarch64 then reproduces the logits under qemu (`sdk/examples/check_logits.rs`, run by
//! `scripts/test-arm.sh`), so the NEON kernels answer to the trainer, not to themselves.
//!
//! `cargo run --release -p mpox-e2e --example arm_fixtures -- DIR`

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use mpox_e2e::{export, photo, random_network};
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::Arch;

fn write_f32(path: &std::path::Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write a fixture");
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: arm_fixtures DIR"));
    std::fs::create_dir_all(&dir).expect("create the fixture folder");
    // The networks and sizes of tests/tests/parity.rs.
    let cases = [
        (
            "mobilenet_v2-224",
            Arch::MobileNetV2 { width: 1.0 },
            2,
            1,
            224,
        ),
        (
            "mobilenet_v2_w0.5-160-3class",
            Arch::MobileNetV2 { width: 0.5 },
            3,
            2,
            160,
        ),
        ("resnet18-224", Arch::ResNet18, 2, 3, 224),
        ("resnet18-100", Arch::ResNet18, 2, 4, 100),
    ];
    for (name, arch, classes, seed, size) in cases {
        let net = random_network(arch, classes, seed);
        let bytes = export(&net, size);
        let screener = Screener::from_bytes(&bytes, ScreenerOptions::default()).unwrap();
        let pre = &screener.info().meta.preprocessing;
        let s = size as usize;
        let (mut inputs, mut logits) = (Vec::new(), Vec::new());
        for i in 0..2u32 {
            let input = pre.tensor(&photo(u64::from(i), i == 0, 150 + 37 * i));
            let x = Tensor::from_vec(input.clone(), (1, 3, s, s), &Device::Cpu).unwrap();
            let out = net.forward_t(&x, false).unwrap();
            logits.extend(out.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            inputs.extend(input);
        }
        std::fs::write(dir.join(format!("{name}.onnx")), &bytes).unwrap();
        write_f32(&dir.join(format!("{name}.input.f32")), &inputs);
        write_f32(&dir.join(format!("{name}.logits.f32")), &logits);
        println!("{name}: 2 inputs, {} logits", logits.len());
    }
}
