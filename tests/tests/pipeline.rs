//! The main job end to end on its demo set, with the GAN step: the generator learns from the
//! training part of the fold the model trains on, its photos join that training set, and the
//! model card says how many and how good they were.

use candle_core::Device;
use mpox_e2e::temp_dir;
use mpox_trainer::gan::train::GanConfig;
use mpox_trainer::models::Arch;
use mpox_trainer::pipeline::{pipeline, PipelineConfig, PipelineGan};
use mpox_trainer::train::FitConfig;

#[test]
fn pipeline_with_gan_photos_records_them_in_the_model_card() {
    let dir = temp_dir("pipeline-gan");
    // Random feature weights: the projected discriminator and the evaluation only need the shape.
    let features = mpox_e2e::random_feature_weights(&dir.join("features.safetensors"), 9);
    let mut gan = GanConfig::projected(4);
    gan.batch_size = 4;
    gan.every = 2;
    gan.features = Some(features);
    let mut fit = FitConfig::new(Arch::MobileNetV2 { width: 0.35 }, None);
    fit.input_size = 64;
    fit.epochs = 1;
    fit.patience = 1;
    fit.min_calibration_photos = 1;
    let config = PipelineConfig {
        data: None,
        positive: None,
        fit,
        folds: 3,
        seed: 2,
        demo_per_class: 24,
        negatives: vec![],
        external: None,
        gan: Some(PipelineGan {
            config: gan,
            ratio: 1.0,
            sampling: mpox_trainer::gan::sample::Sampling::plain(),
        }),
    };
    let out = dir.join("run");
    let outcome = pipeline(&config, &out, &Device::Cpu, false).unwrap();
    assert!(outcome.demo && outcome.model.is_file());

    let samples = out.join("gan/fold-0/samples");
    let manifest = mpox_trainer::gan::sample::read_manifest(&samples).unwrap();
    assert_eq!((manifest.class.as_str(), manifest.fold), ("mpox", Some(0)));
    assert!(samples.join(mpox_trainer::gan::folds::EVAL).is_file());
    // The GAN learnt from fold 0's training part only: none of its photos is a test photo.
    let split = mpox_trainer::split::SplitManifest::load(&out.join("split.json")).unwrap();
    let gan_photos = mpox_trainer::gan::train::gan_data(
        &out.join("demo-data"),
        "mpox",
        Some((&out.join("split.json"), 0)),
    )
    .unwrap()
    .photos;
    for item in split.items.iter().filter(|i| i.fold == 0) {
        assert!(!gan_photos.contains(&split.path_of(item)), "{item:?}");
    }
    // As many generated photos as real mpox training photos, named in the card.
    let card: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("model").join(mpox_trainer::train::files::CARD)).unwrap(),
    )
    .unwrap();
    let synthetic = &card["metrics"]["synthetic"];
    let want = gan_photos.len() as u64;
    assert_eq!(synthetic["photos"].as_u64(), Some(want), "{synthetic}");
    assert_eq!(synthetic["class"], "mpox");
    assert!(
        synthetic["evaluation"]["frechet_distance"].is_number(),
        "{synthetic}"
    );
    assert!(synthetic["evaluation"]["recall"].is_number(), "{synthetic}");
    assert!(synthetic["evaluation"].get("nearest").is_none());

    // A rerun finds the GAN's photos and the model in place and trains nothing again.
    let checkpoint = out.join("gan/fold-0/gan.safetensors");
    let before = std::fs::metadata(&checkpoint).unwrap().modified().unwrap();
    pipeline(&config, &out, &Device::Cpu, false).unwrap();
    assert_eq!(
        std::fs::metadata(&checkpoint).unwrap().modified().unwrap(),
        before
    );

    // Asked for more GAN steps, the generator continues from its checkpoint, its photos are
    // sampled again, and the model that learnt from the old ones trains again.
    let model = out.join("model").join(mpox_trainer::train::files::MODEL);
    let modified = || std::fs::metadata(&model).unwrap().modified().unwrap();
    // What the model's fold records of the photos it learnt from.
    let stamp = || {
        std::fs::read_to_string(
            out.join("model")
                .join(mpox_trainer::crossval::SYNTHETIC_STAMP),
        )
        .unwrap()
    };
    let model_before = modified();
    let mut longer = config.clone();
    longer.gan.as_mut().unwrap().config.steps = 6;
    pipeline(&longer, &out, &Device::Cpu, false).unwrap();
    let state: mpox_trainer::gan::train::GanState =
        mpox_trainer::gan::train::read_checkpoint(&checkpoint, &Device::Cpu)
            .unwrap()
            .state(mpox_trainer::gan::train::STATE)
            .unwrap();
    assert_eq!(state.step, 6);
    let resampled = mpox_trainer::gan::sample::read_manifest(&samples).unwrap();
    let generator = mpox_trainer::gan::sample::checkpoint_sha256(&checkpoint).unwrap();
    assert_ne!(resampled.checkpoint_sha256, manifest.checkpoint_sha256);
    assert_eq!(resampled.checkpoint_sha256, generator);
    assert_eq!(stamp(), generator);
    assert_ne!(modified(), model_before);
    // Drawn at another latent scale, the same generator's photos are sampled again, the fold
    // records it, and the model trains again.
    let model_before = modified();
    let mut wider = longer.clone();
    wider.gan.as_mut().unwrap().sampling.latent_scale = 1.25;
    pipeline(&wider, &out, &Device::Cpu, false).unwrap();
    let wide = mpox_trainer::gan::sample::read_manifest(&samples).unwrap();
    assert_eq!(
        (wide.checkpoint_sha256.as_str(), wide.latent_scale),
        (generator.as_str(), 1.25)
    );
    assert_eq!(stamp(), format!("{generator} latent-scale 1.25"));
    assert_ne!(modified(), model_before);
    // Kept from a larger draw (the default), likewise; and refused up front without feature
    // weights to keep them by.
    let model_before = modified();
    let mut picky = wider.clone();
    picky.gan.as_mut().unwrap().sampling.select_from = 2;
    pipeline(&picky, &out, &Device::Cpu, false).unwrap();
    let kept = mpox_trainer::gan::sample::read_manifest(&samples).unwrap();
    assert_eq!((kept.select_from, kept.files.len()), (2, wide.files.len()));
    assert_eq!(
        stamp(),
        format!("{generator} latent-scale 1.25 select-from 2")
    );
    assert_ne!(modified(), model_before);
    // The paper's DCGAN needs no feature weights, but keeping photos does.
    let mut blind = picky.clone();
    blind.gan.as_mut().unwrap().config = GanConfig::dcgan(2);
    let err = pipeline(&blind, &dir.join("blind"), &Device::Cpu, false).unwrap_err();
    assert!(err.to_string().contains("--select-from 2"), "{err}");
}
