//! Fixtures shared by the end-to-end tests and benchmarks: generated models, photos and encodings.
//! Nothing here reads the real dataset; `shared()` finds the shared data folder (`$MPOX_SHARED`)
//! for the reference tests only.

pub mod fuzz_seeds;
pub mod fuzzing;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageFormat, RgbImage};
use mpox_trainer::models::{Arch, Network};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The read-only shared data folder (weights, PyTorch references, data): `$MPOX_SHARED`, else
/// a folder named `shared` beside the workspace. `None` (with a note on stderr) when absent,
/// unless `MPOX_REQUIRE_SHARED=1`, which turns its absence into a failure.
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("MPOX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared"));
    if dir.join("reference").is_dir() {
        return Some(dir);
    }
    if std::env::var("MPOX_REQUIRE_SHARED").as_deref() == Ok("1") {
        panic!(
            "MPOX_REQUIRE_SHARED=1 but {} has no reference/ folder",
            dir.display()
        );
    }
    eprintln!("note: {} not found; reference test skipped", dir.display());
    None
}

/// The ImageNet MobileNetV2 features in the shared folder: `weights/` holds them as safetensors,
/// `reference/` the same tensors as a PyTorch checkpoint; some copies of the folder carry only
/// the second, which the trainer reads as well.
pub fn imagenet_features(shared: &Path) -> PathBuf {
    let safetensors = shared.join("weights/mobilenet_v2_imagenet_features.safetensors");
    if safetensors.is_file() {
        safetensors
    } else {
        shared.join("reference/mobilenet_v2_imagenet_features.pth")
    }
}

/// Seeded random MobileNetV2-1.0 weights with torchvision's names, written to `path`: for what
/// needs ImageNet-shaped features (the projected GAN, the GAN evaluation) in tests that must not
/// depend on the real weights.
pub fn random_feature_weights(path: &Path, seed: u64) -> PathBuf {
    Network::new(Arch::MobileNetV2 { width: 1.0 }, 2, seed, &Device::Cpu)
        .unwrap()
        .save(path)
        .unwrap();
    path.to_path_buf()
}

/// A fresh temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpox-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Randomises every BatchNorm's statistics and affine parameters so that a folding mistake shows.
pub fn perturb_batchnorm(net: &Network, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = net.varmap().data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        if var.rank() != 1 || name.ends_with("fc.bias") || name.ends_with("classifier.1.bias") {
            continue;
        }
        let n = var.elem_count();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                if name.ends_with("running_var") {
                    rng.random_range(0.5..2.0)
                } else if name.ends_with("weight") {
                    rng.random_range(0.5..1.5)
                } else {
                    rng.random_range(-0.3..0.3)
                }
            })
            .collect();
        var.set(&Tensor::from_vec(values, n, &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// A network with seeded random weights, BatchNorm perturbed, a head scaled up so logits are O(1).
pub fn random_network(arch: Arch, classes: usize, seed: u64) -> Network {
    let net = Network::new(arch, classes, seed, &Device::Cpu).unwrap();
    perturb_batchnorm(&net, seed + 1);
    let name = format!("{}.weight", arch.head_prefix());
    let var = net.varmap().data().lock().unwrap()[&name].clone();
    var.set(&(var.as_tensor() * 30.0).unwrap()).unwrap();
    net
}

/// The exported ONNX bytes of `net`, with untrained metadata for `input_size`.
pub fn export(net: &Network, input_size: u32) -> Vec<u8> {
    let labels = if net.num_classes() == 2 {
        vec!["not_mpox".to_string(), "mpox".to_string()]
    } else {
        (0..net.num_classes())
            .map(|i| format!("class{i}"))
            .collect()
    };
    let meta = mpox_trainer::untrained_meta(net.arch(), labels, input_size);
    mpox_trainer::onnx::to_bytes(net, &meta).unwrap()
}

/// A small random MobileNetV2 (width 0.35) model file for `input_size`, for SDK tests.
pub fn tiny_model(input_size: u32) -> Vec<u8> {
    let net = random_network(Arch::MobileNetV2 { width: 0.35 }, 2, 11);
    export(&net, input_size)
}

/// A synthetic skin photo.
pub fn photo(seed: u64, positive: bool, size: u32) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    mpox_trainer::synthetic::photo(&mut rng, positive, size)
}

/// Encodes an image in a format (PNG keeps its colour type and bit depth).
pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A JPEG at quality `q`.
pub fn jpeg(img: &RgbImage, q: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
        .encode_image(img)
        .unwrap();
    out
}

/// A size field of this process's `/proc/self/status` (`VmRSS`, `VmHWM`, …) in MiB; NaN where
/// there is none (not Linux).
pub fn proc_status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Inserts an EXIF APP1 segment with one Orientation entry right after the JPEG's SOI marker.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&[0, 1]); // one IFD entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, next IFD = 0
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend(tiff);
    let len = (payload.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Largest absolute element-wise difference of two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensor arithmetic")
}

/// Asserts that two safetensors files hold the same tensors, bit for bit.
pub fn assert_identical_safetensors(a: &Path, b: &Path) {
    let load =
        |p: &Path| candle_core::safetensors::load(p, &Device::Cpu).expect("readable safetensors");
    let (ta, tb) = (load(a), load(b));
    assert_eq!(ta.len(), tb.len(), "different tensor counts");
    for (name, t) in &ta {
        let other = tb
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {}", b.display()));
        assert_eq!(max_abs_diff(t, other), 0.0, "{name} differs");
    }
}

/// The two networks the SDK benchmarks measure, exported at 224 px under `target/bench-models/`:
/// MobileNetV2-1.0 (with the ImageNet weights of the shared data folder when present; timing does
/// not depend on the weight values, so random weights measure the same elsewhere) and ResNet-18
/// with random weights. Returns (label, path) pairs.
pub fn bench_models() -> Vec<(String, PathBuf)> {
    let dir = workspace_root().join("target").join("bench-models");
    std::fs::create_dir_all(&dir).expect("create target/bench-models");
    let mobilenet = Arch::MobileNetV2 { width: 1.0 };
    let (net, label) = match shared() {
        Some(shared) => {
            let net = Network::new(mobilenet, 2, 1, &Device::Cpu).expect("MobileNetV2");
            net.load_weights(&imagenet_features(&shared))
                .expect("ImageNet weights");
            (net, "MobileNetV2-1.0 (ImageNet weights)")
        }
        None => (
            random_network(mobilenet, 2, 1),
            "MobileNetV2-1.0 (random weights)",
        ),
    };
    let mut models = Vec::new();
    for (label, net, file) in [
        (label, net, "mobilenet_v2.onnx"),
        (
            "ResNet-18 (random weights)",
            random_network(Arch::ResNet18, 2, 2),
            "resnet18.onnx",
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, export(&net, 224)).expect("write a bench model");
        models.push((label.to_string(), path));
    }
    models
}

/// A phone camera's 12-megapixel photo (4000 × 3000, upscaled from a synthetic one) as a camera
/// app stores it: JPEG quality 85 with an EXIF orientation of 6 (turn 90° to view upright).
pub fn camera_jpeg() -> Vec<u8> {
    let big = image::imageops::resize(
        &photo(42, true, 500),
        4000,
        3000,
        image::imageops::FilterType::Triangle,
    );
    with_exif_orientation(&jpeg(&big, 85), 6)
}
