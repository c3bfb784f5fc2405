//! Generated inputs for the fuzz targets: the fixture model the screening targets load and the
//! seed corpora (photos in every decoded format, raw frames, model files, metadata), all made by
//! the project's own code so that nothing is taken from outside the repository.

use std::path::Path;

use image::{DynamicImage, ImageFormat, RgbImage};
use mpox_sdk::contract::{ModelMeta, INPUT_NAME};
use mpox_sdk::Preprocessing;
use mpox_trainer::onnx::{finish_with_heads, GraphBuilder, IR_VERSION};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fuzzing::{props_to_bytes, rgba_input, RGBA_FIT, SIGNER_SECRET};
use crate::{encode, jpeg, photo, tiny_model, with_exif_orientation};

/// Side of the fixture model's input: the smallest photo the SDK accepts (32 px) needs no upscaling.
pub const FIXTURE_INPUT_SIZE: u32 = 32;

/// Channels of the micro model's feature map.
const FEATURES: usize = 8;

/// The metadata of a micro model, with a fixed creation time so that its bytes are reproducible.
fn micro_meta(input_size: u32, classes: usize, views: u32) -> ModelMeta {
    let labels: Vec<String> = match classes {
        2 => vec!["not_mpox".into(), "mpox".into()],
        n => (0..n - 1)
            .map(|i| format!("class{i}"))
            .chain(["mpox".to_string()])
            .collect(),
    };
    ModelMeta {
        positive_label: "mpox".into(),
        labels,
        preprocessing: Preprocessing::imagenet(input_size),
        temperature: 1.5,
        threshold: 0.5,
        uncertain_band: [0.4, 0.6],
        recommended_views: views,
        arch: "fuzz_micro".into(),
        trainer_version: "0.0.0".into(),
        dataset_fingerprint: "random-init".into(),
        metrics: serde_json::json!({"auc": 0.5}),
        created: "2026-01-01T00:00:00Z".into(),
    }
}

/// A contract-conforming model of a few kilobytes: strided conv, ReLU6, depthwise conv, ReLU, a
/// residual add and a max-pool to an `S/8` feature map, then the trainer's logits and CAM heads.
///
/// MobileNetV2 is 1.6 MB even at width 0.35, too big for a fuzzer to mutate and too slow to load
/// a million times; this one loads in about a millisecond yet uses the exporter's operators.
pub fn micro_model(input_size: u32, classes: usize, views: u32) -> Vec<u8> {
    assert!(
        input_size.is_multiple_of(8),
        "the micro model downsamples by 8"
    );
    let meta = micro_meta(input_size, classes, views);
    let mut rng = StdRng::seed_from_u64(u64::from(input_size) * 31 + classes as u64);
    let mut weights =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.5..0.5)).collect() };
    let mut g = GraphBuilder::default();
    let stem = g.conv(
        INPUT_NAME,
        (&[FEATURES, 3, 4, 4], &weights(FEATURES * 3 * 16)),
        &weights(FEATURES),
        4,
        0,
        1,
    );
    let stem = g.relu6(&stem);
    let depthwise = g.conv(
        &stem,
        (&[FEATURES, 1, 3, 3], &weights(FEATURES * 9)),
        &weights(FEATURES),
        1,
        1,
        FEATURES,
    );
    let depthwise = g.relu(&depthwise);
    let sum = g.add(&stem, &depthwise);
    let features = g.max_pool(&sum, 2, 2, 0);
    let (head_w, head_b) = (weights(classes * FEATURES), weights(classes));
    let side = input_size as usize / 8;
    let model = finish_with_heads(g, &features, (&head_w, &head_b), side, &meta, "0.0.0");
    debug_assert_eq!(model.ir_version, IR_VERSION);
    model.encode_to_vec()
}

/// The model the `screen` and `screen_rgba` targets load: two labels, 32 px, one view.
pub fn fixture_model() -> Vec<u8> {
    micro_model(FIXTURE_INPUT_SIZE, 2, 1)
}

/// Named inputs of one target.
type Named = Vec<(String, Vec<u8>)>;

