//! Kotlin, Swift and Python bindings for mpoxscreen, generated with uniffi.
//!
//! This crate is a thin layer over [`mpox_sdk`]: it converts the SDK's types into records that
//! uniffi can carry across the FFI boundary and maps every SDK error onto [`MpoxError`], which
//! becomes `MpoxException` in Kotlin, `MpoxError` in Swift and `MpoxError` in Python.
//!
//! mpoxscreen is a **screening aid, not a diagnosis**: an `Uncertain` verdict means "refer the
//! patient for a clinical assessment".
//!
//! No panic crosses the boundary: the SDK returns typed errors, every exported call runs inside
//! [`std::panic::catch_unwind`] (a panic becomes [`MpoxError::Internal`]), and uniffi's scaffolding
//! catches anything else. Never build this crate with `panic = "abort"`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

uniffi::setup_scaffolding!("mpoxscreen");

static LIVE_SCREENERS: AtomicI64 = AtomicI64::new(0);

/// Everything that can go wrong while loading a model or screening a photo.
///
/// `Model*` variants blame the model file, `Image*` the photo, `InvalidOption` the caller's
/// configuration, `InvalidFrame` the caller's pixel buffer, `Io` the file system, `Inference` the
/// engine and `Internal` this library.
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum MpoxError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file that was being read.
        path: String,
        /// The operating system's error.
        reason: String,
    },
    /// The model bytes do not hash to the sha256 the caller expected.
    #[error("model checksum mismatch: expected sha256 {expected}, file has {actual}")]
    ModelChecksum {
        /// The sha256 the caller asked for (lowercase hex).
        expected: String,
        /// The sha256 of the bytes given (lowercase hex).
        actual: String,
    },
    /// The bytes are not a readable ONNX model (truncated, corrupt, or not ONNX at all).
    #[error("not a readable ONNX model: {reason}")]
    ModelDecode {
        /// What the parser reported.
        reason: String,
    },
    /// The model's `mpoxscreen.format` version is not one this library understands.
    #[error(
        "model format version {found} is not supported (this library reads version {supported})"
    )]
    ModelVersion {
        /// The version string found in the file.
        found: String,
        /// The version this library reads.
        supported: i64,
    },
    /// A metadata entry of the model-file contract is missing or malformed.
    #[error("model metadata `{key}`: {reason}")]
    ModelMetadata {
        /// The metadata key at fault.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// The graph's inputs or outputs differ from the contract (names, ranks, shapes).
    #[error("model does not follow the mpoxscreen contract: {reason}")]
    ModelContract {
        /// Which part of the contract is broken.
        reason: String,
    },
    /// The config trusts signing keys and the model carries no signature.
    #[error(
        "the model is not signed, and this screener loads only models signed by a trusted key"
    )]
    ModelUnsigned,
    /// The model is signed, but by a key the config does not trust.
    #[error(
        "the model is signed by key {signer}, which is not one of the {trusted} trusted key(s)"
    )]
    ModelUntrustedSigner {
        /// The signer's public key as the file states it (hex).
        signer: String,
        /// How many keys the config trusts.
        trusted: i64,
    },
    /// The signature by a trusted key does not match the model: it was altered after signing.
    #[error("the model's signature by trusted key {signer} does not match its content: it was altered after signing, or the signature is damaged")]
    ModelSignatureMismatch {
        /// The trusted key the file says signed it (hex).
        signer: String,
    },
    /// A `ScreenerConfig` field has a value the library does not accept (e.g. `views` = 3).
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option at fault, as the `ScreenerConfig` field is called (e.g. `views`).
        option: String,
        /// Why it was refused.
        reason: String,
    },
    /// The image bytes are empty.
    #[error("the image is empty (0 bytes)")]
    ImageEmpty,
    /// The bytes are not in an image format this library decodes (JPEG, PNG, WebP, BMP).
    #[error("unsupported or unrecognised image format")]
    ImageFormat,
    /// The image is in a known format but cannot be decoded (truncated, corrupt).
    #[error("cannot decode image: {reason}")]
    ImageDecode {
        /// What the decoder reported.
        reason: String,
    },
    /// The image is larger than the configured limits; nothing was allocated for it.
    #[error("image of {width}x{height} pixels exceeds the limit of {max_width}x{max_height} pixels or {max_pixels} pixels in all")]
    ImageTooLarge {
        /// Width claimed by the image header.
        width: i64,
        /// Height claimed by the image header.
        height: i64,
        /// Largest accepted width.
        max_width: i64,
        /// Largest accepted height.
        max_height: i64,
        /// Largest accepted width × height.
        max_pixels: i64,
    },
    /// The image is too small to say anything about a skin lesion.
    #[error("image of {width}x{height} pixels is too small (at least {min_side} pixels per side are needed)")]
    ImageTooSmall {
        /// Width of the image.
        width: i64,
        /// Height of the image.
        height: i64,
        /// Smallest accepted side.
        min_side: i64,
    },
    /// A raw camera frame's dimensions and buffer length disagree, or a dimension is negative.
    #[error("invalid RGBA frame: {reason}")]
    InvalidFrame {
        /// What is inconsistent.
        reason: String,
    },
    /// The inference engine failed while running a valid model.
    #[error("inference failed: {reason}")]
    Inference {
        /// What the engine reported.
        reason: String,
    },
    /// A failure this version of the bindings does not know by name (a newer SDK error), or a bug
    /// in the library (a panic, caught before it reached the app). Report it.
    #[error("internal error: {reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
}

