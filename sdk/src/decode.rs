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
    match reader.format() {
        None => return Err(Error::ImageFormat),
        // The JPEG decoder fills a truncated scan with grey and reports success; a half-grey photo
        // must not be screened as if it were whole.
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(Error::ImageDecode {
                reason: "truncated JPEG: no end-of-image marker after the image data".into(),
            })
        }
        Some(_) => {}
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

/// Whether a JPEG's first scan is followed by an end-of-image marker.
///
/// Walks the marker segments from the start (skipping APPn segments, whose EXIF thumbnails carry
/// their own markers) to the first start-of-scan, then looks for `FF D9` in the entropy-coded data,
/// where a literal `FF` byte is always stuffed as `FF 00` and so cannot fake the marker.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if marker == 0xDA {
            return bytes[i + 2 + len.min(bytes.len() - i - 2)..]
                .windows(2)
                .any(|w| w == [0xFF, 0xD9]);
        }
        i += 2 + len;
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn complete_and_truncated_jpegs() {
        let full = jpeg(64, 48);
        assert!(jpeg_is_complete(&full));
        // Trailing bytes after EOI (some cameras append data) are fine.
        let mut trailer = full.clone();
        trailer.extend_from_slice(b"vendor trailer");
        assert!(jpeg_is_complete(&trailer));
        for cut in [full.len() - 2, full.len() / 2, 20, 3] {
            assert!(!jpeg_is_complete(&full[..cut]), "cut at {cut}");
            assert!(matches!(
                decode(&full[..cut], &Limits::default()),
                Err(Error::ImageDecode { .. })
            ));
        }
    }

    #[test]
    fn limits_are_checked_both_ways() {
        let l = Limits::default();
        assert!(l.check(4000, 3000).is_ok());
        assert!(matches!(
            l.check(20_000, 10),
            Err(Error::ImageTooLarge { .. })
        ));
        assert!(matches!(
            l.check(10_000, 10_000),
            Err(Error::ImageTooLarge { .. })
        ));
        assert!(matches!(l.check(31, 500), Err(Error::ImageTooSmall { .. })));
    }
}
