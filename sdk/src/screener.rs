//! The `Screener`: one loaded model, many photos, any number of threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::contract::{self, ModelMeta};
use crate::decode::{self, Limits};
use crate::error::{Error, Result};
use crate::ops;
use crate::preprocess::{is_view_count, VIEW_COUNTS};
use crate::profile::{self, NodeTime};
use crate::quality::{self, QualityThresholds, QualityWarning};
use crate::signature::{self, TrustedKey};

type Plan = Arc<TypedRunnableModel>;

/// How a `Screener` loads its model and screens photos.
#[derive(Clone, Debug, Default)]
pub struct ScreenerOptions {
    /// If set, the model bytes must hash to this sha256 (hex, any case).
    pub expected_sha256: Option<String>,
    /// Limits on decoded photos.
    pub limits: Limits,
    /// Thresholds of the quality checks.
    pub quality: QualityThresholds,
    /// Compute the class-activation heatmap for each screening.
    pub heatmap: bool,
    /// Test-time views whose logits each screening averages: 1, 2, 4 or 8 (which ones:
    /// [`crate::preprocess`]); `None` takes the model file's recommendation (1 when it has none).
    /// Each view costs one inference; any other count fails loading with
    /// [`Error::InvalidOption`].
    pub views: Option<u32>,
    /// Ed25519 public keys (64 hex digits each) whose signatures this screener accepts. When any
    /// are given, a model that is unsigned, signed by another key or altered after signing is
    /// refused; when none are, signatures are not checked. Sign with `mpox-trainer sign`.
    pub trusted_keys: Vec<String>,
    /// Threads one inference may use, 1 to [`MAX_THREADS`] (`None`: 1). With more than one,
    /// the screener keeps its own pool of that size for tract's matrix products and the SDK's
    /// ops. Needs the `threads` cargo feature; without it more than one fails loading with
    /// [`Error::InvalidOption`].
    pub threads: Option<u32>,
}

/// Most threads [`ScreenerOptions::threads`] accepts.
pub const MAX_THREADS: u32 = 16;

/// What the SDK tells the app about a photo. A screening aid, not a diagnosis.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Calibrated probability of mpox at or above the upper edge of the uncertain band.
    LikelyMpox,
    /// Probability below the lower edge of the band.
    Unlikely,
    /// Inside the band: refer the patient for a clinical assessment.
    Uncertain,
}

impl Verdict {
    /// Stable snake_case code (`likely_mpox`, `unlikely`, `uncertain`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::LikelyMpox => "likely_mpox",
            Self::Unlikely => "unlikely",
            Self::Uncertain => "uncertain",
        }
    }

    /// Verdict for a calibrated probability, given the model's uncertain band `[low, high]`.
    pub fn from_probability(p: f32, band: [f32; 2]) -> Self {
        if p >= band[1] {
            Self::LikelyMpox
        } else if p < band[0] {
            Self::Unlikely
        } else {
            Self::Uncertain
        }
    }
}

/// Where the model looked: the positive class's activation map against the others, upsampled to the
/// network input (the centre crop of the photo) and scaled to 0..1.
///
/// With several views it is still the centre view's map: the other views' maps cover other
/// windows or mirror images, and at the map's coarse resolution (`S/32`) mapping them back onto
/// the centre crop would blur the map rather than sharpen it.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Width in pixels (the model's input size).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major values in 0..1.
    pub values: Vec<f32>,
}

/// A label and its calibrated probability.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassProbability {
    /// Class label from the model file.
    pub label: String,
    /// Calibrated probability.
    pub probability: f32,
}

