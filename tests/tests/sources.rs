//! Several sources in one run, on generated photos: extra negatives folders (never positive,
//! deduplicated against the main data, kept in their fold), an external validation set (never
//! trained on, choosing the operating point), per-condition reports, and the recipes that keep
//! what pretraining taught (the solved probe, WiSE-FT's end points, L2-SP's pull, LP-FT's probe
//! start).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mpox_e2e::temp_dir;
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::Arch;
use mpox_trainer::split::{SplitConfig, SplitManifest};
use mpox_trainer::train::data::{self, DataSource};
use mpox_trainer::train::{files, fit, interpolate, FitConfig, Recipe, RunOptions};

/// Writes `n` generated photos of one kind into `dir` (PNG), seeds from `seed`.
fn write_photos(dir: &Path, n: usize, positive: bool, seed: u64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("img{seed}-{i}.png"));
            mpox_e2e::photo(seed * 1000 + i as u64, positive, 96)
                .save(&path)
                .unwrap();
            path
        })
        .collect()
}

/// Main data (mpox / other), a negatives folder with two conditions, one of its photos a copy of
/// a main negative and one a copy of a main positive, and an external set.
struct Fixture {
    data: PathBuf,
    negatives: PathBuf,
    external: PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let dir = temp_dir(name);
    let data = dir.join("data");
    let negatives = dir.join("others");
    let external = dir.join("external");
    let pos = write_photos(&data.join("mpox"), 30, true, 1);
    let neg = write_photos(&data.join("other"), 30, false, 2);
    write_photos(&negatives.join("eczema"), 20, false, 3);
    write_photos(&negatives.join("psoriasis"), 20, false, 4);
    std::fs::copy(
        &neg[0],
        negatives.join("eczema").join("copy_of_main_negative.png"),
    )
    .unwrap();
    std::fs::copy(
        &pos[0],
        negatives
            .join("psoriasis")
            .join("copy_of_main_positive.png"),
    )
    .unwrap();
    write_photos(&external.join("mpox"), 10, true, 5);
    write_photos(&external.join("others"), 10, false, 6);
    Fixture {
        data,
        negatives,
        external,
    }
}

fn split(f: &Fixture) -> SplitManifest {
    let config = SplitConfig {
        folds: 5,
        seed: 1,
        positive: Some("mpox".into()),
        negatives: vec![f.negatives.clone()],
        ..Default::default()
    };
    mpox_trainer::split::split(&f.data, &config).unwrap()
}

