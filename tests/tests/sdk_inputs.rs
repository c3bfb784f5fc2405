//! The SDK on good, odd and hostile inputs: every case gives a specific error variant or a correct result.

use std::sync::{Arc, OnceLock};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba};
use mpox_e2e::{encode, jpeg, photo, tiny_model, with_exif_orientation};
use mpox_sdk::{Error, Screener, ScreenerOptions, Verdict};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tract_onnx::pb;

const SIZE: u32 = 96;

fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| tiny_model(SIZE))
}

fn screener() -> &'static Screener {
    static S: OnceLock<Screener> = OnceLock::new();
    S.get_or_init(|| Screener::from_bytes(model_bytes(), ScreenerOptions::default()).unwrap())
}

fn png(img: &RgbImage) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png)
}

fn logits(bytes: &[u8]) -> Vec<f32> {
    screener().screen(bytes).unwrap().logits
}

#[test]
fn a_photo_gets_a_consistent_screening() {
    let s = screener().screen(&png(&photo(1, true, 200))).unwrap();
    let total: f32 = s.probabilities.iter().map(|c| c.probability).sum();
    assert!((total - 1.0).abs() < 1e-5);
    assert_eq!(s.probabilities[1].label, "mpox");
    assert_eq!(s.probability_mpox, s.probabilities[1].probability);
    let expected = Verdict::from_probability(s.probability_mpox, [0.4, 0.6]);
    assert_eq!(s.verdict, expected);
    assert_eq!(s.logits.len(), 2);
    assert_eq!(s.model_id.len(), 12);
    assert!(s.heatmap.is_none());
}

#[test]
fn empty_bytes() {
    assert!(matches!(screener().screen(&[]), Err(Error::ImageEmpty)));
}

#[test]
fn non_image_bytes() {
    let text = b"this is certainly not a photo, just some words in a file".repeat(4);
    assert!(matches!(screener().screen(&text), Err(Error::ImageFormat)));
}

#[test]
fn truncated_jpeg() {
    let bytes = jpeg(&photo(2, true, 200), 90);
    let cut = &bytes[..bytes.len() / 3];
    assert!(
        matches!(screener().screen(cut), Err(Error::ImageDecode { .. })),
        "{:?}",
        screener().screen(cut)
    );
}

