//! Parity between the candle network and its exported ONNX file run by the SDK.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use mpox_sdk::Screener;

use crate::error::Result;
use crate::models::Network;

/// Logit differences on one image.
#[derive(Clone, Debug)]
pub struct ImageParity {
    /// The image.
    pub file: PathBuf,
    /// Logits from candle.
    pub candle: Vec<f32>,
    /// Logits from the SDK (tract).
    pub sdk: Vec<f32>,
    /// Largest absolute difference.
    pub max_abs_diff: f32,
}

/// Parity over a set of images.
#[derive(Clone, Debug)]
pub struct Parity {
    /// Per image.
    pub images: Vec<ImageParity>,
    /// Largest absolute logit difference over all images.
    pub max_abs_diff: f32,
    /// `max_abs_diff / max(1, largest |logit|)`.
    pub rel_diff: f32,
}

/// Runs each image through the SDK's decoding and preprocessing, then through both `net` (eval mode)
/// and the screener's network, and compares the logits.
pub fn parity(net: &Network, screener: &Screener, files: &[PathBuf]) -> Result<Parity> {
    let pre = &screener.info().meta.preprocessing;
    let limits = &screener.options().limits;
    let s = pre.input_size as usize;
    let mut images = Vec::with_capacity(files.len());
    let mut max_abs = 0f32;
    let mut max_logit = 0f32;
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| crate::error::Error::io(file, e))?;
        let img = mpox_sdk::decode::decode(&bytes, limits)?;
        let input = pre.tensor(&img);
        let sdk = screener.infer(&input)?.logits;
        let x = Tensor::from_vec(input, (1, 3, s, s), net.device())?;
        let candle = net.forward_t(&x, false)?.flatten_all()?.to_vec1::<f32>()?;
        let diff = max_abs_diff(&candle, &sdk);
        max_abs = max_abs.max(diff);
        max_logit = candle.iter().fold(max_logit, |m, v| m.max(v.abs()));
        images.push(ImageParity {
            file: file.clone(),
            candle,
            sdk,
            max_abs_diff: diff,
        });
    }
    Ok(Parity {
        images,
        max_abs_diff: max_abs,
        rel_diff: max_abs / max_logit.max(1.0),
    })
}

/// Largest absolute element-wise difference (infinite when lengths differ).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Convenience for the CLI: parity on every image in `dir`.
pub fn parity_dir(net: &Network, screener: &Screener, dir: &Path) -> Result<Parity> {
    let files = crate::dataset::list_images(dir)?;
    if files.is_empty() {
        return Err(crate::error::Error::Invalid(format!(
            "no images (png, jpg, jpeg, webp, bmp) in {}",
            dir.display()
        )));
    }
    parity(net, screener, &files)
}