/// Widens an SDK `u64` for the FFI, saturating (no real limit comes near `i64::MAX`).
fn wide(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl From<mpox_sdk::Error> for MpoxError {
    fn from(e: mpox_sdk::Error) -> Self {
        use mpox_sdk::Error as E;
        match e {
            E::Io { path, source } => Self::Io {
                path: path.display().to_string(),
                reason: source.to_string(),
            },
            E::ModelChecksum { expected, actual } => Self::ModelChecksum { expected, actual },
            E::ModelDecode { reason } => Self::ModelDecode { reason },
            E::ModelVersion { found, supported } => Self::ModelVersion {
                found,
                supported: supported.into(),
            },
            E::ModelMetadata { key, reason } => Self::ModelMetadata { key, reason },
            E::ModelContract { reason } => Self::ModelContract { reason },
            E::ModelUnsigned => Self::ModelUnsigned,
            E::ModelUntrustedSigner { signer, trusted } => Self::ModelUntrustedSigner {
                signer,
                trusted: wide(trusted as u64),
            },
            E::ModelSignatureMismatch { signer } => Self::ModelSignatureMismatch { signer },
            E::InvalidOption { option, reason } => Self::InvalidOption { option, reason },
            E::ImageEmpty => Self::ImageEmpty,
            E::ImageFormat => Self::ImageFormat,
            E::ImageDecode { reason } => Self::ImageDecode { reason },
            E::ImageTooLarge {
                width,
                height,
                max_width,
                max_height,
                max_pixels,
            } => Self::ImageTooLarge {
                width: width.into(),
                height: height.into(),
                max_width: max_width.into(),
                max_height: max_height.into(),
                max_pixels: wide(max_pixels),
            },
            E::ImageTooSmall {
                width,
                height,
                min_side,
            } => Self::ImageTooSmall {
                width: width.into(),
                height: height.into(),
                min_side: min_side.into(),
            },
            E::InvalidFrame { reason } => Self::InvalidFrame { reason },
            E::Inference { reason } => Self::Inference { reason },
            other => Self::Internal {
                reason: other.to_string(),
            },
        }
    }
}

/// Runs `f`, turning a panic into [`MpoxError::Internal`] so that it never reaches the app.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, MpoxError>) -> Result<T, MpoxError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(MpoxError::Internal {
            reason: format!("{what} panicked: {message}"),
        })
    })
}

/// Bounds on what a photo may claim to be, checked against its header before any pixel buffer is
/// allocated. The defaults suit phone photos.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ImageLimits {
    /// Largest accepted width in pixels.
    #[uniffi(default = 16384)]
    pub max_width: i32,
    /// Largest accepted height in pixels.
    #[uniffi(default = 16384)]
    pub max_height: i32,
    /// Largest accepted width × height (50 megapixels, a large phone photo).
    #[uniffi(default = 50000000)]
    pub max_pixels: i64,
    /// Largest total decoder allocation in bytes (512 MiB).
    #[uniffi(default = 536870912)]
    pub max_alloc_bytes: i64,
    /// Smallest accepted side: below it there is nothing to screen.
    #[uniffi(default = 32)]
    pub min_side: i32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        mpox_sdk::Limits::default().into()
    }
}

