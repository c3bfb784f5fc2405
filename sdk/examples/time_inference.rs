//! Median inference time of a model file through the SDK, one thread: for comparing builds of
//! the SDK (Cargo profiles, targets) on the same machine without the benchmark crate's
//! dependencies.
//!
//! `cargo run --profile mobile -p mpox-sdk --example time_inference -- MODEL.onnx [RUNS]`

use std::time::Instant;

use mpox_sdk::{Screener, ScreenerOptions};

fn main() -> Result<(), mpox_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let Some(model) = args.next() else {
        eprintln!("usage: time_inference MODEL.onnx [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(50);
    let t = Instant::now();
    let screener = Screener::from_path(&model, ScreenerOptions::default())?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let input = vec![0.5f32; screener.info().meta.preprocessing.tensor_len()];
    for _ in 0..5 {
        screener.infer(&input)?;
    }
    let mut ms: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            screener
                .infer(&input)
                .map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    ms.sort_by(f64::total_cmp);
    println!(
        "{model}: load {load_ms:.0} ms, inference median {:.2} ms over {} runs",
        ms[ms.len() / 2],
        ms.len()
    );
    Ok(())
}
