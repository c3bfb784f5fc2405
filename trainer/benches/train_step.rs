//! Training throughput on this CPU: classifier steps (forward + backward) in the configurations
//! the experiments in docs/results.md use, and one DCGAN step (D update + G update) at 64 px,
//! batch 64.
//!
//! `cargo bench -p mpox-trainer --bench train_step` prints a Markdown table. Set
//! `MPOX_BENCH_QUICK=1` for one timed repetition instead of three.

use std::time::Instant;

use candle_core::{Device, Tensor};
use mpox_trainer::gan::train::{GanConfig, GanData, GanRun};
use mpox_trainer::models::{Arch, Network};

fn classifier_step(net: &Network, x: &Tensor, y: &Tensor, first_trainable: usize) {
    let frozen = net
        .forward_stages(x, 0..first_trainable, false)
        .unwrap()
        .detach();
    let feats = net
        .forward_stages(&frozen, first_trainable..net.num_stages(), true)
        .unwrap();
    let logits = net.classify(&Network::pool(&feats).unwrap()).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, y).unwrap();
    loss.backward().unwrap();
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let reps = if std::env::var("MPOX_BENCH_QUICK").is_ok() {
        1
    } else {
        3
    };
    let dev = Device::Cpu;
    println!("| step | input | batch | s/step | images/s |");
    println!("|---|---|---|---|---|");
    for (label, arch, size, batch, trainable) in [
        (
            "MobileNetV2-1.0, last 5 stages trained",
            Arch::MobileNetV2 { width: 1.0 },
            224,
            16,
            Some(5),
        ),
        (
            "MobileNetV2-1.0, all stages",
            Arch::MobileNetV2 { width: 1.0 },
            224,
            16,
            None,
        ),
        (
            "MobileNetV2-1.0, all stages",
            Arch::MobileNetV2 { width: 1.0 },
            112,
            16,
            None,
        ),
        ("ResNet-18, all stages", Arch::ResNet18, 112, 16, None),
        ("ResNet-18, all stages", Arch::ResNet18, 224, 16, None),
    ] {
        let net = Network::new(arch, 2, 1, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &dev).unwrap();
        let y = Tensor::new((0..batch as u32).map(|i| i % 2).collect::<Vec<_>>(), &dev).unwrap();
        let first = trainable.map_or(0, |k| net.num_stages() - k);
        let s = time(reps, || classifier_step(&net, &x, &y, first));
        println!(
            "| {label} | {size} | {batch} | {s:.2} | {:.1} |",
            batch as f64 / s
        );
    }
    // One DCGAN step on generated photos (the data do not change the cost).
    let dir = std::env::temp_dir().join(format!("mpox-bench-gan-{}", std::process::id()));
    mpox_trainer::synthetic::write_dataset(&dir.join("data"), 16, 64, 1).unwrap();
    let data = GanData {
        photos: mpox_trainer::dataset::list_images(&dir.join("data/mpox")).unwrap(),
        class: "mpox".into(),
        fingerprint: String::new(),
        fold: None,
    };
    for batch in [64, 32] {
        let mut config = GanConfig::dcgan(1000);
        config.batch_size = batch;
        let mut run = GanRun::new(
            &config,
            &data,
            &dir.join(format!("run{batch}")),
            &dev,
            false,
        )
        .unwrap();
        let s = time(reps, || {
            run.step().unwrap();
        });
        println!(
            "| DCGAN step (D + G update) | 64 | {batch} | {s:.2} | {:.1} |",
            batch as f64 / s
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
