//! Training-step throughput of the classifiers on this CPU (forward + backward + AdamW-free).
//!
//! `cargo bench -p mpox-trainer --bench train_step` prints images/s per configuration. Set
//! `MPOX_BENCH_QUICK=1` for fewer repetitions.

use std::time::Instant;

use candle_core::{Device, Tensor};
use mpox_trainer::models::{Arch, Network};

fn step(net: &Network, x: &Tensor, y: &Tensor) -> f32 {
    let logits = net.forward_t(x, true).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, y).unwrap();
    loss.backward().unwrap();
    loss.to_scalar::<f32>().unwrap()
}

fn main() {
    let quick = std::env::var("MPOX_BENCH_QUICK").is_ok();
    let reps = if quick { 2 } else { 4 };
    let dev = Device::Cpu;
    println!("| network | input | batch | s/step | images/s |");
    println!("|---|---|---|---|---|");
    for (arch, size, batch) in [
        (Arch::MobileNetV2 { width: 1.0 }, 224, 16),
        (Arch::MobileNetV2 { width: 1.0 }, 128, 16),
        (Arch::ResNet18, 128, 16),
        (Arch::ResNet18, 224, 16),
    ] {
        let net = Network::new(arch, 2, 1, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &dev).unwrap();
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
        let y = Tensor::new(labels, &dev).unwrap();
        step(&net, &x, &y);
        let t = Instant::now();
        for _ in 0..reps {
            step(&net, &x, &y);
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "| {arch} | {size} | {batch} | {s:.2} | {:.1} |",
            batch as f64 / s
        );
    }
}