#[test]
fn extra_negatives_are_never_positive_are_deduplicated_and_stay_in_their_fold() {
    let f = fixture("sources-split");
    let m = split(&f);
    let extra: Vec<_> = m.items.iter().filter(|i| i.source == 1).collect();
    assert_eq!(extra.len(), 40, "two conditions of 20 photos stay");
    assert!(extra.iter().all(|i| i.label == "not_mpox"));
    let classes: HashSet<&str> = extra.iter().map(|i| i.class.as_str()).collect();
    assert_eq!(
        classes,
        HashSet::from(["others/eczema", "others/psoriasis"]),
        "sub-folders are conditions"
    );
    // The copy of a main negative is dropped in favour of the main data's photo; the copy of a
    // main positive is a label conflict, so both it and the positive are left out.
    let excluded: HashMap<&str, &str> = m
        .excluded
        .iter()
        .map(|e| (e.path.as_str(), e.reason.as_str()))
        .collect();
    assert!(excluded["others/eczema/copy_of_main_negative.png"].contains("of the main data"));
    assert!(excluded["others/psoriasis/copy_of_main_positive.png"].contains("label conflict"));
    assert!(excluded["mpox/img1-0.png"].contains("label conflict"));
    assert!(m.items.iter().any(|i| i.path == "other/img2-0.png"));
    // Paths resolve to the negatives folder.
    for i in &extra {
        assert!(m.path_of(i).starts_with(&f.negatives), "{}", i.path);
        assert!(m.path_of(i).is_file());
    }
    // Every fold has some extra negatives, and a fold's parts never share a photo.
    for fold in 0..m.folds {
        let parts = SplitManifest::open(&save(&m, &f), &f.data, fold).unwrap();
        let test: HashSet<&str> = parts.test().iter().map(|i| i.path.as_str()).collect();
        let val: HashSet<&str> = parts.val().iter().map(|i| i.path.as_str()).collect();
        let train: HashSet<&str> = parts.train().iter().map(|i| i.path.as_str()).collect();
        assert!(test.iter().any(|p| p.starts_with("others/")), "fold {fold}");
        assert!(test.is_disjoint(&train) && val.is_disjoint(&train) && test.is_disjoint(&val));
        assert_eq!(test.len() + val.len() + train.len(), m.items.len());
    }
    // Negatives without a positive class make no sense.
    let err = mpox_trainer::split::split(
        &f.data,
        &SplitConfig {
            negatives: vec![f.negatives.clone()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("--positive"), "{err}");
    // A changed negatives folder is noticed when the fold is opened.
    let path = save(&m, &f);
    write_photos(&f.negatives.join("acne"), 1, false, 9);
    let err = SplitManifest::open(&path, &f.data, 0).unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");
}

fn save(m: &SplitManifest, f: &Fixture) -> PathBuf {
    let path = f.data.parent().unwrap().join("split.json");
    m.save(&path).unwrap();
    path
}

/// Fold 0 of the saved split `m`, validated externally on the fixture's external set.
fn fold_zero(f: &Fixture, m: &SplitManifest) -> DataSource {
    DataSource {
        root: f.data.clone(),
        split: Some((save(m, f), 0)),
        positive: None,
        seed: 1,
        synthetic: None,
        synthetic_ratio: 0.0,
        negatives: vec![],
        external: Some(f.external.clone()),
    }
}

fn tiny(recipe: Recipe) -> FitConfig {
    let mut c = FitConfig::with_recipe(Arch::MobileNetV2 { width: 0.35 }, None, recipe);
    c.input_size = 64;
    c.probe = recipe != Recipe::Finetune;
    c.epochs = if recipe == Recipe::Probe { 0 } else { 2 };
    c.patience = 2;
    c.probe_views = 1;
    c.seed = 3;
    // Toy data sets: a handful of validation photos, warned about but not refused.
    c.min_calibration_photos = 1;
    c
}

#[test]
fn the_external_set_is_never_trained_on_and_sets_the_operating_point() {
    let f = fixture("sources-external");
    let m = split(&f);
    let source = fold_zero(&f, &m);
    let run = data::load(&source, 192).unwrap();
    assert_eq!(run.external.len(), 20);
    let external: HashSet<&Path> = run.external.iter().map(|s| s.path.as_path()).collect();
    assert!(run
        .train
        .iter()
        .chain(&run.val)
        .all(|s| !external.contains(s.path.as_path()) && !s.path.starts_with(&f.external)));
    assert!(run.train.iter().any(|s| s.path.starts_with(&f.negatives)));
    let pos = run.labels.iter().position(|l| l == "mpox").unwrap();
    assert_eq!(run.external.iter().filter(|s| s.label == pos).count(), 10);

    let out = f.data.parent().unwrap().join("run");
    let outcome = fit(
        &tiny(Recipe::Finetune),
        &source,
        &out,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap();
    let card = outcome.card.unwrap();
    assert_eq!(card.metrics["external_photos"], 20);
    // The operating point and temperature come from the external set; the epoch from the
    // mean of its AUC and the internal fold's.
    assert_eq!(
        card.metrics["chosen_on"]["threshold"],
        "external validation set"
    );
    assert_eq!(card.metrics["calibration_photos"], 20);
    assert!(card.metrics["chosen_on"]["epoch"]
        .as_str()
        .unwrap()
        .contains("external"));
    assert!(card.metrics["external_validation"]["auc"].is_number());
    let history = std::fs::read_to_string(out.join(files::HISTORY)).unwrap();
    assert!(history.lines().next().unwrap().contains("external_auc"));
    assert!(outcome
        .history
        .iter()
        .all(|r| r.external_auc.is_some() && r.external_loss.is_some()));

    // An external set holding a training photo is refused.
    let leaky = f.data.parent().unwrap().join("leaky");
    write_photos(&leaky.join("mpox"), 2, true, 7);
    std::fs::create_dir_all(leaky.join("others")).unwrap();
    std::fs::copy(
        m.path_of(&m.items[5]),
        leaky.join("others").join("leak.png"),
    )
    .unwrap();
    let err = data::load(
        &DataSource {
            external: Some(leaky),
            ..source.clone()
        },
        192,
    )
    .unwrap_err();
    assert!(err.to_string().contains("byte-identical"), "{err}");
}

#[test]
fn crossval_reports_each_conditions_rates_and_the_external_set() {
    let f = fixture("sources-crossval");
    let out = f.data.parent().unwrap().join("cv");
    let config = mpox_trainer::crossval::CrossvalConfig {
        data: f.data.clone(),
        split: None,
        folds: 5,
        split_seed: 1,
        positive: Some("mpox".into()),
        fit: tiny(Recipe::Probe),
        synthetic: None,
        synthetic_ratio: 0.0,
        only_folds: vec![0],
        negatives: vec![f.negatives.clone()],
        external: Some(f.external.clone()),
    };
    let summary = mpox_trainer::crossval::crossval(&config, &out, &Device::Cpu, false).unwrap();
    let classes: Vec<&str> = summary.per_class.iter().map(|c| c.class.as_str()).collect();
    assert!(classes.contains(&"others/eczema") || classes.contains(&"others/psoriasis"));
    assert!(classes.contains(&"mpox") && classes.contains(&"other"));
    for c in &summary.per_class {
        let total = c.likely_mpox + c.uncertain + c.unlikely;
        assert!((total - 1.0).abs() < 1e-9, "{}: {total}", c.class);
        assert_eq!(c.positive, c.class == "mpox");
    }
    assert!(!summary.external_mean_std.is_empty());
    let md = std::fs::read_to_string(out.join("crossval.md")).unwrap();
    assert!(md.contains("External validation set") && md.contains("Verdicts per class"));
    assert!(out.join("per_class.png").is_file());
    let fold = out.join("fold-0");
    assert!(fold.join("eval-external").join("report.md").is_file());
    assert!(fold.join("eval").join("per_class.png").is_file());

    // `eval` on a tree of several classes reports each class's verdicts.
    let screener =
        Screener::from_path(fold.join(files::MODEL), ScreenerOptions::default()).unwrap();
    let photos = mpox_trainer::evaluate::labelled_photos(
        &f.negatives,
        &screener.info().meta.labels,
        Some("no-such-class"),
        None,
    );
    assert!(photos.is_err(), "an unknown --positive class is refused");
    let photos = mpox_trainer::evaluate::labelled_photos(
        &f.external,
        &screener.info().meta.labels,
        Some("mpox"),
        None,
    )
    .unwrap();
    let report = mpox_trainer::evaluate::evaluate(&screener, &photos, false).unwrap();
    assert_eq!(report.per_class.len(), 2);
    let mpox = report.per_class.iter().find(|c| c.class == "mpox").unwrap();
    assert_eq!(mpox.photos, 10);
    assert!((mpox.at_threshold - report.binary.sensitivity).abs() < 1e-12);
    let others = report
        .per_class
        .iter()
        .find(|c| c.class == "others")
        .unwrap();
    assert!((others.at_threshold - (1.0 - report.binary.specificity)).abs() < 1e-12);
}

#[test]
fn wise_ft_blends_reproduce_their_end_points() {
    let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
    let probe = HashMap::from([("w".to_string(), t(&[1.0, -2.0, 0.5, 3.25]))]);
    let tuned = HashMap::from([("w".to_string(), t(&[0.3, 4.0, -1.5, 3.0]))]);
    let get = |m: &HashMap<String, Tensor>| m["w"].to_vec1::<f32>().unwrap();
    assert_eq!(get(&interpolate(&probe, &tuned, 0.0).unwrap()), get(&probe));
    assert_eq!(get(&interpolate(&probe, &tuned, 1.0).unwrap()), get(&tuned));
    let half = get(&interpolate(&probe, &tuned, 0.5).unwrap());
    for ((h, p), q) in half.iter().zip(get(&probe)).zip(get(&tuned)) {
        assert!((h - (p + q) / 2.0).abs() < 1e-6);
    }
    assert!(interpolate(&probe, &tuned, 1.5).is_err());
    let other = HashMap::from([("w".to_string(), t(&[1.0]))]);
    assert!(
        interpolate(&probe, &other, 0.5).is_err(),
        "shapes must agree"
    );

    // A whole WiSE-FT run: the probe is saved, every blend is scored, the kept one is reported.
    let f = fixture("sources-wise");
    let m = split(&f);
    let source = fold_zero(&f, &m);
    let out = f.data.parent().unwrap().join("wise");
    let card = fit(
        &tiny(Recipe::WiseFt),
        &source,
        &out,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap()
    .card
    .unwrap();
    assert!(out.join(files::PROBE).is_file());
    let wise = &card.metrics["wise_ft"];
    let tried: Vec<f64> = wise["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_f64().unwrap())
        .collect();
    assert_eq!(tried, mpox_trainer::train::WISE_ALPHAS.to_vec());
    assert!(tried.contains(&wise["chosen"].as_f64().unwrap()));
    assert_eq!(card.metrics["recipe"], "wise-ft");
    // The probe it starts from was solved for every penalty and kept one of them.
    let probe = &card.metrics["probe_penalty"];
    let penalties: Vec<f64> = probe["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_f64().unwrap())
        .collect();
    assert_eq!(
        penalties,
        mpox_trainer::train::probe::PROBE_PENALTIES.to_vec()
    );
    assert!(penalties.contains(&probe["chosen"].as_f64().unwrap()));
    assert_eq!(
        card.metrics["chosen_on"]["probe_penalty"],
        "mean AUC of the internal and external validation sets"
    );
}

#[test]
fn recipes_parse_by_name_and_refuse_settings_that_cannot_work() {
    for r in Recipe::ALL {
        assert_eq!(r.name().parse::<Recipe>().unwrap(), r);
    }
    assert!("lpft".parse::<Recipe>().is_err());
    let mut c = FitConfig::with_recipe(Arch::MobileNetV2 { width: 1.0 }, None, Recipe::LpFt);
    assert!(c.validate().is_ok());
    c.probe = false;
    assert!(c.validate().is_err(), "LP-FT needs a probe first");
    let mut c = FitConfig::with_recipe(Arch::MobileNetV2 { width: 1.0 }, None, Recipe::WiseFt);
    c.epochs = 0;
    assert!(c.validate().is_err(), "WiSE-FT needs fine-tuned weights");
    let probe = FitConfig::with_recipe(Arch::MobileNetV2 { width: 1.0 }, None, Recipe::Probe);
    assert_eq!(probe.epochs, 0);
    assert!(probe.probe);
    let l2sp = FitConfig::with_recipe(Arch::MobileNetV2 { width: 1.0 }, None, Recipe::L2Sp);
    assert!(l2sp.anchor_strength > 0.0);
}

#[test]
fn the_trainers_test_time_views_are_the_sdks() {
    // Calibration with `views` = n must see the logits a screener with n views computes.
    let net = mpox_e2e::random_network(Arch::MobileNetV2 { width: 0.35 }, 2, 21);
    let bytes = mpox_e2e::export(&net, 64);
    let pre = mpox_sdk::Preprocessing::imagenet(64);
    let samples: Vec<data::Sample> = (0..3)
        .map(|i| data::Sample {
            path: PathBuf::from(format!("photo{i}")),
            image: mpox_e2e::photo(40 + i, i % 2 == 0, 90 + 7 * i as u32),
            label: 0,
        })
        .collect();
    for views in [1u32, 2, 4, 8] {
        let ours = mpox_trainer::train::predict_views(&net, &pre, &samples, views).unwrap();
        let options = ScreenerOptions {
            views: Some(views),
            ..Default::default()
        };
        let screener = Screener::from_bytes(&bytes, options).unwrap();
        for (s, mine) in samples.iter().zip(&ours) {
            let theirs = screener.screen_image(&s.image).unwrap().logits;
            let scale = mine.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (a, b) in mine.iter().zip(&theirs) {
                assert!(
                    (a - f64::from(*b)).abs() / scale < 1e-4,
                    "{views} views: trainer {mine:?}, SDK {theirs:?}"
                );
            }
        }
    }
}

/// The probe recipe's head is the solved regression: on the pooled features of the training
/// photos' centre crops (the view the SDK screens), standardised, the objective's gradient at
/// the saved head, with the penalty the card reports, is zero.
#[test]
fn the_probe_is_the_optimum_of_its_regression_on_centre_crops() {
    use mpox_trainer::models::Network;
    use mpox_trainer::train::probe::{Objective, Standardizer};
    use nalgebra::{DMatrix, DVector};

    let f = fixture("sources-probe");
    let m = split(&f);
    let source = fold_zero(&f, &m);
    let out = f.data.parent().unwrap().join("probe");
    let config = tiny(Recipe::Probe);
    let card = fit(&config, &source, &out, &Device::Cpu, &RunOptions::default())
        .unwrap()
        .card
        .unwrap();
    let penalty = card.metrics["probe_penalty"]["chosen"].as_f64().unwrap();

    let net = Network::new(config.arch, 2, config.seed, &Device::Cpu).unwrap();
    net.load_checkpoint(&out.join(files::BEST)).unwrap();
    let pre = mpox_sdk::Preprocessing::imagenet(config.input_size);
    let run = data::load(&source, pre.resize * 2).unwrap();
    let s = pre.input_size as usize;
    let flat: Vec<f32> = run
        .train
        .iter()
        .flat_map(|x| pre.normalize(&pre.center_crop(&x.image)))
        .collect();
    let x = Tensor::from_vec(flat, (run.train.len(), 3, s, s), &Device::Cpu).unwrap();
    let pooled = Network::pool(&net.features(&x, false).unwrap()).unwrap();
    let dim = net.feature_dim();
    let rows: Vec<f64> = pooled
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let raw = DMatrix::from_row_slice(run.train.len(), dim, &rows);
    let std = Standardizer::fit(&raw);
    let z = std.apply(&raw);
    let labels: Vec<usize> = run.train.iter().map(|x| x.label).collect();
    let n = labels.len() as f64;
    let counts = [0, 1].map(|c| labels.iter().filter(|&&l| l == c).count() as f64);
    let weights = counts.map(|k| n / (2.0 * k));
    let objective = Objective::new(&z, &labels, &weights, penalty).unwrap();

    // The head in standardised units: W[j, c] = w[c, j]·σ_j, b[c] = b_raw[c] + Σ_j w[c, j]·μ_j.
    let head = net.head();
    let w = head.weight.to_vec2::<f32>().unwrap();
    let b = head.bias.to_vec1::<f32>().unwrap();
    let mut theta = DVector::zeros(objective.len());
    for c in 0..2 {
        for j in 0..dim {
            theta[c * dim + j] = f64::from(w[c][j]) * std.scale[j];
        }
        theta[2 * dim + c] = f64::from(b[c])
            + (0..dim)
                .map(|j| f64::from(w[c][j]) * std.mean[j])
                .sum::<f64>();
    }
    // The gradient's scale: at a zero head and at a head 1.5 times too large. At the saved head
    // it must be a hundredth of both (f32 storage of the head keeps it from exactly 0).
    let at = |t: &DVector<f64>| objective.eval(t).1.amax();
    let (head_grad, zero_grad, off_grad) = (
        at(&theta),
        at(&DVector::zeros(objective.len())),
        at(&(&theta * 1.5)),
    );
    assert!(
        head_grad < 0.01 * zero_grad.min(off_grad),
        "gradient {head_grad} at the saved head, {zero_grad} at zero, {off_grad} off the optimum"
    );
}
