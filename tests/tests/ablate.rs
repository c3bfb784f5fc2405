//! The training-data ablation end to end on a tiny set: its arms, its GAN's photos, and what a
//! rerun keeps or does again after an interruption or a change of sampling.

use std::path::Path;
use std::time::SystemTime;

use candle_core::Device;
use mpox_e2e::temp_dir;
use mpox_trainer::ablate::{ablate, AblateConfig, AblationSummary};
use mpox_trainer::gan::sample::{read_manifest, Sampling};
use mpox_trainer::gan::train::GanConfig;
use mpox_trainer::models::Arch;
use mpox_trainer::train::{FitConfig, Recipe};

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// The summary without its timings, which are the one thing a rerun may change.
fn results(summary: &AblationSummary) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("seconds");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(summary).unwrap();
    strip(&mut v);
    v
}

#[test]
fn ablation_resumes_and_redraws_only_what_changed() {
    let dir = temp_dir("ablate-resume");
    let data = dir.join("data");
    mpox_trainer::synthetic::write_dataset(&data, 18, 64, 5).unwrap();
    // Random feature weights: the projected discriminator, the selection and the evaluation
    // only need the shape.
    let features = mpox_e2e::random_feature_weights(&dir.join("features.safetensors"), 3);
    let mut gan = GanConfig::projected(4);
    gan.batch_size = 4;
    gan.every = 2;
    gan.features = Some(features.clone());
    let mut fit = FitConfig::with_recipe(Arch::MobileNetV2 { width: 0.35 }, None, Recipe::Probe);
    fit.input_size = 64;
    fit.probe_views = 2;
    fit.min_calibration_photos = 1;
    let config = AblateConfig {
        data: data.clone(),
        positive: "mpox".into(),
        folds: 3,
        split_seed: 1,
        fit,
        gan,
        sampling: Sampling {
            latent_scale: 1.25,
            select_from: 2,
        },
        synthetic_ratios: vec![0.5, 1.0],
        feature_weights: Some(features),
        only_folds: vec![0],
        negatives: vec![],
        external: None,
    };
    let out = dir.join("ablate");
    let first = ablate(&config, &out, &Device::Cpu).unwrap();
    let names: Vec<&str> = first.arms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "real only",
            "real + augmentation",
            "real + augmentation + GAN ×0.5",
            "real + augmentation + GAN ×1"
        ]
    );
    assert!(first.arms.iter().all(|(_, s)| s.folds == [0]));
    assert_eq!(first.gan_eval.len(), 1);
    assert_eq!(first.gan_eval[0]["fold"], 0);
    assert!(first.gan_eval[0]["recall"].is_number());
    // Each GAN arm against the augmentation arm, on the test set: four metrics each.
    assert_eq!(first.paired.len(), 2 * 4);
    for file in ["ablation.json", "ablation.md", "ablation.png", "split.json"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let samples = out.join("gan/fold-0/samples");
    let drawn = read_manifest(&samples).unwrap();
    // Sampled once, for the largest ratio: as many photos as the fold's mpox training photos.
    let gan_photos =
        mpox_trainer::gan::train::gan_data(&data, "mpox", Some((&out.join("split.json"), 0)))
            .unwrap()
            .photos;
    assert_eq!(drawn.files.len(), gan_photos.len());
    assert_eq!(drawn.select_from, 2);

    let checkpoint = out.join("gan/fold-0/gan.safetensors");
    let model = |arm: &str| out.join(arm).join("fold-0/eval/eval.json");
    let arms = ["real", "augment", "gan-arm-0.5", "gan-arm-1"];
    let before: Vec<SystemTime> = arms.iter().map(|a| modified(&model(a))).collect();
    let gan_before = modified(&checkpoint);

    // A rerun trains nothing again and reports the same.
    let again = ablate(&config, &out, &Device::Cpu).unwrap();
    let now: Vec<SystemTime> = arms.iter().map(|a| modified(&model(a))).collect();
    assert_eq!((now, modified(&checkpoint)), (before.clone(), gan_before));
    assert_eq!(results(&again), results(&first));

    // Killed while sampling and while the x1 arm trained: the photos are drawn again, that arm
    // trains again, and the ablation reads as if nothing had happened.
    std::fs::remove_dir_all(&samples).unwrap();
    std::fs::remove_dir_all(out.join("gan-arm-1/fold-0")).unwrap();
    let resumed = ablate(&config, &out, &Device::Cpu).unwrap();
    assert_eq!(modified(&checkpoint), gan_before);
    assert_eq!(read_manifest(&samples).unwrap().files, drawn.files);
    assert_eq!(results(&resumed), results(&first));
    assert_eq!(modified(&model("real")), before[0]);
    assert_ne!(modified(&model("gan-arm-1")), before[3]);

    // Another selection: the same generator's photos are drawn again and only the GAN arms train
    // again.
    let before: Vec<SystemTime> = arms.iter().map(|a| modified(&model(a))).collect();
    let mut wider = config.clone();
    wider.sampling.select_from = 3;
    ablate(&wider, &out, &Device::Cpu).unwrap();
    assert_eq!(modified(&checkpoint), gan_before);
    assert_eq!(read_manifest(&samples).unwrap().select_from, 3);
    let now: Vec<SystemTime> = arms.iter().map(|a| modified(&model(a))).collect();
    assert_eq!(now[..2], before[..2]);
    assert!(now[2..].iter().zip(&before[2..]).all(|(n, b)| n != b));
}