/// One seed input: the target it feeds, a file name, the bytes.
pub struct Seed {
    /// One of [`crate::fuzzing::TARGETS`].
    pub target: &'static str,
    /// File name inside the target's seed folder.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// Encoded photos for `screen`: each format and colour type at a few sizes (the smallest the SDK
/// accepts, non-square, below the minimum), EXIF-rotated, and truncated copies.
fn image_seeds() -> Named {
    let mut out = Vec::new();
    for (i, (w, h)) in [(32, 32), (48, 36), (40, 64), (16, 16)]
        .into_iter()
        .enumerate()
    {
        let side = w.max(h);
        let full = photo(i as u64, i % 2 == 0, side);
        let img: RgbImage = image::imageops::crop_imm(&full, 0, 0, w, h).to_image();
        let rgb = DynamicImage::ImageRgb8(img.clone());
        let variants: Vec<(&str, Vec<u8>)> = vec![
            ("png", encode(&rgb, ImageFormat::Png)),
            (
                "gray.png",
                encode(&DynamicImage::ImageLuma8(rgb.to_luma8()), ImageFormat::Png),
            ),
            (
                "rgba.png",
                encode(&DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Png),
            ),
            (
                "16bit.png",
                encode(&DynamicImage::ImageRgb16(rgb.to_rgb16()), ImageFormat::Png),
            ),
            ("q90.jpg", jpeg(&img, 90)),
            ("q30.jpg", jpeg(&img, 30)),
            ("exif6.jpg", with_exif_orientation(&jpeg(&img, 60), 6)),
            ("webp", encode(&rgb, ImageFormat::WebP)),
            ("bmp", encode(&rgb, ImageFormat::Bmp)),
        ];
        for (kind, bytes) in variants {
            if i == 0 {
                for (cut, part) in [("half", bytes.len() / 2), ("most", bytes.len() * 9 / 10)] {
                    out.push((format!("{w}x{h}-{cut}.{kind}"), bytes[..part].to_vec()));
                }
            }
            out.push((format!("{w}x{h}.{kind}"), bytes));
        }
    }
    out
}

/// Frames for `screen_rgba`: exact, fitted, mismatched and oversized headers.
fn rgba_seeds() -> Named {
    let pixels = |w: u32, h: u32, seed: u64| -> Vec<u8> {
        let img = photo(seed, seed.is_multiple_of(2), w.max(h));
        let img = image::imageops::crop_imm(&img, 0, 0, w, h).to_image();
        DynamicImage::ImageRgb8(img).to_rgba8().into_raw()
    };
    vec![
        (
            "32x32-exact".into(),
            rgba_input(32, 32, 0, &pixels(32, 32, 1)),
        ),
        (
            "40x33-exact".into(),
            rgba_input(40, 33, 0, &pixels(40, 33, 2)),
        ),
        (
            "64x48-fit".into(),
            rgba_input(64, 48, RGBA_FIT, &pixels(16, 16, 3)),
        ),
        (
            "33x200-fit".into(),
            rgba_input(33, 200, RGBA_FIT, &[10, 200, 30, 255, 90]),
        ),
        (
            "32x32-short".into(),
            rgba_input(32, 32, 0, &pixels(16, 16, 4)),
        ),
        ("8x8-exact".into(), rgba_input(8, 8, 0, &[128; 8 * 8 * 4])),
        ("0x0".into(), rgba_input(0, 0, RGBA_FIT, &[1, 2, 3, 4])),
        (
            "huge-fit".into(),
            rgba_input(u16::MAX, u16::MAX, RGBA_FIT, &[1; 64]),
        ),
    ]
}

/// Model files for `from_bytes`: micro models of other shapes, label counts and view counts, and
/// cut or altered copies of the fixture.
fn model_seeds() -> Named {
    let fixture = fixture_model();
    let mut renamed = fixture.clone();
    // The same length, so the protobuf still parses and only the contract check fails.
    if let Some(at) = renamed.windows(6).position(|w| w == b"logits") {
        renamed[at..at + 6].copy_from_slice(b"lagits");
    }
    vec![
        ("micro32-2labels.onnx".into(), fixture.clone()),
        ("micro16-3labels-4views.onnx".into(), micro_model(16, 3, 4)),
        ("micro48-2labels-8views.onnx".into(), micro_model(48, 2, 8)),
        (
            "micro32-half.onnx".into(),
            fixture[..fixture.len() / 2].to_vec(),
        ),
        ("micro32-renamed-output.onnx".into(), renamed),
    ]
}

/// Model files for `signed_model`: micro models signed by the trusted test key, and the ways a
/// signed file goes wrong (unsigned, signed by another key, a weight or the signature altered
/// after signing, a signature that is not hex, cut short).
fn signed_seeds() -> Named {
    let sign = |model: &[u8], secret: &[u8; 32]| {
        mpox_sdk::signature::sign_model(model, secret).expect("micro models decode")
    };
    let fixture = fixture_model();
    let signed = sign(&fixture, &SIGNER_SECRET);
    let stranger = sign(&fixture, &[7; 32]);
    // The last float of the weights sits well before the metadata at the end of the file.
    let mut weight = signed.clone();
    let at = weight.len() / 2;
    weight[at] ^= 0x01;
    let signature_at = |bytes: &[u8]| {
        let key = mpox_sdk::signature::SIGNATURE_KEY.as_bytes();
        let at = bytes
            .windows(key.len())
            .position(|w| w == key)
            .expect("a signed model names its signature");
        // The value follows the key's bytes after a tag and a length byte or two.
        at + key.len() + 3
    };
    let mut flipped = signed.clone();
    let i = signature_at(&flipped);
    flipped[i] = if flipped[i] == b'0' { b'1' } else { b'0' };
    let mut not_hex = signed.clone();
    let i = signature_at(&not_hex);
    not_hex[i] = b'z';
    vec![
        ("micro32-signed.onnx".into(), signed.clone()),
        (
            "micro16-3labels-signed.onnx".into(),
            sign(&micro_model(16, 3, 4), &SIGNER_SECRET),
        ),
        ("micro32-unsigned.onnx".into(), fixture),
        ("micro32-stranger.onnx".into(), stranger),
        ("micro32-signed-weight-altered.onnx".into(), weight),
        ("micro32-signature-flipped.onnx".into(), flipped),
        ("micro32-signature-not-hex.onnx".into(), not_hex),
        (
            "micro32-signed-half.onnx".into(),
            signed[..signed.len() / 2].to_vec(),
        ),
    ]
}

/// `key=value` metadata for `metadata`: a micro model's, another with more labels and figures,
/// and one with a key missing.
fn metadata_seeds() -> Named {
    let mut rich = micro_meta(224, 4, 8);
    rich.metrics = serde_json::json!({"auc": 0.93, "test": {"sensitivity": 0.9, "n": 412}});
    rich.temperature = 1.234_567_9;
    let plain = micro_meta(FIXTURE_INPUT_SIZE, 2, 1).to_props();
    let missing: Vec<_> = plain.iter().filter(|(k, _)| k != "std").cloned().collect();
    vec![
        ("micro32.props".into(), props_to_bytes(&plain)),
        ("rich.props".into(), props_to_bytes(&rich.to_props())),
        ("missing-std.props".into(), props_to_bytes(&missing)),
    ]
}

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let groups: [(&'static str, Named); 5] = [
        ("screen", image_seeds()),
        ("screen_rgba", rgba_seeds()),
        ("from_bytes", model_seeds()),
        ("metadata", metadata_seeds()),
        ("signed_model", signed_seeds()),
    ];
    groups
        .into_iter()
        .flat_map(|(target, list)| {
            list.into_iter().map(move |(name, bytes)| Seed {
                target,
                name,
                bytes,
            })
        })
        .collect()
}

/// Writes `fixtures/model.onnx` (the fixture), `fixtures/mobilenet.onnx` (a tiny MobileNetV2 for
/// slower, more realistic runs via `MPOX_FUZZ_MODEL`) and `seeds/<target>/` under `fuzz_dir`.
pub fn write_all(fuzz_dir: &Path) -> std::io::Result<usize> {
    let fixtures = fuzz_dir.join("fixtures");
    std::fs::create_dir_all(&fixtures)?;
    std::fs::write(fixtures.join("model.onnx"), fixture_model())?;
    std::fs::write(
        fixtures.join("mobilenet.onnx"),
        tiny_model(FIXTURE_INPUT_SIZE),
    )?;
    let seeds = seeds();
    for seed in &seeds {
        let dir = fuzz_dir.join("seeds").join(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&seed.name), &seed.bytes)?;
    }
    Ok(seeds.len())
}
