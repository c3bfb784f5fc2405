//! Training throughput: whole training steps as `fit` and `gan train` take them
//! (forward, loss, backward, optimiser update) in the configurations the experiments in
//! docs/results.md use, one DCGAN step (D update + G update) at 64 px, and the frozen-feature
//! caching pass of the probe phase.
//!
//! `cargo bench -p mpox-trainer --bench train_step` prints a Markdown table. Set
//! `MPOX_BENCH_QUICK=1` for one timed repetition instead of three (the best is kept),
//! `MPOX_BENCH_REPS=N` for N (a profiler then sees mostly steady steps, not the warm-up), and
//! `MPOX_BENCH_TSV=FILE` to also write `key, step, input, batch, seconds` rows, which
//! `scripts/bench-vs-pytorch.sh` sets beside PyTorch's timings of the same rows.
//! `MPOX_BENCH_DEVICE=cuda` runs on the GPU (a build with the `cuda` feature: scripts/gpu-check.sh
//! runs the batch-64 rows there).

use std::io::Write;
use std::time::Instant;

use candle_core::{Device, Tensor};
use mpox_trainer::gan::train::{GanConfig, GanData, GanRun};
use mpox_trainer::models::{Arch, Network};
use mpox_trainer::train::optim::AdamW;
use mpox_trainer::train::weighted_cross_entropy;
use mpox_trainer::ComputeDevice;

/// One fine-tuning step as `fit` takes it: frozen stages in evaluation mode without gradient,
/// trainable ones in training mode, pooled features, class-weighted loss, AdamW.
struct ClassifierStep {
    net: Network,
    opt: AdamW,
    first_trainable: usize,
    x: Tensor,
    y: Tensor,
    class_weights: Tensor,
}

impl ClassifierStep {
    fn new(arch: Arch, size: usize, batch: usize, trainable: Option<usize>, dev: &Device) -> Self {
        let net = Network::new(arch, 2, 1, dev).unwrap();
        let first_trainable = trainable.map_or(0, |k| net.num_stages() - k);
        let (backbone, head) = net.trainable_vars();
        let backbone = backbone
            .into_iter()
            .filter(|(n, _)| net.is_in_stages_from(n, first_trainable))
            .collect();
        let opt = AdamW::new(vec![(backbone, 0.1), (head, 1.0)], 1e-4).unwrap();
        Self {
            x: Tensor::randn(0f32, 1.0, (batch, 3, size, size), dev).unwrap(),
            y: Tensor::new((0..batch as u32).map(|i| i % 2).collect::<Vec<_>>(), dev).unwrap(),
            class_weights: Tensor::new(&[1f32, 1.5], dev).unwrap(),
            net,
            opt,
            first_trainable,
        }
    }

    fn step(&mut self) {
        let net = &self.net;
        let frozen = net
            .forward_stages(&self.x, 0..self.first_trainable, false)
            .unwrap()
            .detach();
        let feats = net
            .forward_stages(&frozen, self.first_trainable..net.num_stages(), true)
            .unwrap();
        let logits = net.classify(&Network::pool(&feats).unwrap()).unwrap();
        let loss = weighted_cross_entropy(&logits, &self.y, &self.class_weights).unwrap();
        let grads = loss.backward().unwrap();
        self.opt.step(&grads, 1e-4).unwrap();
    }
}

