//! The SDK's error type: every failure is one of these variants, never a panic.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or screening a photo.
///
/// Variants say whose fault it is: the model file (`Model*`), the photo (`Image*`), the caller's
/// options (`InvalidOption`) or frame buffer (`InvalidFrame`), or the runtime (`Io`, `Inference`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The model bytes do not hash to the sha256 the caller expected.
    #[error("model checksum mismatch: expected sha256 {expected}, file has {actual}")]
    ModelChecksum {
        /// The sha256 the caller asked for (lowercase hex).
        expected: String,
        /// The sha256 of the bytes given.
        actual: String,
    },
    /// The bytes are not a readable ONNX model (truncated, corrupt, or not ONNX at all).
    #[error("not a readable ONNX model: {reason}")]
    ModelDecode {
        /// What the parser reported.
        reason: String,
    },
    /// The model's `mpoxscreen.format` version is not one this SDK understands.
    #[error("model format version {found} is not supported (this SDK reads version {supported})")]
    ModelVersion {
        /// The version string found in the file.
        found: String,
        /// The version this SDK reads.
        supported: u32,
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
    /// The screener trusts signing keys and the model carries no signature.
    #[error(
        "the model is not signed, and this screener loads only models signed by a trusted key"
    )]
    ModelUnsigned,
    /// The model is signed, but by a key the screener does not trust.
    #[error(
        "the model is signed by key {signer}, which is not one of the {trusted} trusted key(s)"
    )]
    ModelUntrustedSigner {
        /// The signer's public key as the file states it (hex, at most 64 characters).
        signer: String,
        /// How many keys the screener trusts.
        trusted: usize,
    },
    /// The signature by a trusted key does not match the model: the file was altered after
    /// signing, or the signature itself is damaged.
    #[error("the model's signature by trusted key {signer} does not match its content: it was altered after signing, or the signature is damaged")]
    ModelSignatureMismatch {
        /// The trusted key that the file says signed it (hex).
        signer: String,
    },
    /// A caller's option has a value the SDK does not accept (e.g. `views` = 3).
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option at fault, as the field of `ScreenerOptions` is called.
        option: String,
        /// Why it was refused.
        reason: String,
    },
    /// The image bytes are empty.
    #[error("the image is empty (0 bytes)")]
    ImageEmpty,
    /// The bytes are not in an image format this build decodes (JPEG, PNG, WebP, BMP).
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
        width: u32,
        /// Height claimed by the image header.
        height: u32,
        /// Largest accepted width.
        max_width: u32,
        /// Largest accepted height.
        max_height: u32,
        /// Largest accepted width × height.
        max_pixels: u64,
    },
    /// The image is too small to say anything about a skin lesion.
    #[error("image of {width}x{height} pixels is too small (at least {min_side} pixels per side are needed)")]
    ImageTooSmall {
        /// Width of the image.
        width: u32,
        /// Height of the image.
        height: u32,
        /// Smallest accepted side.
        min_side: u32,
    },
    /// A raw camera frame's dimensions and buffer length disagree.
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
}

/// Result alias used throughout the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;