impl From<mpox_sdk::Limits> for ImageLimits {
    fn from(l: mpox_sdk::Limits) -> Self {
        Self {
            max_width: i32::try_from(l.max_width).unwrap_or(i32::MAX),
            max_height: i32::try_from(l.max_height).unwrap_or(i32::MAX),
            max_pixels: wide(l.max_pixels),
            max_alloc_bytes: wide(l.max_alloc),
            min_side: i32::try_from(l.min_side).unwrap_or(i32::MAX),
        }
    }
}

impl ImageLimits {
    fn to_sdk(&self) -> Result<mpox_sdk::Limits, MpoxError> {
        let bad = |field: &str, value: i64| MpoxError::InvalidFrame {
            reason: format!("image limit `{field}` must not be negative, got {value}"),
        };
        let u32_of = |field: &str, v: i32| u32::try_from(v).map_err(|_| bad(field, v.into()));
        let u64_of = |field: &str, v: i64| u64::try_from(v).map_err(|_| bad(field, v));
        Ok(mpox_sdk::Limits {
            max_width: u32_of("max_width", self.max_width)?,
            max_height: u32_of("max_height", self.max_height)?,
            max_pixels: u64_of("max_pixels", self.max_pixels)?,
            max_alloc: u64_of("max_alloc_bytes", self.max_alloc_bytes)?,
            min_side: u32_of("min_side", self.min_side)?,
        })
    }
}

/// Thresholds of the photo-quality checks (warnings, never errors).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct QualityThresholds {
    /// `TooDark` below this mean luminance (0..255).
    #[uniffi(default = 40.0)]
    pub min_mean_luminance: f32,
    /// `Overexposed` above this fraction of clipped pixels.
    #[uniffi(default = 0.25)]
    pub max_clipped_fraction: f32,
    /// `Blurry` below this variance of the Laplacian, measured on the network-sized crop.
    #[uniffi(default = 25.0)]
    pub min_laplacian_variance: f32,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        let t = mpox_sdk::QualityThresholds::default();
        Self {
            min_mean_luminance: t.min_mean_luminance,
            max_clipped_fraction: t.max_clipped_fraction,
            min_laplacian_variance: t.min_laplacian_variance,
        }
    }
}

/// How a [`Screener`] loads its model and screens photos. Every field has a default, so
/// `ScreenerConfig()` is a sensible start in every language.
#[derive(Clone, Debug, Default, PartialEq, uniffi::Record)]
pub struct ScreenerConfig {
    /// If set, the model bytes must hash to this sha256 (hex, any case), else loading fails with
    /// `ModelChecksum`.
    #[uniffi(default = None)]
    pub expected_sha256: Option<String>,
    /// Compute the class-activation heatmap for each screening (costs a little time).
    #[uniffi(default = false)]
    pub heatmap: bool,
    /// Limits on photos and frames; `None` keeps the defaults of [`ImageLimits`].
    #[uniffi(default = None)]
    pub limits: Option<ImageLimits>,
    /// Quality thresholds; `None` keeps the defaults of [`QualityThresholds`].
    #[uniffi(default = None)]
    pub quality: Option<QualityThresholds>,
    /// Test-time views averaged per screening: 1, 2, 4 or 8 (about that many times the work);
    /// `None` takes the model's recommendation (`ModelInfo.recommended_views`). Any other count
    /// fails loading with `InvalidOption`.
    #[uniffi(default = None)]
    pub views: Option<i32>,
    /// Ed25519 public keys (64 hex digits each, from `mpox-trainer keygen`) whose signatures are
    /// accepted. When any are given, a model that is unsigned (`ModelUnsigned`), signed by another
    /// key (`ModelUntrustedSigner`) or altered after signing (`ModelSignatureMismatch`) is
    /// refused; an app that downloads model updates should always set it.
    #[uniffi(default)]
    pub trusted_keys: Vec<String>,
    /// Threads one inference may use, 1 to 16 (`None`: 1). More threads cut the latency of one
    /// screening on a phone's spare cores; they need a library built with the `threads` feature
    /// (the build scripts' `FEATURES=threads`). Any other count, or more than one without the
    /// feature, fails loading with `InvalidOption`.
    #[uniffi(default = None)]
    pub threads: Option<i32>,
}