/// The best time of `reps` calls after one warm-up call, each waiting for the device to finish
/// (CUDA runs the kernels asynchronously).
fn best_of(reps: usize, dev: &Device, mut f: impl FnMut()) -> f64 {
    f();
    dev.synchronize().unwrap();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            dev.synchronize().unwrap();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

struct Table {
    tsv: Option<std::fs::File>,
    only: Option<String>,
}

impl Table {
    /// Whether the row `key` is to run: the rows named in `MPOX_BENCH_ONLY=key,key…` (e.g. under
    /// a profiler, or the GPU rows), else the CPU table's rows.
    fn runs(&self, key: &str) -> bool {
        match &self.only {
            Some(only) => only.split(',').any(|k| k == key),
            None => !GPU_ONLY.contains(&key),
        }
    }

    fn row(&mut self, key: &str, label: &str, size: usize, batch: usize, s: f64) {
        println!(
            "| {label} | {size} | {batch} | {s:.3} | {:.1} |",
            batch as f64 / s
        );
        if let Some(f) = &mut self.tsv {
            writeln!(f, "{key}\t{label}\t{size}\t{batch}\t{s:.4}").unwrap();
        }
    }
}

/// Rows at the GPU check's batch size (scripts/gpu-check.sh), run only when named.
const GPU_ONLY: [&str; 2] = ["mnv2-all-224-64", "resnet18-all-224-64"];

fn main() {
    // What the trainer's binary does first: the thread and allocation settings of `fit`.
    mpox_trainer::ops::runtime::configure();
    let reps = match std::env::var("MPOX_BENCH_REPS") {
        Ok(n) => n.parse().expect("MPOX_BENCH_REPS: a number of repetitions"),
        Err(_) if std::env::var("MPOX_BENCH_QUICK").is_ok() => 1,
        Err(_) => 3,
    };
    let mut table = Table {
        tsv: std::env::var_os("MPOX_BENCH_TSV").map(|p| std::fs::File::create(p).unwrap()),
        only: std::env::var("MPOX_BENCH_ONLY").ok(),
    };
    // `MPOX_BENCH_DEVICE=cuda` in builds with the `cuda` feature (scripts/build-cuda.sh).
    let dev = match std::env::var("MPOX_BENCH_DEVICE").as_deref() {
        Ok("cuda") => ComputeDevice::Cuda,
        Ok("cpu") | Err(_) => ComputeDevice::Cpu,
        Ok(other) => panic!("MPOX_BENCH_DEVICE={other}: use cpu or cuda"),
    }
    .open()
    .unwrap();
    println!("| step | input | batch | s/step | images/s |");
    println!("|---|---|---|---|---|");
    let mnv2 = Arch::MobileNetV2 { width: 1.0 };
    for (key, label, arch, size, batch, trainable) in [
        (
            "mnv2-last5-224-16",
            "MobileNetV2-1.0, last 5 stages",
            mnv2,
            224,
            16,
            Some(5),
        ),
        (
            "mnv2-all-224-16",
            "MobileNetV2-1.0, all stages",
            mnv2,
            224,
            16,
            None,
        ),
        (
            "mnv2-all-112-16",
            "MobileNetV2-1.0, all stages",
            mnv2,
            112,
            16,
            None,
        ),
        (
            "resnet18-all-112-16",
            "ResNet-18, all stages",
            Arch::ResNet18,
            112,
            16,
            None,
        ),
        (
            "resnet18-all-224-16",
            "ResNet-18, all stages",
            Arch::ResNet18,
            224,
            16,
            None,
        ),
        (
            "mnv2-all-224-64",
            "MobileNetV2-1.0, all stages",
            mnv2,
            224,
            64,
            None,
        ),
        (
            "resnet18-all-224-64",
            "ResNet-18, all stages",
            Arch::ResNet18,
            224,
            64,
            None,
        ),
    ] {
        if !table.runs(key) {
            continue;
        }
        let mut step = ClassifierStep::new(arch, size, batch, trainable, &dev);
        table.row(key, label, size, batch, best_of(reps, &dev, || step.step()));
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
        let key = format!("dcgan-64-{batch}");
        if !table.runs(&key) {
            continue;
        }
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
        let s = best_of(reps, &dev, || {
            run.step().unwrap();
        });
        table.row(&key, "DCGAN step (D + G update)", 64, batch, s);
    }
    let _ = std::fs::remove_dir_all(dir);
    // The probe phase's caching pass: the whole backbone in evaluation mode, batches of 32.
    if !table.runs("mnv2-cache-224-32") {
        return;
    }
    let net = Network::new(mnv2, 2, 1, &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (32, 3, 224, 224), &dev).unwrap();
    let s = best_of(reps, &dev, || {
        Network::pool(&net.features(&x, false).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
    });
    table.row(
        "mnv2-cache-224-32",
        "MobileNetV2-1.0 feature caching (no gradient)",
        224,
        32,
        s,
    );
}
