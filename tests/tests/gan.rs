//! The GAN on small generated data: it learns, it resumes identically, and its photos can only
//! ever join the training part of the fold it was trained on.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mpox_e2e::{assert_identical_safetensors, temp_dir};
use mpox_trainer::gan::diffaug::Policy;
use mpox_trainer::gan::model::{Gan, GanArch, Z_DIM};
use mpox_trainer::gan::train::{gan_data, GanConfig, GanRun, Loss};
use mpox_trainer::split::{split, SplitConfig, SplitManifest};
use mpox_trainer::train::data::{self, DataSource};

fn small(steps: usize) -> GanConfig {
    let mut c = GanConfig::dcgan(steps);
    c.batch_size = 8;
    c.every = 1000;
    c.seed = 4;
    c
}

/// A synthetic dataset in `dir/data` (`per_class` photos of each class) split into 3 folds, the
/// split saved as `dir/split.json`.
fn split_dataset(
    dir: &Path,
    per_class: usize,
    data_seed: u64,
    split_seed: u64,
) -> (PathBuf, PathBuf, SplitManifest) {
    let data_dir = dir.join("data");
    mpox_trainer::synthetic::write_dataset(&data_dir, per_class, 64, data_seed).unwrap();
    let config = SplitConfig {
        folds: 3,
        seed: split_seed,
        ..Default::default()
    };
    let manifest = split(&data_dir, &config).unwrap();
    let split_path = dir.join("split.json");
    manifest.save(&split_path).unwrap();
    (data_dir, split_path, manifest)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn a_few_steps_lower_the_discriminator_loss_on_an_easy_target() {
    let dir = temp_dir("gan-easy");
    // The easiest target there is: every real photo the same flat colour.
    let class = dir.join("data").join("flat");
    std::fs::create_dir_all(&class).unwrap();
    for i in 0..8 {
        image::RgbImage::from_pixel(64, 64, image::Rgb([200, 40, 40]))
            .save(class.join(format!("f{i}.png")))
            .unwrap();
    }
    let data = gan_data(&dir.join("data"), "flat", None).unwrap();
    let mut run = GanRun::new(&small(12), &data, &dir.join("run"), &Device::Cpu, false).unwrap();
    run.train(None, false).unwrap();
    let h = &run.state().history;
    let first: Vec<f64> = h[..3].iter().map(|r| r.d_loss).collect();
    let last: Vec<f64> = h[h.len() - 3..].iter().map(|r| r.d_loss).collect();
    eprintln!("D loss {:.3} → {:.3}", mean(&first), mean(&last));
    assert!(
        mean(&last) < mean(&first),
        "D loss did not fall: {first:?} → {last:?}"
    );
    assert!(
        h.last().unwrap().d_real > 0.5,
        "D does not recognise the real photos"
    );
    for f in ["log.csv", "losses.png", "scores.png", "gan.safetensors"] {
        assert!(dir.join("run").join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("run/log.csv"))
            .unwrap()
            .lines()
            .count(),
        13
    );
}

#[test]
fn a_resumed_run_continues_identically() {
    let dir = temp_dir("gan-resume");
    let data_dir = dir.join("data");
    mpox_trainer::synthetic::write_dataset(&data_dir, 8, 64, 1).unwrap();
    let data = gan_data(&data_dir, "mpox", None).unwrap();
    let mut config = small(4);
    // Every option at once: DiffAugment, hinge loss, an EMA generator.
    config.diffaug = Policy::all();
    config.loss = Loss::Hinge;
    config.ema = Some(0.9);
    let mut a = GanRun::new(&config, &data, &dir.join("a"), &Device::Cpu, false).unwrap();
    a.train(None, false).unwrap();
    let mut b = GanRun::new(&config, &data, &dir.join("b"), &Device::Cpu, false).unwrap();
    b.train(Some(2), false).unwrap();
    drop(b);
    assert!(GanRun::new(&config, &data, &dir.join("b"), &Device::Cpu, false).is_err());
    let mut b = GanRun::new(&config, &data, &dir.join("b"), &Device::Cpu, true).unwrap();
    assert_eq!(b.state().step, 2);
    b.train(None, false).unwrap();
    assert_eq!(a.state().history, b.state().history);
    assert_identical_safetensors(
        &dir.join("a/gan.safetensors"),
        &dir.join("b/gan.safetensors"),
    );
    assert_eq!(
        std::fs::read(dir.join("a/log.csv")).unwrap(),
        std::fs::read(dir.join("b/log.csv")).unwrap()
    );
    // A finished run asked for more steps continues to the weights of the longer run.
    let mut short = config.clone();
    short.steps = 2;
    GanRun::new(&short, &data, &dir.join("c"), &Device::Cpu, false)
        .unwrap()
        .train(None, false)
        .unwrap();
    let mut c = GanRun::new(&config, &data, &dir.join("c"), &Device::Cpu, true).unwrap();
    assert_eq!(c.state().step, 2);
    c.train(None, false).unwrap();
    assert_eq!(a.state().history, c.state().history);
    assert_identical_safetensors(
        &dir.join("a/gan.safetensors"),
        &dir.join("c/gan.safetensors"),
    );
}

/// The generator's update runs the discriminator through `forward_fixed`: it gets the very
/// gradients it got through `forward_t`, and none are computed for the discriminator's
/// convolution weights (both pairs).
#[test]
fn a_fixed_discriminator_gives_the_generator_the_same_gradients() {
    let dir = temp_dir("gan-fixed");
    let features = mpox_e2e::random_feature_weights(&dir.join("features.safetensors"), 4);
    for (arch, convolutions) in [(GanArch::Dcgan, 5), (GanArch::Projected, 7)] {
        let gan = Gan::new(arch, 64, false, 3, Some(&features), &Device::Cpu).unwrap();
        let z = Tensor::randn(0f32, 1.0, (4, Z_DIM), &Device::Cpu).unwrap();
        let fake = gan.g.forward_t(&z, true).unwrap();
        let loss = |fixed: bool| {
            let d = if fixed {
                gan.d.forward_fixed(&fake, true)
            } else {
                gan.d.forward_t(&fake, true)
            };
            d.unwrap().mean_all().unwrap().backward().unwrap()
        };
        let (full, fixed) = (loss(false), loss(true));
        let values =
            |t: Option<&Tensor>| t.map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mut compared = 0;
        for (name, var) in gan.g_vars.data().lock().unwrap().iter() {
            let want = values(full.get(var));
            assert_eq!(values(fixed.get(var)), want, "{arch:?} generator's {name}");
            compared += usize::from(want.is_some());
        }
        assert!(
            compared >= 5,
            "{arch:?}: {compared} generator gradients compared"
        );
        let mut seen = 0;
        for (name, var) in gan.d_vars.data().lock().unwrap().iter() {
            if var.dims().len() == 4 {
                assert!(full.get(var).is_some(), "{arch:?} discriminator's {name}");
                assert!(fixed.get(var).is_none(), "{arch:?} discriminator's {name}");
                seen += 1;
            }
        }
        assert_eq!(seen, convolutions, "{arch:?}");
    }
}

/// The projected GAN (the default): its discriminator learns on the frozen features, the
/// generator's gradient flows back through them, it resumes bit for bit, and it refuses to
/// resume with other feature weights or to start without any.
#[test]
fn the_projected_gan_learns_resumes_identically_and_checks_its_features() {
    let dir = temp_dir("gan-projected");
    let data_dir = dir.join("data");
    mpox_trainer::synthetic::write_dataset(&data_dir, 8, 64, 1).unwrap();
    let data = gan_data(&data_dir, "mpox", None).unwrap();
    let features = |seed: u64| {
        mpox_e2e::random_feature_weights(&dir.join(format!("features-{seed}.safetensors")), seed)
    };
    let mut config = GanConfig::projected(4);
    config.batch_size = 4;
    config.every = 1000;
    assert!(config.validate().is_err(), "no feature weights");
    config.features = Some(features(1));
    let mut a = GanRun::new(&config, &data, &dir.join("a"), &Device::Cpu, false).unwrap();
    a.train(None, false).unwrap();
    let h = &a.state().history;
    assert_eq!(h.len(), 4);
    assert!(h
        .iter()
        .all(|r| r.d_loss.is_finite() && r.g_loss.is_finite()));
    let mut b = GanRun::new(&config, &data, &dir.join("b"), &Device::Cpu, false).unwrap();
    b.train(Some(2), false).unwrap();
    drop(b);
    let mut b = GanRun::new(&config, &data, &dir.join("b"), &Device::Cpu, true).unwrap();
    b.train(None, false).unwrap();
    assert_eq!(a.state().history, b.state().history);
    assert_identical_safetensors(
        &dir.join("a/gan.safetensors"),
        &dir.join("b/gan.safetensors"),
    );
    // Other feature weights are another run.
    let mut other = config.clone();
    other.features = Some(features(2));
    let err = GanRun::new(&other, &data, &dir.join("b"), &Device::Cpu, true)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("features_sha256"), "{err}");
    // Sampling needs only the generator.
    let m = mpox_trainer::gan::sample::sample(
        &dir.join("a/gan.safetensors"),
        3,
        0,
        &dir.join("samples"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(m.files.len(), 3);
}

#[test]
fn synthetic_photos_only_reach_the_training_part_of_their_own_fold() {
    let dir = temp_dir("gan-leak");
    let (data_dir, split_path, manifest) = split_dataset(&dir, 15, 2, 1);
    // The GAN of fold 0 learns from fold 0's training photos only (not its test or validation fold).
    let gd = gan_data(&data_dir, "mpox", Some((&split_path, 0))).unwrap();
    let allowed: Vec<_> = manifest
        .items
        .iter()
        .filter(|i| i.class == "mpox" && i.fold == 2)
        .map(|i| manifest.path_of(i))
        .collect();
    assert!(!gd.photos.is_empty());
    assert!(
        gd.photos.iter().all(|p| allowed.contains(p)),
        "the GAN saw test or validation photos"
    );
    let mut run = GanRun::new(&small(1), &gd, &dir.join("gan"), &Device::Cpu, false).unwrap();
    run.train(None, false).unwrap();
    let samples = dir.join("samples");
    let m = mpox_trainer::gan::sample::sample(
        &dir.join("gan/gan.safetensors"),
        6,
        0,
        &samples,
        &Device::Cpu,
    )
    .unwrap();
    assert!(m.synthetic && m.fold == Some(0) && m.files.len() == 6);

    let source_with = |fold: usize, synthetic: &Path, ratio: f64| DataSource {
        root: data_dir.clone(),
        split: Some((split_path.clone(), fold)),
        positive: None,
        seed: 0,
        synthetic: Some(synthetic.to_path_buf()),
        synthetic_ratio: ratio,
        negatives: vec![],
        external: None,
    };
    let source = |fold: usize, synthetic: &Path| source_with(fold, synthetic, 10.0);
    let is_synthetic = |s: &&data::Sample| s.path.starts_with(&samples);
    // Its own fold: the photos join training, labelled mpox, and nothing else changes.
    let run = data::load(&source(0, &samples), 128).unwrap();
    let synthetic: Vec<_> = run.train.iter().filter(is_synthetic).collect();
    assert_eq!(synthetic.len(), 6);
    assert!(synthetic.iter().all(|s| run.labels[s.label] == "mpox"));
    assert!(run.val.iter().all(|s| !s.path.starts_with(&samples)));
    assert!(run.test.iter().all(|p| !p.starts_with(&samples)));
    // The ratio caps synthetic photos at a multiple of the real photos of their class in training.
    let real_mpox = run
        .train
        .iter()
        .filter(|s| !is_synthetic(s) && run.labels[s.label] == "mpox")
        .count();
    assert!(real_mpox >= 2, "{real_mpox}");
    let capped = data::load(&source_with(0, &samples, 0.5), 128).unwrap();
    let want = ((real_mpox as f64) * 0.5).round() as usize;
    assert_eq!(
        capped.train.iter().filter(is_synthetic).count(),
        want.min(6)
    );
    assert_eq!(capped.train.len(), run.train.len() - 6 + want.min(6));
    // Another fold: refused (that generator may have seen this fold's test photos).
    let err = data::load(&source(1, &samples), 128).unwrap_err();
    assert!(err.to_string().contains("fold"), "{err}");
    // A real photo slipped into the synthetic folder: refused.
    let real = manifest.path_of(&manifest.items[0]);
    std::fs::copy(&real, samples.join("gen_00000.png")).unwrap();
    let err = data::load(&source(0, &samples), 128).unwrap_err();
    assert!(err.to_string().contains("real photo"), "{err}");
    // A synthetic folder inside the dataset would be scanned as real photos: refused.
    let inside = data_dir.join("mpox").join("generated");
    std::fs::create_dir_all(&inside).unwrap();
    for f in std::fs::read_dir(&samples).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, inside.join(f.file_name().unwrap())).unwrap();
    }
    let err = data::load(&source(0, &inside), 128).unwrap_err();
    assert!(err.to_string().contains("inside the dataset"), "{err}");
}