/// The result of screening one photo.
#[derive(Clone, Debug, PartialEq)]
pub struct Screening {
    /// Calibrated probability of the positive (mpox) label.
    pub probability_mpox: f32,
    /// Calibrated probability of every label, in the model's label order.
    pub probabilities: Vec<ClassProbability>,
    /// Verdict from the model's operating point and uncertain band.
    pub verdict: Verdict,
    /// Quality warnings: if any, suggest a retake.
    pub quality: Vec<QualityWarning>,
    /// Class-activation heatmap, when asked for.
    pub heatmap: Option<Heatmap>,
    /// Raw (uncalibrated) logits, averaged over the views when there are several.
    pub logits: Vec<f32>,
    /// Short id of the model (first 12 hex digits of its sha256).
    pub model_id: String,
    /// Wall time of the whole call in milliseconds (decode, preprocess, inference).
    pub latency_ms: f64,
}

/// Facts about the loaded model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The contract metadata.
    pub meta: ModelMeta,
    /// sha256 of the model file (lowercase hex).
    pub sha256: String,
    /// First 12 hex digits of `sha256`.
    pub model_id: String,
    /// Side of the class-activation map.
    pub cam_size: (usize, usize),
    /// The trusted key (hex) whose signature was verified; `None` when no keys were trusted.
    pub signed_by: Option<String>,
}

/// Raw network outputs for one preprocessed image.
#[derive(Clone, Debug, PartialEq)]
pub struct RawOutput {
    /// Logits `[C]`.
    pub logits: Vec<f32>,
    /// Class-activation maps `[C, h, w]`, row-major.
    pub cam: Vec<f32>,
    /// `(h, w)` of the maps.
    pub cam_size: (usize, usize),
}

/// A loaded screening model. `Send + Sync`: share one behind an `Arc` across threads.
pub struct Screener {
    plan: Plan,
    views: u32,
    logits_ix: usize,
    cam_ix: usize,
    info: ModelInfo,
    options: ScreenerOptions,
}

