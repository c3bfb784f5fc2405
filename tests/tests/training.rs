//! Training end to end on generated photos: it learns, it resumes exactly, and the exported
//! model screens through the SDK with the calibration the trainer chose.

use std::path::Path;

use candle_core::Device;
use mpox_e2e::{assert_identical_safetensors, temp_dir};
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::Arch;
use mpox_trainer::train::data::DataSource;
use mpox_trainer::train::{files, fit, FitConfig, RunOptions};

fn source(data: &Path) -> DataSource {
    DataSource {
        root: data.to_path_buf(),
        split: None,
        positive: None,
        seed: 7,
        synthetic: None,
        synthetic_ratio: 0.0,
        negatives: vec![],
        external: None,
    }
}

fn tiny_config(epochs: usize) -> FitConfig {
    let mut c = FitConfig::new(Arch::MobileNetV2 { width: 0.35 }, None);
    c.input_size = 64;
    c.epochs = epochs;
    c.patience = epochs;
    c.seed = 3;
    // Toy data sets: a handful of validation photos, warned about but not refused.
    c.min_calibration_photos = 1;
    c
}

#[test]
fn a_tiny_run_learns_well_above_chance_and_exports_a_calibrated_model() {
    let dir = temp_dir("fit-learns");
    let data = dir.join("data");
    mpox_trainer::synthetic::write_dataset(&data, 60, 96, 5).unwrap();
    let out = dir.join("run");
    let outcome = fit(
        &tiny_config(6),
        &source(&data),
        &out,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap();
    let card = outcome.card.expect("finished");
    let val = &card.metrics["validation"];
    let (acc, auc) = (
        val["accuracy"].as_f64().unwrap(),
        val["auc"].as_f64().unwrap(),
    );
    eprintln!("validation accuracy {acc:.3}, AUC {auc:.3}");
    assert!(acc >= 0.8 && auc >= 0.9, "accuracy {acc}, AUC {auc}");
    for f in [
        files::BEST,
        files::CARD,
        files::MODEL,
        files::HISTORY,
        files::CURVES,
        files::LAST,
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The exported file carries the calibration, and the SDK applies it.
    let screener = Screener::from_path(out.join(files::MODEL), ScreenerOptions::default()).unwrap();
    let meta = &screener.info().meta;
    assert_eq!(meta.temperature, card.temperature);
    assert_eq!(meta.threshold, card.threshold);
    assert!(meta.uncertain_band[0] <= meta.threshold && meta.threshold <= meta.uncertain_band[1]);
    assert_ne!(meta.dataset_fingerprint, "untrained");
    // Fresh photos of each class are mostly screened right.
    let mut correct = 0;
    for i in 0..20u64 {
        let positive = i % 2 == 0;
        let img = mpox_e2e::photo(1000 + i, positive, 96);
        let s = screener.screen_image(&img).unwrap();
        if (s.probability_mpox >= meta.threshold) == positive {
            correct += 1;
        }
    }
    assert!(correct >= 15, "{correct}/20 fresh photos right");
}

#[test]
fn an_interrupted_run_resumes_to_the_same_state() {
    let dir = temp_dir("fit-resume");
    let data = dir.join("data");
    mpox_trainer::synthetic::write_dataset(&data, 20, 80, 6).unwrap();
    // Both phases: the probe solved on cached features, then fine-tuning.
    let mut config = tiny_config(2);
    config.probe = true;
    config.probe_views = 2;
    config.unfreeze = mpox_trainer::train::Unfreeze::Last(4);
    let straight = dir.join("straight");
    let a = fit(
        &config,
        &source(&data),
        &straight,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap();

    let resumed = dir.join("resumed");
    let stop = RunOptions {
        stop_after: Some(2),
        ..Default::default()
    };
    let partial = fit(&config, &source(&data), &resumed, &Device::Cpu, &stop).unwrap();
    assert!(partial.card.is_none());
    assert_eq!(partial.history.len(), 2);
    // Without --resume an existing run is refused rather than overwritten.
    assert!(fit(
        &config,
        &source(&data),
        &resumed,
        &Device::Cpu,
        &RunOptions::default()
    )
    .is_err());
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let b = fit(&config, &source(&data), &resumed, &Device::Cpu, &resume).unwrap();
    // Everything but the wall-clock throughput must match.
    let strip = |h: &[mpox_trainer::train::EpochRecord]| -> Vec<_> {
        h.iter()
            .map(|r| mpox_trainer::train::EpochRecord {
                images_per_second: 0.0,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(
        strip(&a.history),
        strip(&b.history),
        "per-epoch figures differ"
    );
    assert_identical_safetensors(&straight.join(files::LAST), &resumed.join(files::LAST));
    // Resuming with other settings is refused.
    let mut other = config.clone();
    other.lr = 5e-4;
    let err = fit(&other, &source(&data), &resumed, &Device::Cpu, &resume).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}

#[test]
fn a_finished_crossval_fold_is_read_back_not_retrained() {
    use mpox_trainer::crossval::{crossval, CrossvalConfig};
    let dir = temp_dir("crossval-resume");
    let data = dir.join("data");
    mpox_trainer::synthetic::write_dataset(&data, 30, 64, 11).unwrap();
    let mut config = CrossvalConfig {
        data: data.clone(),
        split: None,
        folds: 3,
        split_seed: 0,
        positive: Some("mpox".into()),
        fit: tiny_config(1),
        synthetic: None,
        synthetic_ratio: 0.0,
        only_folds: vec![0],
        negatives: vec![],
        external: None,
    };
    let out = dir.join("cv");
    let first = crossval(&config, &out, &Device::Cpu, false).unwrap();
    assert_eq!(first.folds, vec![0]);
    // The saved report (its ROC starts at threshold +∞, written as null) must read back as it was.
    let model = out.join("fold-0").join(files::MODEL);
    let written = std::fs::metadata(&model).unwrap().modified().unwrap();
    let again = crossval(&config, &out, &Device::Cpu, false).unwrap();
    assert_eq!(
        std::fs::metadata(&model).unwrap().modified().unwrap(),
        written
    );
    // NaN (std of one fold) compares unequal to itself; compare as JSON.
    let json = |v: &Vec<(String, f64, f64)>| serde_json::to_string(v).unwrap();
    assert_eq!(json(&first.mean_std), json(&again.mean_std));
    assert_eq!(first.per_fold, again.per_fold);
    // A fold the split does not have is refused by name.
    config.only_folds = vec![3];
    let err = crossval(&config, &out, &Device::Cpu, false).unwrap_err();
    assert!(err.to_string().contains("fold 3"), "{err}");
}

#[test]
fn too_few_photos_for_an_operating_point_are_refused_before_training_and_few_are_flagged() {
    let dir = temp_dir("fit-few");
    let data = dir.join("data");
    // 12 photos per class: the validation fold holds 2 or 3 of each.
    mpox_trainer::synthetic::write_dataset(&data, 12, 64, 4).unwrap();
    let out = dir.join("run");
    let mut config = tiny_config(1);
    config.min_calibration_photos = mpox_trainer::calibration::MIN_CALIBRATION_PHOTOS;
    let e = fit(
        &config,
        &source(&data),
        &out,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(e, mpox_trainer::Error::Invalid(_))
            && message.contains("internal validation fold")
            && message.contains("at least 5 of each class"),
        "{message}"
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());

    // A toy run may lower the minimum; the model card then says how little the point rests on.
    config.min_calibration_photos = 1;
    let card = fit(
        &config,
        &source(&data),
        &out,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap()
    .card
    .expect("finished");
    let warnings: Vec<&str> = card.metrics["warnings"]
        .as_array()
        .expect("warnings in the card")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings
        .iter()
        .all(|w| w.contains("do not use this model for screening")));
}