/// A fold packed on its own trains the same GAN as the fold read through its split (bit for bit),
/// a checkpoint made from the pack resumes on the full dataset and samples with a wider latent
/// noise, and a pack refuses altered photos, another class and a folder that is not empty.
#[test]
fn a_packed_fold_trains_the_gan_of_its_split() {
    use mpox_trainer::gan::pack;
    let dir = temp_dir("gan-pack");
    let (data_dir, split_path, _) = split_dataset(&dir, 12, 3, 2);
    let from_split = gan_data(&data_dir, "mpox", Some((&split_path, 1))).unwrap();
    let packed = pack::pack(&data_dir, "mpox", &split_path, 1, &dir.join("pack")).unwrap();
    assert_eq!(packed.photos.len(), from_split.photos.len());
    let from_pack = gan_data(&dir.join("pack"), "mpox", None).unwrap();
    assert_eq!(from_pack.fold, Some(1));
    assert_eq!(from_pack.fingerprint, from_split.fingerprint);
    assert_eq!(from_pack.class, "mpox");
    for (a, b) in from_split.photos.iter().zip(&from_pack.photos) {
        assert!(b.starts_with(dir.join("pack")), "{}", b.display());
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
    let train = |data: &mpox_trainer::gan::train::GanData, out: &str, steps: usize| {
        let mut run = GanRun::new(&small(steps), data, &dir.join(out), &Device::Cpu, true).unwrap();
        run.train(None, false).unwrap();
        run.state().step
    };
    assert_eq!(train(&from_split, "split-run", 2), 2);
    assert_eq!(train(&from_pack, "pack-run", 2), 2);
    assert_identical_safetensors(
        &dir.join("split-run/gan.safetensors"),
        &dir.join("pack-run/gan.safetensors"),
    );
    // Trained elsewhere from the pack, continued here on the dataset.
    assert_eq!(train(&from_split, "pack-run", 3), 3);

    // Wider latent noise: other photos from the same seed, recorded; scale 1 is plain sampling.
    use mpox_trainer::gan::sample::{sample, sample_with, Reference, Sampling};
    let ckpt = dir.join("pack-run/gan.safetensors");
    let sample_scaled = |scale: f64, out: &str| {
        let sampling = Sampling {
            latent_scale: scale,
            ..Sampling::plain()
        };
        sample_with(&ckpt, 3, 5, &sampling, None, &dir.join(out), &Device::Cpu)
    };
    let plain = sample(&ckpt, 3, 5, &dir.join("s-plain"), &Device::Cpu).unwrap();
    let one = sample_scaled(1.0, "s-one").unwrap();
    let wide = sample_scaled(2.0, "s-wide").unwrap();
    assert_eq!(
        (plain.latent_scale, one.latent_scale, wide.latent_scale),
        (1.0, 1.0, 2.0)
    );
    let bytes = |d: &str, f: &str| std::fs::read(dir.join(d).join(f)).unwrap();
    assert_eq!(
        bytes("s-plain", &plain.files[0]),
        bytes("s-one", &one.files[0])
    );
    assert_ne!(
        bytes("s-plain", &plain.files[0]),
        bytes("s-wide", &wide.files[0])
    );
    assert!(!std::fs::read_to_string(dir.join("s-one/manifest.json"))
        .unwrap()
        .contains("latent_scale"));
    for bad in [0.0, -1.0, f64::NAN] {
        let err = sample_scaled(bad, "s-bad").unwrap_err();
        assert!(err.to_string().contains("latent scale"), "{err}");
    }

    // Three candidates per photo, the realistic ones farthest apart kept: exactly the candidates
    // `select::spread` picks from the plain draw of the same seed, recorded as such; refused
    // without the training photos or with no candidate.
    use mpox_trainer::gan::{eval, select};
    let weights = mpox_e2e::random_feature_weights(&dir.join("features.safetensors"), 3);
    let picky = Sampling {
        latent_scale: 1.0,
        select_from: 3,
    };
    let reference = Reference {
        training: &from_split.photos,
        weights: &weights,
    };
    let chosen = sample_with(
        &ckpt,
        4,
        5,
        &picky,
        Some(&reference),
        &dir.join("s-chosen"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!((chosen.select_from, chosen.files.len()), (3, 4));
    assert!(
        chosen.origin().ends_with(" select-from 3"),
        "{}",
        chosen.origin()
    );
    let drawn = sample(&ckpt, 12, 5, &dir.join("s-drawn"), &Device::Cpu).unwrap();
    let paths = |d: &str, files: &[String]| -> Vec<std::path::PathBuf> {
        files.iter().map(|f| dir.join(d).join(f)).collect()
    };
    let net = eval::feature_network(&weights, &Device::Cpu).unwrap();
    let feats = |p: &[std::path::PathBuf]| {
        eval::features(
            &net,
            &eval::load_at(p, small(1).size).unwrap(),
            &Device::Cpu,
        )
        .unwrap()
    };
    let kept = select::spread(
        &feats(&paths("s-drawn", &drawn.files)),
        &feats(&from_split.photos),
        3,
        eval::PR_NEIGHBOURS,
    );
    for (file, k) in chosen.files.iter().zip(&kept) {
        assert_eq!(bytes("s-chosen", file), bytes("s-drawn", &drawn.files[*k]));
    }
    let err =
        sample_with(&ckpt, 4, 5, &picky, None, &dir.join("s-none"), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("--select-from 3"), "{err}");
    let none = Sampling {
        select_from: 0,
        ..picky
    };
    let err = sample_with(&ckpt, 4, 5, &none, None, &dir.join("s-none"), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("--select-from 0"), "{err}");

    let err = gan_data(&dir.join("pack"), "not_mpox", None).unwrap_err();
    assert!(err.to_string().contains("packs photos of"), "{err}");
    let err = pack::pack(&data_dir, "mpox", &split_path, 1, &dir.join("pack")).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let first = dir.join("pack/mpox").join(&packed.photos[0].file);
    std::fs::copy(dir.join("pack/mpox").join(&packed.photos[1].file), &first).unwrap();
    let err = gan_data(&dir.join("pack"), "mpox", None).unwrap_err();
    assert!(err.to_string().contains("sha256 differs"), "{err}");
}

/// `gan eval` on constructed sets (random feature weights: the figures' meaning does not depend
/// on ImageNet): copies of training photos are caught as memorised, and a generated set that is
/// the held-out photos themselves scores the highest precision and recall there is.
#[test]
fn evaluation_finds_copies_and_scores_a_perfect_generator() {
    use mpox_trainer::gan::eval::evaluate;

    let dir = temp_dir("gan-eval");
    mpox_trainer::synthetic::write_dataset(&dir.join("data"), 14, 64, 3).unwrap();
    let mut photos: Vec<_> = std::fs::read_dir(dir.join("data/mpox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    let (training, held_out) = photos.split_at(7);
    let weights = mpox_e2e::random_feature_weights(&dir.join("features.safetensors"), 5);

    // Copies of training photos (as a memorising generator makes), under other names.
    let copies = dir.join("copies");
    std::fs::create_dir_all(&copies).unwrap();
    let copied: Vec<_> = training[..4]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let to = copies.join(format!("synthetic_{i}.png"));
            std::fs::copy(p, &to).unwrap();
            to
        })
        .collect();
    let eval = |generated: &[std::path::PathBuf]| {
        evaluate(
            generated,
            held_out,
            training,
            64,
            &weights,
            &copies,
            &Device::Cpu,
        )
        .unwrap()
    };
    let r = eval(&copied);
    assert_eq!((r.generated, r.held_out, r.training), (4, 7, 7));
    assert_eq!(r.memorised, 4, "{:?}", r.nearest);
    assert!(r.nearest.iter().all(|n| n.feature_distance < 1e-3));
    assert!(copies.join("closest.png").is_file());

    // The held-out photos as the "generated" set: the same features, so precision and recall
    // are 1 and the Fréchet distance 0, no more than training vs held-out (the floor).
    let r = eval(held_out);
    assert_eq!((r.precision, r.recall), (1.0, 1.0));
    assert!(r.frechet_distance < 1e-6, "{}", r.frechet_distance);
    assert!(r.frechet_distance <= r.frechet_distance_real_baseline);
    let (p, rc) = r.precision_recall_real_baseline;
    assert!(
        (0.0..=1.0).contains(&p) && (0.0..=1.0).contains(&rc),
        "{p} {rc}"
    );

    // More generated photos than training ones: the distribution figures compare the first
    // seven (the held-out photos again), memorisation looks at all eleven.
    let mixed: Vec<_> = held_out.iter().chain(&copied).cloned().collect();
    let m = eval(&mixed);
    assert_eq!((m.generated, m.compared, m.memorised), (11, 7, 4));
    assert_eq!((m.precision, m.recall), (r.precision, r.recall));
    // Within float noise: the photos pass the feature network in batches of another size.
    assert!(
        (m.frechet_distance - r.frechet_distance).abs() < 1e-6
            && (m.spread - r.spread).abs() < 1e-6 * r.spread,
        "{} {} / {} {}",
        m.frechet_distance,
        r.frechet_distance,
        m.spread,
        r.spread
    );

    // The training photos as the generated set: the same spread as the real one.
    let r = eval(training);
    assert!(
        r.spread > 0.0 && r.spread == r.spread_real,
        "{} {}",
        r.spread,
        r.spread_real
    );
}