impl std::fmt::Debug for Screener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screener")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Screener {
    /// Loads a model file.
    pub fn from_path(path: impl AsRef<Path>, options: ScreenerOptions) -> Result<Self> {
        check_options(&options)?;
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, options)
    }

    /// Loads a model from its bytes (for apps that bundle it as an asset).
    pub fn from_bytes(bytes: &[u8], options: ScreenerOptions) -> Result<Self> {
        check_options(&options)?;
        let trusted = options
            .trusted_keys
            .iter()
            .map(|k| TrustedKey::from_hex(k))
            .collect::<Result<Vec<_>>>()?;
        let executor = executor(options.threads.unwrap_or(1))?;
        // tract is not written for hostile input: a malformed graph could panic deep inside it.
        let parse = || {
            catch_unwind(AssertUnwindSafe(|| load(bytes, &trusted, executor))).map_err(|p| {
                Error::ModelDecode {
                    reason: format!("the model parser panicked: {}", panic_message(&p)),
                }
            })?
        };
        let checksum = || hex(&Sha256::digest(bytes));
        let (sha256, loaded) = match &options.expected_sha256 {
            // A file that must match a checksum is not parsed before it does.
            Some(expected) => {
                let sha256 = checksum();
                if !expected.trim().eq_ignore_ascii_case(&sha256) {
                    return Err(Error::ModelChecksum {
                        expected: expected.trim().to_ascii_lowercase(),
                        actual: sha256,
                    });
                }
                (sha256, parse())
            }
            // Otherwise the hash (a fifth of a ResNet-18's load) runs beside the parsing.
            // Where no thread can be started, one after the other.
            None => std::thread::scope(|s| {
                match std::thread::Builder::new().spawn_scoped(s, checksum) {
                    Ok(hashing) => {
                        let loaded = parse();
                        (hashing.join().unwrap_or_else(|_| checksum()), loaded)
                    }
                    Err(_) => (checksum(), parse()),
                }
            }),
        };
        let loaded = loaded?;
        let Loaded {
            plan,
            meta,
            logits_ix,
            cam_ix,
            cam_size,
            signed_by,
        } = loaded;
        let views = options.views.unwrap_or(meta.recommended_views);
        let info = ModelInfo {
            meta,
            model_id: sha256[..12].to_string(),
            sha256,
            cam_size,
            signed_by,
        };
        Ok(Self {
            plan,
            views,
            logits_ix,
            cam_ix,
            info,
            options,
        })
    }

    /// What the model file says about itself.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The options this screener was loaded with.
    pub fn options(&self) -> &ScreenerOptions {
        &self.options
    }

    /// Number of test-time views each screening averages (the option, else the model's
    /// recommendation).
    pub fn views(&self) -> u32 {
        self.views
    }

    /// Screens an encoded photo (JPEG, PNG, WebP, BMP).
    pub fn screen(&self, bytes: &[u8]) -> Result<Screening> {
        let start = Instant::now();
        let img = decode::decode(bytes, &self.options.limits)?;
        self.screen_decoded(&img, start)
    }

    /// Screens a raw RGBA camera frame (row-major, no padding).
    pub fn screen_rgba(&self, width: u32, height: u32, pixels: &[u8]) -> Result<Screening> {
        let start = Instant::now();
        let img = decode::from_rgba(width, height, pixels, &self.options.limits)?;
        self.screen_decoded(&img, start)
    }

    /// Screens an already decoded, upright RGB image.
    pub fn screen_image(&self, img: &RgbImage) -> Result<Screening> {
        let start = Instant::now();
        self.options.limits.check(img.width(), img.height())?;
        self.screen_decoded(img, start)
    }

    fn screen_decoded(&self, img: &RgbImage, start: Instant) -> Result<Screening> {
        let meta = &self.info.meta;
        let pre = &meta.preprocessing;
        let views = pre.views(img, self.views)?;
        let quality = quality::assess(
            img.dimensions(),
            &views[0],
            pre.input_size,
            &self.options.quality,
        );
        let raw = self.infer_views(&pre.normalize_batch(&views))?;
        let probs = softmax(&raw.logits, meta.temperature);
        let pos = meta.positive_index();
        let probability_mpox = probs[pos];
        let heatmap = self
            .options
            .heatmap
            .then(|| heatmap(&raw, pos, pre.input_size));
        Ok(Screening {
            probability_mpox,
            probabilities: meta
                .labels
                .iter()
                .zip(&probs)
                .map(|(label, &probability)| ClassProbability {
                    label: label.clone(),
                    probability,
                })
                .collect(),
            verdict: Verdict::from_probability(probability_mpox, meta.uncertain_band),
            quality,
            heatmap,
            logits: raw.logits,
            model_id: self.info.model_id.clone(),
            latency_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Runs the network on one preprocessed image (`3·S·S` normalised CHW floats).
    pub fn infer(&self, input: &[f32]) -> Result<RawOutput> {
        self.with_input(input, |tensor| {
            let outputs = self.plan.run(tvec!(tensor.into()))?;
            let logits = outputs[self.logits_ix].to_plain_array_view::<f32>()?;
            let cam = outputs[self.cam_ix].to_plain_array_view::<f32>()?;
            Ok(RawOutput {
                logits: logits.iter().copied().collect(),
                cam: cam.iter().copied().collect(),
                cam_size: self.info.cam_size,
            })
        })
    }

    /// Checks one preprocessed image's length, makes it the plan's input tensor and runs `f` on
    /// it, with the engine's errors and panics turned into [`Error::Inference`].
    fn with_input<T>(&self, input: &[f32], f: impl FnOnce(Tensor) -> TractResult<T>) -> Result<T> {
        let s = self.info.meta.preprocessing.input_size as usize;
        if input.len() != 3 * s * s {
            return Err(Error::Inference {
                reason: format!("input has {} values, expected 3x{s}x{s}", input.len()),
            });
        }
        let run = || f(Tensor::from_shape(&[1, 3, s, s], input)?);
        catch_unwind(AssertUnwindSafe(run))
            .map_err(|p| Error::Inference {
                reason: format!("the inference engine panicked: {}", panic_message(&p)),
            })?
            .map_err(|e| Error::Inference {
                reason: format!("{e:#}"),
            })
    }

    /// Times each node of the optimised plan over `runs` inferences of one preprocessed image
    /// (as [`Self::infer`] takes it): where the time of an inference goes on this device.
    pub fn profile(&self, input: &[f32], runs: usize) -> Result<Vec<NodeTime>> {
        self.with_input(input, |tensor| {
            profile::profile_plan(&self.plan, tensor, runs)
        })
    }

    /// Runs the network on the [`Self::views`] views of one photo (`[views, 3, S, S]` normalised
    /// floats, as [`crate::Preprocessing::views_tensor`] makes them): the logits averaged over
    /// the views, and the centre view's maps (see [`Heatmap`]). With one view this is
    /// [`Self::infer`], bit for bit.
    pub fn infer_views(&self, input: &[f32]) -> Result<RawOutput> {
        let n = self.views as usize;
        let len = self.info.meta.preprocessing.tensor_len();
        if input.len() != n * len {
            return Err(Error::Inference {
                reason: format!(
                    "input has {} values, expected {n} views of {len}",
                    input.len()
                ),
            });
        }
        // One view after another through the one-image plan, not one batch: tract 0.23.9 ran a
        // batch of views about twice as slowly per view (MobileNetV2, 224 px; docs/results.md), and a
        // plan for the batch would also cost a second optimisation at load and its memory.
        let mut logits = Vec::with_capacity(n * self.info.meta.labels.len());
        let mut centre = None;
        for view in input.chunks_exact(len) {
            let raw = self.infer(view)?;
            logits.extend_from_slice(&raw.logits);
            centre.get_or_insert(raw);
        }
        let mut raw = centre.ok_or_else(|| Error::Inference {
            reason: "no view to run".into(),
        })?;
        raw.logits = mean_rows(&logits, n);
        Ok(raw)
    }
}

/// Refuses options the SDK cannot honour before any work is done.
fn check_options(options: &ScreenerOptions) -> Result<()> {
    if let Some(n) = options.views.filter(|&n| !is_view_count(n)) {
        return Err(Error::InvalidOption {
            option: "views".into(),
            reason: format!("{n} is not one of {VIEW_COUNTS:?}"),
        });
    }
    if let Some(n) = options.threads.filter(|n| !(1..=MAX_THREADS).contains(n)) {
        return Err(Error::InvalidOption {
            option: "threads".into(),
            reason: format!("{n} is not between 1 and {MAX_THREADS}"),
        });
    }
    Ok(())
}

/// The executor for `threads` threads: tract's own single-threaded one for 1.
#[cfg(feature = "threads")]
fn executor(
    threads: u32,
) -> Result<Option<tract_onnx::prelude::tract_linalg::multithread::Executor>> {
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads as usize)
        .thread_name(|i| format!("mpox-sdk-{i}"))
        .build()
        .map_err(|e| Error::InvalidOption {
            option: "threads".into(),
            reason: format!("cannot start {threads} threads: {e}"),
        })?;
    Ok(Some(
        tract_onnx::prelude::tract_linalg::multithread::Executor::MultiThread(Arc::new(pool)),
    ))
}

/// Without the `threads` feature only tract's single-threaded executor exists.
#[cfg(not(feature = "threads"))]
fn executor(
    threads: u32,
) -> Result<Option<tract_onnx::prelude::tract_linalg::multithread::Executor>> {
    if threads <= 1 {
        return Ok(None);
    }
    Err(Error::InvalidOption {
        option: "threads".into(),
        reason: format!(
            "{threads} threads need mpox-sdk built with its `threads` feature; this build runs one"
        ),
    })
}

/// Mean of the `n` rows of a row-major `[n, C]` matrix, summed in row order. One row is returned
/// as it is, bit for bit (even a `-0.0`, which `0.0 + x` would turn into `+0.0`).
fn mean_rows(values: &[f32], n: usize) -> Vec<f32> {
    let mut rows = values.chunks_exact((values.len() / n.max(1)).max(1));
    let mut mean = rows.next().map(<[f32]>::to_vec).unwrap_or_default();
    for row in rows {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    if n > 1 {
        for m in &mut mean {
            *m /= n as f32;
        }
    }
    mean
}

/// What `load` builds from the model bytes.
struct Loaded {
    plan: Plan,
    meta: ModelMeta,
    logits_ix: usize,
    cam_ix: usize,
    cam_size: (usize, usize),
    signed_by: Option<String>,
}

fn load(
    bytes: &[u8],
    trusted: &[TrustedKey],
    executor: Option<tract_onnx::prelude::tract_linalg::multithread::Executor>,
) -> Result<Loaded> {
    let decode_err = |e: TractError| Error::ModelDecode {
        reason: format!("{e:#}"),
    };
    let onnx = tract_onnx::onnx();
    let mut proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(decode_err)?;
    // Before anything reads the graph: a model from an untrusted key is not parsed further.
    let signed_by = signature::verify(&mut proto, trusted)?;
    let graph = proto.graph.as_ref().ok_or_else(|| Error::ModelDecode {
        reason: "the file holds no graph".into(),
    })?;
    let meta = ModelMeta::from_props(
        proto
            .metadata_props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str())),
    )?;
    let (logits_ix, cam_ix) = contract::check_graph(graph, &meta)?;
    let s = meta.preprocessing.input_size as usize;
    let contract_err = |e: TractError| Error::ModelContract {
        reason: format!("{e:#}"),
    };
    let mut model = onnx.model_for_proto_model(&proto).map_err(decode_err)?;
    model
        .set_input_fact(0, f32::fact([1, 3, s, s]).into())
        .map_err(contract_err)?;
    let isa = ops::Isa::detect();
    let mut model = model.into_typed().map_err(contract_err)?;
    ops::prepare(&mut model, isa).map_err(contract_err)?;
    let mut model = model.into_decluttered().map_err(contract_err)?;
    ops::rewrite(&mut model, isa).map_err(contract_err)?;
    let model = model.into_optimized().map_err(contract_err)?;
    let cam_size = contract::check_outputs(&model, &meta, logits_ix, cam_ix)?;
    let options = RunOptions {
        executor,
        ..Default::default()
    };
    let plan = model
        .into_runnable_with_options(&options)
        .map_err(contract_err)?;
    Ok(Loaded {
        plan,
        meta,
        logits_ix,
        cam_ix,
        cam_size,
        signed_by,
    })
}

