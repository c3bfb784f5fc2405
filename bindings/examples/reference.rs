//! Reference numbers from the Rust SDK, for the cross-language tests and the overhead benchmark.
//!
//! ```text
//! reference tsv MODEL PHOTO...        # one line per photo, read by the Python and Kotlin tests
//! reference bench MODEL PHOTO CALLS   # per-call times of screen() and info() called in Rust
//! ```
//!
//! The TSV columns are: file, verdict code, probability of mpox, per-class probabilities, logits,
//! quality warning codes, heatmap values (comma-separated lists; floats printed with Rust's
//! shortest round-trip formatting, so parsing them back gives the exact `f32`). The heatmap is on.

use std::process::ExitCode;
use std::time::Instant;

use mpox_sdk::{Screener, ScreenerOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tsv") if args.len() >= 3 => tsv(&args[1], &args[2..]),
        Some("bench") if args.len() == 4 => args[3]
            .parse()
            .map_err(|e| format!("CALLS: {e}"))
            .and_then(|n| bench(&args[1], &args[2], n)),
        _ => Err("usage: reference tsv MODEL PHOTO... | reference bench MODEL PHOTO CALLS".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reference: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(model: &str, heatmap: bool) -> Result<Screener, String> {
    let options = ScreenerOptions {
        heatmap,
        ..ScreenerOptions::default()
    };
    Screener::from_path(model, options).map_err(|e| e.to_string())
}

fn list(values: &[f32]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn tsv(model: &str, photos: &[String]) -> Result<(), String> {
    let screener = load(model, true)?;
    for photo in photos {
        let bytes = std::fs::read(photo).map_err(|e| format!("{photo}: {e}"))?;
        let s = screener
            .screen(&bytes)
            .map_err(|e| format!("{photo}: {e}"))?;
        let probabilities: Vec<f32> = s.probabilities.iter().map(|c| c.probability).collect();
        let quality: Vec<&str> = s.quality.iter().map(|q| q.code()).collect();
        let heatmap = s
            .heatmap
            .as_ref()
            .map_or(String::new(), |h| list(&h.values));
        println!(
            "{photo}\t{}\t{:?}\t{}\t{}\t{}\t{heatmap}",
            s.verdict.code(),
            s.probability_mpox,
            list(&probabilities),
            list(&s.logits),
            quality.join(","),
        );
    }
    Ok(())
}

/// Median and mean of per-call times in microseconds.
fn stats(mut micros: Vec<f64>) -> (f64, f64) {
    micros.sort_by(f64::total_cmp);
    let mean = micros.iter().sum::<f64>() / micros.len() as f64;
    (micros[micros.len() / 2], mean)
}

fn time(calls: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..calls.div_ceil(10) {
        f();
    }
    let micros = (0..calls)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    stats(micros)
}

fn bench(model: &str, photo: &str, calls: usize) -> Result<(), String> {
    let screener = load(model, false)?;
    let bytes = std::fs::read(photo).map_err(|e| format!("{photo}: {e}"))?;
    screener.screen(&bytes).map_err(|e| e.to_string())?;
    let (median, mean) = time(calls, || {
        std::hint::black_box(screener.screen(std::hint::black_box(&bytes)).ok());
    });
    println!("rust screen(): median {median:.1} us, mean {mean:.1} us per call ({calls} calls)");
    let (median, mean) = time(calls * 100, || {
        std::hint::black_box(screener.screen(std::hint::black_box(&[])).err());
    });
    println!(
        "rust screen(empty) -> error: median {median:.3} us, mean {mean:.3} us per call ({} calls)",
        calls * 100
    );
    // The bindings crate's own Rust API (record conversion included, no FFI): the baseline for
    // a successful call that does no inference.
    let bound =
        mpoxscreen::Screener::from_path(model.to_string(), None).map_err(|e| e.to_string())?;
    let (median, mean) = time(calls * 100, || {
        std::hint::black_box(bound.info());
    });
    println!(
        "rust info() (bindings crate, no FFI): median {median:.3} us, mean {mean:.3} us per call ({} calls)",
        calls * 100
    );
    Ok(())
}