impl ScreenerConfig {
    fn to_sdk(&self) -> Result<mpox_sdk::ScreenerOptions, MpoxError> {
        let limits = match &self.limits {
            Some(l) => l.to_sdk()?,
            None => mpox_sdk::Limits::default(),
        };
        let q = self.quality.clone().unwrap_or_default();
        let views = match self.views {
            None => None,
            Some(v) => Some(u32::try_from(v).map_err(|_| MpoxError::InvalidOption {
                option: "views".into(),
                reason: format!("{v} is not one of {:?}", mpox_sdk::preprocess::VIEW_COUNTS),
            })?),
        };
        Ok(mpox_sdk::ScreenerOptions {
            expected_sha256: self.expected_sha256.clone(),
            limits,
            quality: mpox_sdk::QualityThresholds {
                min_mean_luminance: q.min_mean_luminance,
                max_clipped_fraction: q.max_clipped_fraction,
                min_laplacian_variance: q.min_laplacian_variance,
            },
            heatmap: self.heatmap,
            views,
            trusted_keys: self.trusted_keys.clone(),
            threads: match self.threads {
                None => None,
                Some(t) => Some(u32::try_from(t).map_err(|_| MpoxError::InvalidOption {
                    option: "threads".into(),
                    reason: format!("{t} is not between 1 and {}", mpox_sdk::MAX_THREADS),
                })?),
            },
        })
    }
}

/// What the library tells the app about a photo. A screening aid, not a diagnosis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Verdict {
    /// Calibrated probability of mpox at or above the upper edge of the uncertain band.
    LikelyMpox,
    /// Probability below the lower edge of the band.
    Unlikely,
    /// Inside the band: refer the patient for a clinical assessment.
    Uncertain,
}

impl From<mpox_sdk::Verdict> for Verdict {
    fn from(v: mpox_sdk::Verdict) -> Self {
        match v {
            mpox_sdk::Verdict::LikelyMpox => Self::LikelyMpox,
            mpox_sdk::Verdict::Unlikely => Self::Unlikely,
            mpox_sdk::Verdict::Uncertain => Self::Uncertain,
        }
    }
}

/// Something about the photo that makes the screening less reliable: suggest a retake.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum QualityWarning {
    /// The shorter side is below the network input: the photo was upscaled.
    LowResolution {
        /// Width of the decoded photo.
        width: i64,
        /// Height of the decoded photo.
        height: i64,
        /// Shorter side the model would like at least.
        recommended: i64,
    },
    /// The photo is too dark.
    TooDark {
        /// Mean luminance of the screened crop (0..255).
        mean_luminance: f32,
    },
    /// Too many pixels are clipped white.
    Overexposed {
        /// Fraction of pixels with luminance ≥ 250.
        clipped_fraction: f32,
    },
    /// The photo looks out of focus.
    Blurry {
        /// Variance of the 4-neighbour Laplacian of the luminance.
        laplacian_variance: f32,
    },
    /// A warning this version of the bindings does not know by name.
    Other {
        /// Its stable snake_case code.
        code: String,
    },
}

impl From<mpox_sdk::QualityWarning> for QualityWarning {
    fn from(w: mpox_sdk::QualityWarning) -> Self {
        use mpox_sdk::QualityWarning as W;
        match w {
            W::LowResolution {
                width,
                height,
                recommended,
            } => Self::LowResolution {
                width: width.into(),
                height: height.into(),
                recommended: recommended.into(),
            },
            W::TooDark { mean_luminance } => Self::TooDark { mean_luminance },
            W::Overexposed { clipped_fraction } => Self::Overexposed { clipped_fraction },
            W::Blurry { laplacian_variance } => Self::Blurry { laplacian_variance },
            other => Self::Other {
                code: other.code().to_string(),
            },
        }
    }
}

/// Where the model looked: the mpox class's activation map against the others, upsampled to the
/// network input (the centre crop of the photo) and scaled to 0..1.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Heatmap {
    /// Width in pixels (the model's input size).
    pub width: i32,
    /// Height in pixels.
    pub height: i32,
    /// Row-major values in 0..1, `width × height` of them.
    pub values: Vec<f32>,
}

/// A class label and its calibrated probability.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ClassProbability {
    /// Class label from the model file.
    pub label: String,
    /// Calibrated probability.
    pub probability: f32,
}

