//! Host-side trainer of mpoxscreen: models in candle, ONNX export, parity checks, and (built on
//! those) datasets, training, calibration, evaluation and the GAN.
//!
//! The `mpox-trainer` binary only parses arguments and calls into these modules.

pub mod ablate;
pub mod atomic;
pub mod audit;
pub mod calibration;
pub mod check;
pub mod checkpoint;
pub mod crossval;
pub mod dataset;
mod error;
pub mod evaluate;
pub mod gan;
pub mod graph;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod onnx;
pub mod ops;
pub mod pipeline;
pub mod plots;
pub mod split;
pub mod synthetic;
pub mod train;
pub mod weights;

pub use error::{Error, Result};

use mpox_sdk::contract::ModelMeta;
use mpox_sdk::Preprocessing;

/// Version written into exported model files.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Metadata for a model that has not been trained or calibrated (random or ImageNet weights):
/// temperature 1, threshold 0.5, a ±0.1 uncertain band.
pub fn untrained_meta(arch: models::Arch, labels: Vec<String>, input_size: u32) -> ModelMeta {
    let positive_label = labels
        .iter()
        .find(|l| l.as_str() == "mpox")
        .unwrap_or(&labels[labels.len() - 1])
        .clone();
    ModelMeta {
        labels,
        positive_label,
        preprocessing: Preprocessing::imagenet(input_size),
        temperature: 1.0,
        threshold: 0.5,
        uncertain_band: [0.4, 0.6],
        recommended_views: 1,
        arch: arch.to_string(),
        trainer_version: VERSION.into(),
        dataset_fingerprint: "untrained".into(),
        metrics: serde_json::json!({}),
        created: now_rfc3339(),
    }
}

/// Where training runs: the CPU, or the first CUDA device in builds with the `cuda` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ComputeDevice {
    /// The CPU (every build).
    #[default]
    Cpu,
    /// The first CUDA GPU (builds made by scripts/build-cuda.sh).
    Cuda,
}

impl ComputeDevice {
    /// Opens the device; a CUDA device that cannot be used is an error that says why.
    pub fn open(self) -> Result<candle_core::Device> {
        match self {
            ComputeDevice::Cpu => Ok(candle_core::Device::Cpu),
            ComputeDevice::Cuda => open_cuda(),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<candle_core::Device> {
    // cudarc opens the driver, cuBLAS, cuRAND and NVRTC with dlopen when the first device is made,
    // and panics when one is missing (vendor/README.md).
    match std::panic::catch_unwind(|| candle_core::Device::new_cuda(0)) {
        Ok(device) => Ok(device?),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::Invalid(format!(
                "no usable CUDA device: {why} (LD_LIBRARY_PATH must reach libcuda.so.1, \
                 libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and libnvrtc.so.13)"
            )))
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<candle_core::Device> {
    Err(Error::Invalid(
        "this build has no CUDA support: build one with scripts/build-cuda.sh \
         (cargo build --release --features cuda)"
            .into(),
    ))
}

/// The current UTC time as RFC 3339 (seconds precision), without a date-time dependency;
/// `$SOURCE_DATE_EPOCH` instead when set.
pub fn now_rfc3339() -> String {
    // The reproducible-builds convention: with it a rerun (or a resumed run) writes model cards
    // and models byte-identical to the first.
    let fixed = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let secs = fixed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
