//! SDK latency beside onnxruntime, model load time and peak memory, one thread, 224 px; then the
//! cost of test-time views (1, 2, 4, 8) on MobileNetV2.
//!
//! `cargo bench -p mpox-e2e --bench sdk_latency` prints two Markdown tables (the figures in
//! docs/results.md).
//! Each model is measured in a child process of its own so that its peak RSS is its own.
//! MobileNetV2 uses the ImageNet weights from the shared data folder (`$MPOX_SHARED`,
//! see `mpox_e2e::shared`) when present (latency does not depend on the weight values, so random
//! weights give the same timing elsewhere).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use image::{DynamicImage, ImageFormat};
use mpox_e2e::{bench_models, camera_jpeg, encode, photo, proc_status_mib, workspace_root};
use mpox_sdk::{Screener, ScreenerOptions};
use tract_onnx::prelude::*;

const RUNS: usize = 50;
const WARMUP: usize = 5;
/// Screenings of the 12-megapixel camera JPEG.
const CAMERA_RUNS: usize = 10;
/// SDK and onnxruntime measurements alternate this many times; each keeps its best median, so a
/// burst of load from elsewhere on the machine does not decide the ratio.
const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Child mode: load the model (with `views`, else the file's recommendation), screen a photo RUNS
/// times, print one JSON line. `infer_ms` times the network alone (all views, as the SDK runs
/// them: one after another); with several views, `batched_ms` times the same views as one batch
/// through a tract plan optimised for that batch, the alternative the SDK does not take.
fn measure(model: &Path, views: Option<u32>, threads: Option<u32>) {
    let options = ScreenerOptions {
        views,
        threads,
        ..Default::default()
    };
    let png = encode(
        &DynamicImage::ImageRgb8(photo(1, true, 224)),
        ImageFormat::Png,
    );
    let camera = camera_jpeg();
    // What an app waits for after a cold start: the model loaded and the first photo screened.
    let t = Instant::now();
    let screener = Screener::from_path(model, options.clone()).unwrap();
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    screener.screen(&png).unwrap();
    let first_result_ms = t.elapsed().as_secs_f64() * 1e3;
    let loads: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            drop(Screener::from_path(model, options.clone()).unwrap());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let input = screener
        .info()
        .meta
        .preprocessing
        .views_tensor(&photo(1, true, 224), screener.views())
        .unwrap();
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
        screener.infer_views(&input).unwrap();
    });
    let camera_ms: Vec<f64> = (0..CAMERA_RUNS)
        .map(|_| {
            let t = Instant::now();
            screener.screen(&camera).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    // Read before the batched plan below adds its own memory.
    let peak_rss = proc_status_mib("VmHWM");
    let n = screener.views() as usize;
    let (mut sequential, mut batched) = (Vec::new(), Vec::new());
    if n > 1 {
        let s = screener.info().meta.preprocessing.input_size as usize;
        let plan = tract_onnx::onnx()
            .model_for_path(model)
            .and_then(|m| m.with_input_fact(0, f32::fact([n, 3, s, s]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap();
        let batch = Tensor::from_shape(&[n, 3, s, s], &input).unwrap();
        // Alternating, so that load from other processes hits both alike.
        for _ in 0..RUNS {
            let t = Instant::now();
            screener.infer_views(&input).unwrap();
            sequential.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            plan.run(tvec!(batch.clone().into())).unwrap();
            batched.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let or_nan = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { median(v) };
    println!(
        "{}",
        serde_json::json!({
            "first_load_ms": load_ms,
            "first_result_ms": first_result_ms,
            "camera_ms": median(camera_ms),
            "load_ms": median(loads),
            "screen_ms": median(screen),
            "infer_ms": median(infer),
            "paired_sequential_ms": or_nan(sequential),
            "batched_ms": or_nan(batched),
            "peak_rss_mib": peak_rss,
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
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .map(|j| args[j + 1].parse().unwrap())
        };
        measure(Path::new(&args[i + 1]), flag("--views"), flag("--threads"));
        return;
    }
    let models = bench_models();

    let me = std::env::current_exe().unwrap();
    let ort_script = workspace_root().join("scripts/ort_bench.py");
    println!("| model, 224 px, 1 thread | file MiB | SDK load ms | first result ms | SDK `screen()` ms | 12 MP camera JPEG `screen()` ms | SDK inference only ms | onnxruntime `run` ms | SDK / onnxruntime | SDK peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, path) in &models {
        let size = std::fs::metadata(path).unwrap().len() as f64 / (1024.0 * 1024.0);
        let (mut sdk, mut ort): (Option<serde_json::Value>, Option<serde_json::Value>) =
            (None, None);
        let best =
            |a: Option<serde_json::Value>, b: Option<serde_json::Value>, key: &str| match (a, b) {
                (Some(a), Some(b))
                    if b[key].as_f64().unwrap_or(f64::INFINITY)
                        < a[key].as_f64().unwrap_or(f64::INFINITY) =>
                {
                    Some(b)
                }
                (Some(a), _) => Some(a),
                (None, b) => b,
            };
        for _ in 0..ROUNDS {
            let s = run_json(Command::new(&me).arg("--child").arg(path)).expect("SDK measurement");
            sdk = best(sdk, Some(s), "infer_ms");
            let o = run_json(
                Command::new("python3")
                    .arg(&ort_script)
                    .arg(path)
                    .arg("--runs")
                    .arg(RUNS.to_string()),
            );
            ort = best(ort, o, "median_ms");
        }
        let sdk = sdk.expect("SDK measurement");
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let ort_ms = ort.as_ref().map_or(f64::NAN, |o| f(o, "median_ms"));
        println!(
            "| {label} | {size:.1} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {} | {} | {:.0} |",
            f(&sdk, "load_ms"),
            f(&sdk, "first_result_ms"),
            f(&sdk, "screen_ms"),
            f(&sdk, "camera_ms"),
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
    println!("\nmedian of {RUNS} runs after {WARMUP} warm-up runs (the 12 MP JPEG: {CAMERA_RUNS} runs), the best of {ROUNDS} alternating SDK and onnxruntime rounds; first result: a cold load plus the first `screen()` of a 224×224 PNG; `screen()` includes decoding, quality checks and preprocessing; the camera JPEG is 4000×3000, quality 85, EXIF orientation 6; onnxruntime {} with intra_op_num_threads=1.",
        run_json(Command::new("python3").arg("-c").arg("import onnxruntime,json;print(json.dumps({'v':onnxruntime.__version__}))"))
            .map_or("n/a".to_string(), |v| v["v"].as_str().unwrap_or("?").to_string()));

    let (label, path) = &models[0];
    println!("\n| test-time views, {label}, 224 px, 1 thread | SDK load ms | SDK `screen()` ms | SDK inference of all views ms | per view ms | SDK peak RSS MiB | the same views as one tract batch ms (paired SDK ms) |");
    println!("|---|---|---|---|---|---|---|");
    for views in [1u32, 2, 4, 8] {
        let sdk = run_json(
            Command::new(&me)
                .arg("--child")
                .arg(path)
                .arg("--views")
                .arg(views.to_string()),
        )
        .expect("SDK measurement");
        let f = |k: &str| sdk[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {views} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            f("load_ms"),
            f("screen_ms"),
            f("infer_ms"),
            f("infer_ms") / f64::from(views),
            f("peak_rss_mib"),
            if views == 1 {
                "–".to_string()
            } else {
                format!("{:.1} ({:.1})", f("batched_ms"), f("paired_sequential_ms"))
            },
        );
    }
    println!("\nviews as `mpox_sdk::preprocess` lists them; the SDK runs them one after another through its one-image plan; the last column runs the same views as one batch through a tract plan optimised for that batch, alternating with the SDK's run (in parentheses) so that both see the same load.");

    println!("\n| threads (`ScreenerOptions::threads`), 224 px | SDK inference ms | SDK `screen()` ms | 12 MP camera JPEG `screen()` ms |");
    println!("|---|---|---|---|");
    for (label, path) in &models {
        for threads in [1u32, 2, 4] {
            let sdk = run_json(
                Command::new(&me)
                    .arg("--child")
                    .arg(path)
                    .arg("--threads")
                    .arg(threads.to_string()),
            )
            .expect("SDK measurement");
            let f = |k: &str| sdk[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {label}, {threads} | {:.1} | {:.1} | {:.0} |",
                f("infer_ms"),
                f("screen_ms"),
                f("camera_ms")
            );
        }
    }
    println!("\none inference at a time; the threads share its matrix products and the SDK's 3×3 ops (decoding and preprocessing run on the caller's thread). On a machine with fewer cores than threads the extra threads only wait.");
}