/// The result of screening one photo. A screening aid, not a diagnosis.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Screening {
    /// Calibrated probability of mpox (the model's positive label).
    pub probability_mpox: f32,
    /// Calibrated probability of every label, in the model's label order.
    pub probabilities: Vec<ClassProbability>,
    /// Verdict from the model's operating point and uncertain band.
    pub verdict: Verdict,
    /// Quality warnings: if any, suggest a retake.
    pub quality: Vec<QualityWarning>,
    /// Class-activation heatmap, when `ScreenerConfig.heatmap` asked for it.
    pub heatmap: Option<Heatmap>,
    /// Raw (uncalibrated) logits, in the model's label order.
    pub logits: Vec<f32>,
    /// Short id of the model (first 12 hex digits of its sha256).
    pub model_id: String,
    /// Wall time of the whole call in milliseconds (decode, preprocess, inference).
    pub latency_ms: f64,
}

impl From<mpox_sdk::Screening> for Screening {
    fn from(s: mpox_sdk::Screening) -> Self {
        Self {
            probability_mpox: s.probability_mpox,
            probabilities: s
                .probabilities
                .into_iter()
                .map(|c| ClassProbability {
                    label: c.label,
                    probability: c.probability,
                })
                .collect(),
            verdict: s.verdict.into(),
            quality: s.quality.into_iter().map(Into::into).collect(),
            heatmap: s.heatmap.map(|h| Heatmap {
                width: i32::try_from(h.width).unwrap_or(i32::MAX),
                height: i32::try_from(h.height).unwrap_or(i32::MAX),
                values: h.values,
            }),
            logits: s.logits,
            model_id: s.model_id,
            latency_ms: s.latency_ms,
        }
    }
}

/// Facts about the loaded model, from its file.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ModelInfo {
    /// Class labels in logit order.
    pub labels: Vec<String>,
    /// The label counted as mpox.
    pub positive_label: String,
    /// Side of the square network input in pixels.
    pub input_size: i32,
    /// The photo's shorter side is resized to this before the centre crop.
    pub resize: i32,
    /// Per-channel normalisation means (RGB, 0..1 scale).
    pub mean: Vec<f32>,
    /// Per-channel normalisation standard deviations.
    pub std: Vec<f32>,
    /// Calibration temperature dividing the logits before softmax.
    pub temperature: f32,
    /// Decision threshold on the calibrated probability of mpox.
    pub threshold: f32,
    /// Lower edge of the uncertain band.
    pub uncertain_low: f32,
    /// Upper edge of the uncertain band.
    pub uncertain_high: f32,
    /// Test-time views the model file recommends (1 when it says nothing).
    pub recommended_views: i32,
    /// Network architecture, e.g. `mobilenet_v2` or `resnet18`.
    pub arch: String,
    /// Version of the trainer that wrote the file.
    pub trainer_version: String,
    /// Fingerprint of the training data (or `random-init`).
    pub dataset_fingerprint: String,
    /// Validation/test figures as a JSON object (may be `{}`).
    pub metrics_json: String,
    /// Creation time of the file (RFC 3339).
    pub created: String,
    /// sha256 of the model file (lowercase hex).
    pub sha256: String,
    /// First 12 hex digits of `sha256`.
    pub model_id: String,
    /// Width of the class-activation map before upsampling.
    pub cam_width: i32,
    /// Height of the class-activation map before upsampling.
    pub cam_height: i32,
    /// The trusted key (hex) whose signature was verified; `None` when the config trusts no keys.
    pub signed_by: Option<String>,
}

impl From<&mpox_sdk::ModelInfo> for ModelInfo {
    fn from(i: &mpox_sdk::ModelInfo) -> Self {
        let m = &i.meta;
        let p = &m.preprocessing;
        let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let size = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        Self {
            labels: m.labels.clone(),
            positive_label: m.positive_label.clone(),
            input_size: int(p.input_size),
            resize: int(p.resize),
            mean: p.mean.to_vec(),
            std: p.std.to_vec(),
            temperature: m.temperature,
            threshold: m.threshold,
            uncertain_low: m.uncertain_band[0],
            uncertain_high: m.uncertain_band[1],
            recommended_views: int(m.recommended_views),
            arch: m.arch.clone(),
            trainer_version: m.trainer_version.clone(),
            dataset_fingerprint: m.dataset_fingerprint.clone(),
            metrics_json: m.metrics.to_string(),
            created: m.created.clone(),
            sha256: i.sha256.clone(),
            model_id: i.model_id.clone(),
            cam_width: size(i.cam_size.1),
            cam_height: size(i.cam_size.0),
            signed_by: i.signed_by.clone(),
        }
    }
}