#[test]
fn one_pixel_image() {
    let img = RgbImage::from_pixel(1, 1, Rgb([200, 150, 120]));
    match screener().screen(&png(&img)) {
        Err(Error::ImageTooSmall {
            width: 1,
            height: 1,
            min_side,
        }) => assert!(min_side > 1),
        other => panic!("unexpected {other:?}"),
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    c.extend_from_slice(&body);
    c.extend_from_slice(&crc32(&body).to_be_bytes());
    c
}

#[test]
fn png_header_claiming_100000_squared_is_refused_before_allocating() {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(png_chunk(b"IHDR", &ihdr));
    bytes.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    bytes.extend(png_chunk(b"IEND", &[]));
    match screener().screen(&bytes) {
        Err(Error::ImageTooLarge {
            width: 100_000,
            height: 100_000,
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn grayscale_equals_grey_rgb() {
    let grey = ImageBuffer::from_fn(120, 100, |x, y| Luma([((x * 7 + y * 3) % 256) as u8]));
    let as_rgb = RgbImage::from_fn(120, 100, |x, y| {
        let v = grey.get_pixel(x, y)[0];
        Rgb([v, v, v])
    });
    let a = logits(&encode(&DynamicImage::ImageLuma8(grey), ImageFormat::Png));
    assert_eq!(a, logits(&png(&as_rgb)));
}

#[test]
fn rgba_drops_alpha() {
    let rgb = photo(3, true, 128);
    let rgba = ImageBuffer::from_fn(128, 128, |x, y| {
        let p = rgb.get_pixel(x, y);
        Rgba([p[0], p[1], p[2], ((x + y) % 256) as u8])
    });
    let a = logits(&encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    assert_eq!(a, logits(&png(&rgb)));
}

#[test]
fn sixteen_bit_png_equals_eight_bit() {
    let rgb = photo(4, false, 128);
    let deep: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(128, 128, |x, y| {
        let p = rgb.get_pixel(x, y);
        Rgb([p[0], p[1], p[2]].map(|v| u16::from(v) * 257))
    });
    let bytes = encode(&DynamicImage::ImageRgb16(deep), ImageFormat::Png);
    assert_eq!(logits(&bytes), logits(&png(&rgb)));
}

#[test]
fn exif_rotated_jpeg_equals_upright() {
    // Upright 160x96; the camera stored it turned 90° anticlockwise and says "rotate 90° CW".
    let upright = photo(5, true, 160);
    let upright = image::imageops::crop_imm(&upright, 0, 32, 160, 96).to_image();
    let stored = image::imageops::rotate270(&upright);
    let rotated_bytes = with_exif_orientation(&jpeg(&stored, 95), 6);
    let upright_bytes = jpeg(&upright, 95);

    let limits = mpox_sdk::Limits::default();
    let a = mpox_sdk::decode::decode(&rotated_bytes, &limits).unwrap();
    let b = mpox_sdk::decode::decode(&upright_bytes, &limits).unwrap();
    assert_eq!(a.dimensions(), (160, 96));
    let mean_abs: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| f64::from((i16::from(*x) - i16::from(*y)).abs()))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    assert!(mean_abs < 3.0, "pixels differ by {mean_abs} on average");
    // Without the EXIF tag the photo stays on its side.
    let sideways = mpox_sdk::decode::decode(&jpeg(&stored, 95), &limits).unwrap();
    assert_eq!(sideways.dimensions(), (96, 160));

    let (ra, rb) = (
        screener().screen(&rotated_bytes).unwrap(),
        screener().screen(&upright_bytes).unwrap(),
    );
    assert!(
        (ra.probability_mpox - rb.probability_mpox).abs() < 0.02,
        "{} vs {}",
        ra.probability_mpox,
        rb.probability_mpox
    );
}

#[test]
fn rgba_frames_match_encoded_photos_and_bad_frames_are_refused() {
    let rgb = photo(6, true, 150);
    let rgba: Vec<u8> = rgb.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let frame = screener().screen_rgba(150, 150, &rgba).unwrap();
    assert_eq!(frame.logits, logits(&png(&rgb)));
    assert!(matches!(
        screener().screen_rgba(150, 151, &rgba),
        Err(Error::InvalidFrame { .. })
    ));
    assert!(matches!(
        screener().screen_rgba(20_000, 20_000, &[]),
        Err(Error::InvalidFrame { .. })
    ));
}

#[test]
fn dark_photo_gets_a_quality_warning_not_an_error() {
    let dark = RgbImage::from_fn(200, 200, |x, y| Rgb([((x ^ y) % 20) as u8, 5, 5]));
    let s = screener().screen(&png(&dark)).unwrap();
    let codes: Vec<&str> = s.quality.iter().map(|q| q.code()).collect();
    assert!(codes.contains(&"too_dark"), "{codes:?}");
}

#[test]
fn heatmap_and_cam_agree_with_logits() {
    let options = ScreenerOptions {
        heatmap: true,
        ..Default::default()
    };
    let s = Screener::from_bytes(model_bytes(), options).unwrap();
    let result = s.screen(&png(&photo(7, true, 160))).unwrap();
    let h = result.heatmap.expect("heatmap requested");
    assert_eq!((h.width, h.height), (SIZE, SIZE));
    assert_eq!(h.values.len(), (SIZE * SIZE) as usize);
    assert!(h.values.iter().all(|v| (0.0..=1.0).contains(v)));
    // The class activation maps average to the logits (the head is linear).
    let pre = &s.info().meta.preprocessing;
    let raw = s.infer(&pre.tensor(&photo(7, true, 160))).unwrap();
    let plane = raw.cam_size.0 * raw.cam_size.1;
    for (c, logit) in raw.logits.iter().enumerate() {
        let mean: f32 = raw.cam[c * plane..(c + 1) * plane].iter().sum::<f32>() / plane as f32;
        assert!(
            (mean - logit).abs() < 1e-3 * (1.0 + logit.abs()),
            "{mean} vs {logit}"
        );
    }
}

#[test]
fn screening_from_four_threads_is_identical() {
    let screener =
        Arc::new(Screener::from_bytes(model_bytes(), ScreenerOptions::default()).unwrap());
    let photos: Vec<Vec<u8>> = (0..6)
        .map(|i| png(&photo(100 + i, i % 2 == 0, 128)))
        .collect();
    let serial: Vec<Vec<f32>> = photos
        .iter()
        .map(|p| screener.screen(p).unwrap().logits)
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (s, photos) = (Arc::clone(&screener), photos.clone());
            std::thread::spawn(move || {
                photos
                    .iter()
                    .map(|p| s.screen(p).unwrap().logits)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), serial);
    }
}

// ---- model files ----

fn proto() -> pb::ModelProto {
    pb::ModelProto::decode(model_bytes()).unwrap()
}

fn load(p: &pb::ModelProto) -> mpox_sdk::Result<Screener> {
    Screener::from_bytes(&p.encode_to_vec(), ScreenerOptions::default())
}

#[test]
fn truncated_onnx() {
    let bytes = model_bytes();
    for cut in [bytes.len() / 2, bytes.len() - 7, 10] {
        let r = Screener::from_bytes(&bytes[..cut], ScreenerOptions::default());
        assert!(
            matches!(r, Err(Error::ModelDecode { .. })),
            "cut {cut}: {r:?}"
        );
    }
    assert!(matches!(
        Screener::from_bytes(&[], ScreenerOptions::default()),
        Err(Error::ModelDecode { .. })
    ));
}

#[test]
fn a_photo_is_not_a_model() {
    let r = Screener::from_bytes(&png(&photo(8, true, 64)), ScreenerOptions::default());
    assert!(matches!(r, Err(Error::ModelDecode { .. })), "{r:?}");
}

#[test]
fn onnx_without_metadata() {
    let mut p = proto();
    p.metadata_props.clear();
    match load(&p) {
        Err(Error::ModelMetadata { key, reason }) => {
            assert_eq!(key, "mpoxscreen.format");
            assert_eq!(reason, "missing");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_format_version() {
    let mut p = proto();
    p.metadata_props
        .iter_mut()
        .find(|e| e.key == "mpoxscreen.format")
        .unwrap()
        .value = "99".into();
    assert!(matches!(
        load(&p),
        Err(Error::ModelVersion { supported: 1, .. })
    ));
}

#[test]
fn wrong_input_shape() {
    use pb::tensor_shape_proto::dimension::Value;
    let mut p = proto();
    let input = &mut p.graph.as_mut().unwrap().input[0];
    let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut()
    else {
        panic!("input is a tensor");
    };
    t.shape.as_mut().unwrap().dim[1].value = Some(Value::DimValue(1));
    assert!(matches!(load(&p), Err(Error::ModelContract { .. })));

    // The graph says 96 px but the metadata claims 128.
    let mut p = proto();
    for e in &mut p.metadata_props {
        match e.key.as_str() {
            "input_size" => e.value = "128".into(),
            "resize" => e.value = "146".into(),
            _ => {}
        }
    }
    assert!(matches!(load(&p), Err(Error::ModelContract { .. })));
}

#[test]
fn missing_cam_output_or_renamed_input() {
    let mut p = proto();
    p.graph.as_mut().unwrap().output.retain(|o| o.name != "cam");
    assert!(matches!(load(&p), Err(Error::ModelContract { .. })));
    let mut p = proto();
    p.graph.as_mut().unwrap().input[0].name = "pixels".into();
    assert!(matches!(load(&p), Err(Error::ModelContract { .. })));
}

#[test]
fn metadata_disagreeing_with_the_graph() {
    // Three labels for a two-class network.
    let mut p = proto();
    p.metadata_props
        .iter_mut()
        .find(|e| e.key == "labels")
        .unwrap()
        .value = r#"["a","b","mpox"]"#.into();
    for e in &mut p.metadata_props {
        if e.key == "positive_label" {
            e.value = "mpox".into();
        }
    }
    assert!(matches!(load(&p), Err(Error::ModelContract { .. })));
}

#[test]
fn checksum_is_verified() {
    let bytes = model_bytes();
    let good = {
        use sha2::Digest;
        mpox_sdk::hex(&sha2::Sha256::digest(bytes))
    };
    let ok = Screener::from_bytes(
        bytes,
        ScreenerOptions {
            expected_sha256: Some(good.to_uppercase()),
            ..Default::default()
        },
    );
    assert!(ok.is_ok());
    assert_eq!(ok.unwrap().info().sha256, good);
    let bad = Screener::from_bytes(
        bytes,
        ScreenerOptions {
            expected_sha256: Some("00".repeat(32)),
            ..Default::default()
        },
    );
    assert!(matches!(bad, Err(Error::ModelChecksum { .. })));
}

#[test]
fn missing_model_file() {
    let r = Screener::from_path("/nonexistent/model.onnx", ScreenerOptions::default());
    assert!(matches!(r, Err(Error::Io { .. })));
}

/// Seeded random corruption of photos and of the model file: errors are fine, panics are not.
#[test]
fn corrupted_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(42);
    let seeds = [
        png(&photo(9, true, 96)),
        jpeg(&photo(10, false, 96), 80),
        encode(
            &DynamicImage::ImageRgb8(photo(11, true, 64)),
            ImageFormat::WebP,
        ),
        encode(
            &DynamicImage::ImageRgb8(photo(12, true, 64)),
            ImageFormat::Bmp,
        ),
    ];
    let mut outcomes = [0usize; 2];
    for i in 0..400 {
        let mut bytes = seeds[i % seeds.len()].clone();
        mutate(&mut bytes, &mut rng);
        let r = std::panic::catch_unwind(|| screener().screen(&bytes));
        let r = r.unwrap_or_else(|_| panic!("panic on mutation {i}"));
        outcomes[usize::from(r.is_ok())] += 1;
    }
    assert!(
        outcomes[0] > 0,
        "no mutation was rejected: the corruption is too weak"
    );
    let model = model_bytes();
    for i in 0..40 {
        let mut bytes = model.to_vec();
        mutate(&mut bytes, &mut rng);
        let r =
            std::panic::catch_unwind(|| Screener::from_bytes(&bytes, ScreenerOptions::default()));
        assert!(r.is_ok(), "panic on model mutation {i}");
    }
}

fn mutate(bytes: &mut Vec<u8>, rng: &mut StdRng) {
    match rng.random_range(0..4) {
        0 => {
            let cut = rng.random_range(0..bytes.len());
            bytes.truncate(cut);
        }
        1 => {
            for _ in 0..rng.random_range(1..20) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            // Overwrite a run with 0xFF, a favourite of header-length fields.
            let i = rng.random_range(0..bytes.len());
            let n = rng.random_range(1..8).min(bytes.len() - i);
            bytes[i..i + n].fill(0xFF);
        }
        _ => {
            let i = rng.random_range(0..bytes.len());
            let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            bytes.splice(i..i, junk);
        }
    }
}
