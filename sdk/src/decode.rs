//! Decoding photos and camera frames into upright RGB, with limits checked before allocating.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// Bounds on what a photo may claim to be, checked against its header before any pixel buffer is allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted width in pixels.
    pub max_width: u32,
    /// Largest accepted height in pixels.
    pub max_height: u32,
    /// Largest accepted width × height (default 50 MP, a large phone photo).
    pub max_pixels: u64,
    /// Largest total decoder allocation in bytes.
    pub max_alloc: u64,
    /// Smallest accepted side: below it there is nothing to screen.
    pub min_side: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_width: 16_384,
            max_height: 16_384,
            max_pixels: 50_000_000,
            max_alloc: 512 * 1024 * 1024,
            min_side: 32,
        }
    }
}

impl Limits {
    /// Refuses dimensions outside the limits.
    pub fn check(&self, width: u32, height: u32) -> Result<()> {
        if width > self.max_width
            || height > self.max_height
            || u64::from(width) * u64::from(height) > self.max_pixels
        {
            return Err(Error::ImageTooLarge {
                width,
                height,
                max_width: self.max_width,
                max_height: self.max_height,
                max_pixels: self.max_pixels,
            });
        }
        if width < self.min_side || height < self.min_side {
            return Err(Error::ImageTooSmall {
                width,
                height,
                min_side: self.min_side,
            });
        }
        Ok(())
    }
}

/// Decodes an encoded photo (JPEG, PNG, WebP, BMP) into upright 8-bit RGB.
///
/// EXIF orientation is applied; grayscale, alpha, 16-bit and CMYK sources are converted to RGB
/// (alpha is dropped, not blended, since camera photos carry none).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::ImageEmpty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::ImageDecode {
            reason: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(Error::ImageFormat);
    }
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;
    let (width, height) = decoder.dimensions();
    limits.check(width, height)?;
    let orientation = decoder.orientation().map_err(map_image_error)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    img.apply_orientation(orientation);
    Ok(into_rgb(img))
}

/// Wraps a raw RGBA camera frame (row-major, 4 bytes per pixel, no padding) as RGB.
pub fn from_rgba(width: u32, height: u32, pixels: &[u8], limits: &Limits) -> Result<RgbImage> {
    let expected = u64::from(width) * u64::from(height) * 4;
    if pixels.len() as u64 != expected {
        return Err(Error::InvalidFrame {
            reason: format!(
                "{width}x{height} RGBA needs {expected} bytes, got {}",
                pixels.len()
            ),
        });
    }
    limits.check(width, height)?;
    let rgb: Vec<u8> = pixels
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| Error::InvalidFrame {
        reason: "buffer does not match dimensions".into(),
    })
}

fn into_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

fn map_image_error(e: ImageError) -> Error {
    match e {
        ImageError::Unsupported(_) => Error::ImageFormat,
        ImageError::Limits(l) => Error::ImageDecode {
            reason: format!("decoder limit reached: {l}"),
        },
        other => Error::ImageDecode {
            reason: other.to_string(),
        },
    }
}