/// A loaded screening model. Load it once (it takes ~100 ms), then screen any number of photos,
/// from any number of threads at once. Close it (`close()` / `use {}` in Kotlin, `del` or
/// leaving scope in Python, releasing the last reference in Swift) to free the model's memory.
#[derive(uniffi::Object)]
pub struct Screener {
    inner: mpox_sdk::Screener,
}

impl std::fmt::Debug for Screener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Screener {
    fn wrap(inner: mpox_sdk::Screener) -> Arc<Self> {
        LIVE_SCREENERS.fetch_add(1, Ordering::SeqCst);
        Arc::new(Self { inner })
    }
}

impl Drop for Screener {
    fn drop(&mut self) {
        LIVE_SCREENERS.fetch_sub(1, Ordering::SeqCst);
    }
}

#[uniffi::export]
impl Screener {
    /// Loads a model file from a path, e.g. one copied out of the app's assets.
    #[uniffi::constructor(default(config = None))]
    pub fn from_path(path: String, config: Option<ScreenerConfig>) -> Result<Arc<Self>, MpoxError> {
        guard("loading the model", || {
            let options = config.unwrap_or_default().to_sdk()?;
            Ok(Self::wrap(mpox_sdk::Screener::from_path(path, options)?))
        })
    }

    /// Loads a model from its bytes (for apps that bundle it as an asset).
    #[uniffi::constructor(default(config = None))]
    pub fn from_bytes(
        model: Vec<u8>,
        config: Option<ScreenerConfig>,
    ) -> Result<Arc<Self>, MpoxError> {
        guard("loading the model", || {
            let options = config.unwrap_or_default().to_sdk()?;
            Ok(Self::wrap(mpox_sdk::Screener::from_bytes(&model, options)?))
        })
    }

    /// Screens an encoded photo (JPEG, PNG, WebP or BMP bytes). EXIF orientation is applied.
    pub fn screen(&self, image: Vec<u8>) -> Result<Screening, MpoxError> {
        guard("screening", || Ok(self.inner.screen(&image)?.into()))
    }

    /// Screens a raw camera frame: `width × height` RGBA pixels, row-major, 4 bytes per pixel, no
    /// row padding.
    pub fn screen_rgba(
        &self,
        width: i32,
        height: i32,
        pixels: Vec<u8>,
    ) -> Result<Screening, MpoxError> {
        guard("screening", || {
            let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
                return Err(MpoxError::InvalidFrame {
                    reason: format!("dimensions must not be negative, got {width}x{height}"),
                });
            };
            Ok(self.inner.screen_rgba(w, h, &pixels)?.into())
        })
    }

    /// What the model file says about itself.
    pub fn info(&self) -> ModelInfo {
        self.inner.info().into()
    }

    /// Test-time views each screening averages (the config's, else the model's recommendation).
    pub fn views(&self) -> i32 {
        i32::try_from(self.inner.views()).unwrap_or(i32::MAX)
    }
}

