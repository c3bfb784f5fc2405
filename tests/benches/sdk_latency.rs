//! SDK latency beside onnxruntime, model load time and peak memory, one thread, 224 px.
//!
//! `cargo bench -p mpox-e2e --bench sdk_latency` prints a Markdown table (the README's figures).
//! Each model is measured in a child process of its own so that its peak RSS is its own.
//! MobileNetV2 uses the ImageNet weights from `../shared/weights` when present (latency does not
//! depend on the weight values, so random weights give the same timing elsewhere).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::{DynamicImage, ImageFormat};
use mpox_e2e::{encode, export, photo, random_network, shared, workspace_root};
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::{Arch, Network};

const RUNS: usize = 50;
const WARMUP: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Child mode: load the model, screen a photo RUNS times, print one JSON line.
fn measure(model: &Path) {
    let t = Instant::now();
    let screener = Screener::from_path(model, ScreenerOptions::default()).unwrap();
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let loads: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            drop(Screener::from_path(model, ScreenerOptions::default()).unwrap());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let png = encode(
        &DynamicImage::ImageRgb8(photo(1, true, 224)),
        ImageFormat::Png,
    );
    let input = screener
        .info()
        .meta
        .preprocessing
        .tensor(&photo(1, true, 224));
    for _ in 0..WARMUP {
        screener.screen(&png).unwrap();
    }
    let time = |f: &dyn Fn()| -> Vec<f64> {
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    };
    let screen = time(&|| {
        screener.screen(&png).unwrap();
    });
    let infer = time(&|| {
        screener.infer(&input).unwrap();
    });
    println!(
        "{}",
        serde_json::json!({
            "first_load_ms": load_ms,
            "load_ms": median(loads),
            "screen_ms": median(screen),
            "infer_ms": median(infer),
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}

fn run_json(cmd: &mut Command) -> Option<serde_json::Value> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last()?).ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        measure(Path::new(&args[i + 1]));
        return;
    }
    let dir = workspace_root().join("target").join("bench-models");
    std::fs::create_dir_all(&dir).unwrap();
    let mut models: Vec<(String, PathBuf)> = Vec::new();
    let mobilenet = random_network(Arch::MobileNetV2 { width: 1.0 }, 2, 1);
    let mut label = "MobileNetV2-1.0 (random weights)".to_string();
    if let Some(shared) = shared() {
        let net = Network::new(
            Arch::MobileNetV2 { width: 1.0 },
            2,
            1,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        net.load_weights(&shared.join("weights/mobilenet_v2_imagenet_features.safetensors"))
            .unwrap();
        let path = dir.join("mobilenet_v2.onnx");
        std::fs::write(&path, export(&net, 224)).unwrap();
        label = "MobileNetV2-1.0 (ImageNet weights)".into();
        models.push((label.clone(), path));
    } else {
        let path = dir.join("mobilenet_v2.onnx");
        std::fs::write(&path, export(&mobilenet, 224)).unwrap();
        models.push((label.clone(), path));
    }
    let resnet = random_network(Arch::ResNet18, 2, 2);
    let path = dir.join("resnet18.onnx");
    std::fs::write(&path, export(&resnet, 224)).unwrap();
    models.push(("ResNet-18 (random weights)".into(), path));

    let me = std::env::current_exe().unwrap();
    let ort_script = workspace_root().join("scripts/ort_bench.py");
    println!("| model, 224 px, 1 thread | file MiB | SDK load ms | SDK `screen()` ms | SDK inference only ms | onnxruntime `run` ms | tract / onnxruntime | SDK peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for (label, path) in &models {
        let size = std::fs::metadata(path).unwrap().len() as f64 / (1024.0 * 1024.0);
        let sdk = run_json(Command::new(&me).arg("--child").arg(path)).expect("SDK measurement");
        let ort = run_json(
            Command::new("python3")
                .arg(&ort_script)
                .arg(path)
                .arg("--runs")
                .arg(RUNS.to_string()),
        );
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let ort_ms = ort.as_ref().map_or(f64::NAN, |o| f(o, "median_ms"));
        println!(
            "| {label} | {size:.1} | {:.0} | {:.1} | {:.1} | {} | {} | {:.0} |",
            f(&sdk, "load_ms"),
            f(&sdk, "screen_ms"),
            f(&sdk, "infer_ms"),
            if ort_ms.is_nan() {
                "n/a (no onnxruntime)".into()
            } else {
                format!("{ort_ms:.1}")
            },
            if ort_ms.is_nan() {
                "n/a".into()
            } else {
                format!("{:.2}", f(&sdk, "infer_ms") / ort_ms)
            },
            f(&sdk, "peak_rss_mib"),
        );
    }
    println!("\nmedian of {RUNS} runs after {WARMUP} warm-up runs; `screen()` includes PNG decoding, quality checks and preprocessing of a 224×224 photo; onnxruntime {} with intra_op_num_threads=1.",
        run_json(Command::new("python3").arg("-c").arg("import onnxruntime,json;print(json.dumps({'v':onnxruntime.__version__}))"))
            .map_or("n/a".to_string(), |v| v["v"].as_str().unwrap_or("?").to_string()));
}