/// Softmax of `logits / temperature`, computed stably.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scaled.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Upsamples (bilinear, half-pixel centres) the positive map minus the mean of the others, scaled to 0..1.
fn heatmap(raw: &RawOutput, pos: usize, size: u32) -> Heatmap {
    let (h, w) = raw.cam_size;
    let plane = h * w;
    let classes = raw.cam.len() / plane.max(1);
    let contrast: Vec<f32> = (0..plane)
        .map(|i| {
            let others: f32 = (0..classes)
                .filter(|&c| c != pos)
                .map(|c| raw.cam[c * plane + i])
                .sum::<f32>()
                / (classes - 1).max(1) as f32;
            raw.cam[pos * plane + i] - others
        })
        .collect();
    let n = size as usize;
    let sample = |v: f32, len: usize| {
        let x = ((v + 0.5) * len as f32 / n as f32 - 0.5).clamp(0.0, (len - 1) as f32);
        let i0 = x.floor() as usize;
        let i1 = (i0 + 1).min(len - 1);
        (i0, i1, x - i0 as f32)
    };
    let mut values = Vec::with_capacity(n * n);
    for y in 0..n {
        let (y0, y1, fy) = sample(y as f32, h);
        for x in 0..n {
            let (x0, x1, fx) = sample(x as f32, w);
            let top = contrast[y0 * w + x0] * (1.0 - fx) + contrast[y0 * w + x1] * fx;
            let bottom = contrast[y1 * w + x0] * (1.0 - fx) + contrast[y1 * w + x1] * fx;
            values.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    for v in &mut values {
        *v = if range > 1e-12 {
            (*v - lo) / range
        } else {
            0.0
        };
    }
    Heatmap {
        width: size,
        height: size,
        values,
    }
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_with_temperature() {
        let p = softmax(&[0.0, 2.0_f32.ln()], 1.0);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
        // A temperature of 2 halves the log-odds: ln 2 / 2 -> odds √2.
        let p = softmax(&[0.0, 2.0_f32.ln()], 2.0);
        let odds = p[1] / p[0];
        assert!((odds - 2.0_f32.sqrt()).abs() < 1e-5);
        let p = softmax(&[1000.0, -1000.0], 1.0);
        assert!(p[0] == 1.0 && p[1] == 0.0);
    }

    #[test]
    fn verdict_bands() {
        let band = [0.3, 0.7];
        assert_eq!(Verdict::from_probability(0.29, band), Verdict::Unlikely);
        assert_eq!(Verdict::from_probability(0.3, band), Verdict::Uncertain);
        assert_eq!(Verdict::from_probability(0.69, band), Verdict::Uncertain);
        assert_eq!(Verdict::from_probability(0.7, band), Verdict::LikelyMpox);
        // A degenerate band is a plain threshold.
        assert_eq!(
            Verdict::from_probability(0.5, [0.5, 0.5]),
            Verdict::LikelyMpox
        );
        assert_eq!(
            Verdict::from_probability(0.49, [0.5, 0.5]),
            Verdict::Unlikely
        );
    }

    #[test]
    fn heatmap_follows_the_positive_map() {
        // 2 classes, 2x2 maps: positive evidence in the top-left cell only.
        let raw = RawOutput {
            logits: vec![0.0, 0.0],
            cam: vec![0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0],
            cam_size: (2, 2),
        };
        let h = heatmap(&raw, 1, 8);
        assert_eq!(h.values.len(), 64);
        assert_eq!(h.values[0], 1.0);
        assert_eq!(h.values[63], 0.0);
        assert!(h.values[9] > h.values[54]);
    }

    #[test]
    fn mean_of_rows() {
        let one = [0.1_f32, -0.0, 3.0];
        assert_eq!(mean_rows(&one, 1)[1].to_bits(), (-0.0_f32).to_bits());
        assert_eq!(mean_rows(&one, 1), one);
        assert_eq!(
            mean_rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 4),
            [4.0, 5.0]
        );
    }

    #[test]
    fn thread_counts_are_checked_before_loading() {
        let threads = |n| ScreenerOptions {
            threads: Some(n),
            ..Default::default()
        };
        for n in [0, MAX_THREADS + 1] {
            let err = Screener::from_bytes(b"not even a model", threads(n)).unwrap_err();
            assert!(matches!(&err, Error::InvalidOption { option, .. } if option == "threads"));
        }
        // Without the feature a build runs one thread and says so; with it, the pool starts and
        // the bytes are the next thing refused.
        let err = Screener::from_bytes(b"not even a model", threads(2)).unwrap_err();
        if cfg!(feature = "threads") {
            assert!(matches!(err, Error::ModelDecode { .. }), "{err:?}");
        } else {
            assert!(
                matches!(&err, Error::InvalidOption { reason, .. } if reason.contains("`threads` feature")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn invalid_view_counts_are_refused_before_loading() {
        for n in [0, 3, 6, 16] {
            let options = ScreenerOptions {
                views: Some(n),
                ..Default::default()
            };
            match Screener::from_bytes(b"not even a model", options.clone()) {
                Err(Error::InvalidOption { option, reason }) => {
                    assert_eq!(option, "views");
                    assert!(reason.starts_with(&n.to_string()), "{reason}");
                }
                other => panic!("{n} views: {other:?}"),
            }
            assert!(matches!(
                Screener::from_path("/nonexistent/model.onnx", options),
                Err(Error::InvalidOption { .. })
            ));
        }
    }

    #[test]
    fn screener_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Screener>();
    }
}