/// Version of this library (the SDK's crate version).
#[uniffi::export]
pub fn library_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Number of `Screener` objects currently alive in this process: a leak check for tests and apps
/// (it drops back once every screener was closed or released).
#[uniffi::export]
pub fn live_screeners() -> i64 {
    LIVE_SCREENERS.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn all_sdk_errors() -> Vec<mpox_sdk::Error> {
        use mpox_sdk::Error as E;
        vec![
            E::Io {
                path: PathBuf::from("/x/model.onnx"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
            },
            E::ModelChecksum {
                expected: "aa".into(),
                actual: "bb".into(),
            },
            E::ModelDecode { reason: "r".into() },
            E::ModelVersion {
                found: "9".into(),
                supported: 1,
            },
            E::ModelMetadata {
                key: "labels".into(),
                reason: "r".into(),
            },
            E::ModelContract { reason: "r".into() },
            E::ImageEmpty,
            E::ImageFormat,
            E::ImageDecode { reason: "r".into() },
            E::ImageTooLarge {
                width: u32::MAX,
                height: 2,
                max_width: 3,
                max_height: 4,
                max_pixels: u64::MAX,
            },
            E::ImageTooSmall {
                width: 1,
                height: 2,
                min_side: 32,
            },
            E::InvalidFrame { reason: "r".into() },
            E::Inference { reason: "r".into() },
            E::InvalidOption {
                option: "views".into(),
                reason: "r".into(),
            },
            E::ModelUnsigned,
            E::ModelUntrustedSigner {
                signer: "ab".into(),
                trusted: 2,
            },
            E::ModelSignatureMismatch {
                signer: "cd".into(),
            },
        ]
    }

    #[test]
    fn every_sdk_error_maps_to_its_own_variant_with_the_same_message() {
        let mapped: Vec<MpoxError> = all_sdk_errors().into_iter().map(Into::into).collect();
        let names: Vec<String> = mapped
            .iter()
            .map(|e| {
                format!("{e:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(!mapped
            .iter()
            .any(|e| matches!(e, MpoxError::Internal { .. })));
        for (sdk, ours) in all_sdk_errors().iter().zip(&mapped) {
            // Same wording, except where the SDK says "SDK" and the u64 that saturates.
            let sdk_text = sdk.to_string().replace("this SDK", "this library");
            if !matches!(ours, MpoxError::ImageTooLarge { .. }) {
                assert_eq!(sdk_text, ours.to_string());
            }
        }
        assert_eq!(
            mapped[9],
            MpoxError::ImageTooLarge {
                width: u32::MAX.into(),
                height: 2,
                max_width: 3,
                max_height: 4,
                max_pixels: i64::MAX,
            }
        );
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let r: Result<(), MpoxError> = guard("testing", || panic!("boom"));
        assert_eq!(
            r,
            Err(MpoxError::Internal {
                reason: "testing panicked: boom".into()
            })
        );
        let r: Result<(), MpoxError> = guard("testing", || panic!("{}", String::from("owned")));
        assert!(matches!(r, Err(MpoxError::Internal { reason }) if reason.contains("owned")));
    }

    #[test]
    fn defaults_match_the_sdk() {
        let options = ScreenerConfig::default().to_sdk().unwrap();
        assert_eq!(options.limits, mpox_sdk::Limits::default());
        assert_eq!(options.quality, mpox_sdk::QualityThresholds::default());
        assert!(!options.heatmap && options.expected_sha256.is_none());
        // The uniffi field defaults (what Kotlin/Swift/Python get) are written out by hand: keep
        // them equal to the SDK's.
        let l = ImageLimits::default();
        assert_eq!(
            (
                l.max_width,
                l.max_height,
                l.max_pixels,
                l.max_alloc_bytes,
                l.min_side
            ),
            (16384, 16384, 50_000_000, 536_870_912, 32)
        );
        let q = QualityThresholds::default();
        assert_eq!(
            (
                q.min_mean_luminance,
                q.max_clipped_fraction,
                q.min_laplacian_variance
            ),
            (40.0, 0.25, 25.0)
        );
    }

    #[test]
    fn negative_limits_and_frames_are_typed_errors() {
        let config = ScreenerConfig {
            limits: Some(ImageLimits {
                max_width: -1,
                ..ImageLimits::default()
            }),
            ..ScreenerConfig::default()
        };
        assert!(matches!(
            config.to_sdk(),
            Err(MpoxError::InvalidFrame { reason }) if reason.contains("max_width")
        ));
    }

    #[test]
    fn view_counts_other_than_1_2_4_8_are_typed_errors() {
        for v in [-1, 0, 3, 16] {
            let config = ScreenerConfig {
                views: Some(v),
                ..ScreenerConfig::default()
            };
            let e = Screener::from_bytes(b"not onnx".to_vec(), Some(config)).unwrap_err();
            assert!(
                matches!(e, MpoxError::InvalidOption { ref option, .. } if option == "views"),
                "{v}: {e:?}"
            );
        }
        let config = ScreenerConfig {
            views: Some(4),
            ..ScreenerConfig::default()
        };
        assert_eq!(config.to_sdk().unwrap().views, Some(4));
        assert_eq!(ScreenerConfig::default().to_sdk().unwrap().views, None);
    }

    #[test]
    fn missing_model_is_an_io_error() {
        let e = Screener::from_path("/nonexistent/model.onnx".into(), None).unwrap_err();
        assert!(matches!(e, MpoxError::Io { ref path, .. } if path == "/nonexistent/model.onnx"));
        let e = Screener::from_bytes(b"not onnx".to_vec(), None).unwrap_err();
        assert!(matches!(e, MpoxError::ModelDecode { .. }), "{e:?}");
        assert_eq!(live_screeners(), 0);
    }
}
