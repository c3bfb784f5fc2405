//! On-device mpox skin-lesion screening.
//!
//! Loads a model file exported by `mpox-trainer` (one self-describing ONNX file), decodes photos
//! or camera frames, checks their quality, and returns a calibrated probability of mpox with a
//! verdict. It is a **screening aid, not a diagnosis**: an `Uncertain` verdict means "refer".
//!
//! ```no_run
//! use mpox_sdk::{Screener, ScreenerOptions};
//! let screener = Screener::from_path("model.onnx", ScreenerOptions::default())?;
//! let result = screener.screen(&std::fs::read("photo.jpg").unwrap())?;
//! println!("{} ({:.0}%)", result.verdict.code(), result.probability_mpox * 100.0);
//! # Ok::<(), mpox_sdk::Error>(())
//! ```
//!
//! Every failure is a typed [`Error`]; no input, however malformed, makes the SDK panic.

pub mod contract;
pub mod decode;
mod error;
pub mod ops;
pub mod preprocess;
pub mod profile;
pub mod quality;
mod screener;
pub mod signature;

pub use contract::ModelMeta;
pub use decode::Limits;
pub use error::{Error, Result};
pub use preprocess::Preprocessing;
pub use profile::NodeTime;
pub use quality::{QualityThresholds, QualityWarning};
pub use screener::{
    hex, softmax, ClassProbability, Heatmap, ModelInfo, RawOutput, Screener, ScreenerOptions,
    Screening, Verdict, MAX_THREADS,
};
