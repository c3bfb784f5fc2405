//! Checks the SDK against logits computed elsewhere: for every `NAME.onnx` in a folder, runs the
//! inputs of `NAME.input.f32` (little-endian f32, one preprocessed image after another) and
//! compares with `NAME.logits.f32`, relative to the largest logit (at least 1), to 1e-5. Exits
//! non-zero on any mismatch. `scripts/test-arm.sh` runs it for aarch64 under qemu on the fixtures
//! the trainer's candle networks wrote on the host.
//!
//! `cargo run --release -p mpox-sdk --example check_logits -- DIR`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mpox_sdk::{Screener, ScreenerOptions};

const TOLERANCE: f32 = 1e-5;

fn read_f32(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn check(model: &Path) -> Result<f32, String> {
    let with = |ext: &str| model.with_extension(ext);
    let screener =
        Screener::from_path(model, ScreenerOptions::default()).map_err(|e| e.to_string())?;
    let inputs = read_f32(&with("input.f32"))?;
    let want = read_f32(&with("logits.f32"))?;
    let len = screener.info().meta.preprocessing.tensor_len();
    let mut got = Vec::new();
    for input in inputs.chunks_exact(len) {
        got.extend(screener.infer(input).map_err(|e| e.to_string())?.logits);
    }
    if got.len() != want.len() || got.is_empty() {
        return Err(format!("{} logits, expected {}", got.len(), want.len()));
    }
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let largest = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    Ok(diff / largest)
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: check_logits DIR");
        return ExitCode::FAILURE;
    };
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    if models.is_empty() {
        eprintln!("no model files in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let mut ok = true;
    for model in &models {
        match check(model) {
            Ok(rel) if rel <= TOLERANCE => println!("{}: rel_diff {rel:.3e}", model.display()),
            Ok(rel) => {
                println!("{}: rel_diff {rel:.3e} > {TOLERANCE:e}", model.display());
                ok = false;
            }
            Err(e) => {
                println!("{}: {e}", model.display());
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
