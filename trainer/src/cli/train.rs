//! Training commands: `fit`, `eval`, `crossval`, `pipeline`, `ablate`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use candle_core::Device;
use clap::Args;
use mpox_sdk::ScreenerOptions;
use mpox_trainer::models::Arch;
use mpox_trainer::train::data::DataSource;
use mpox_trainer::train::{files, FitConfig, Recipe, RunOptions, Unfreeze};
use mpox_trainer::ComputeDevice;

/// Where photos come from besides the main data set, shared by `fit`, `crossval`, `pipeline`
/// and `ablate`.
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// A folder of photos that are all `not_mpox` (sub-folders are conditions, kept for
    /// reporting); audited, deduplicated against the data and split into the same folds.
    /// Repeatable.
    #[arg(long, value_name = "DIR")]
    negatives: Vec<PathBuf>,
    /// An external validation set from another source (an ImageFolder with the positive class):
    /// never trained on; with the internal validation fold it chooses the epoch, the probe's
    /// penalty and the WiSE-FT blend, alone the temperature and the operating point, and it is
    /// reported after training.
    #[arg(long, value_name = "DIR")]
    external_val: Option<PathBuf>,
}

/// Training settings shared by `fit`, `crossval`, `pipeline` and `ablate`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// How pretrained weights are adapted: probe, finetune, lp-ft, wise-ft or l2-sp
    /// [default: probe with --weights, finetune (all stages) without].
    #[arg(long)]
    recipe: Option<Recipe>,
    /// mobilenet_v2, mobilenet_v2_w<WIDTH> or resnet18 [default: mobilenet_v2; mobilenet_v2_w0.5 for the demo set].
    #[arg(long)]
    arch: Option<String>,
    /// torchvision-named pretrained weights (safetensors or .pth), or `imagenet` for the ImageNet
    /// MobileNetV2 fetched by scripts/fetch-weights.sh; without them the network trains from
    /// scratch.
    #[arg(long, value_name = "FILE|imagenet")]
    weights: Option<PathBuf>,
    /// Side of the square network input [default: 224; 96 for the demo set].
    #[arg(long)]
    input_size: Option<u32>,
    /// Photos per training step.
    #[arg(long, default_value_t = FitConfig::BATCH_SIZE)]
    batch_size: usize,
    /// Fine-tuning epochs (upper bound; early stopping may end sooner). Default: 8 pretrained, 30 from scratch.
    #[arg(long)]
    epochs: Option<usize>,
    /// Skip the linear probe that pretrained weights start with (the head then starts at zero
    /// and is fine-tuned with the backbone).
    #[arg(long)]
    no_probe: bool,
    /// Views per photo cached for the probe: the centre crop, then augmented ones [default: 1].
    #[arg(long)]
    probe_views: Option<usize>,
    /// Backbone stages trained after the probe: `all` or a number of final stages. Default: 5 (MobileNetV2) or 3 (ResNet-18) pretrained, all from scratch.
    #[arg(long)]
    unfreeze: Option<String>,
    /// Learning rate of the head (base rate) [default: the recipe's: 1e-3, 1e-4 for lp-ft and wise-ft].
    #[arg(long)]
    lr: Option<f64>,
    /// Fine-tuning epochs without a better validation loss before stopping.
    #[arg(long, default_value_t = FitConfig::PATIENCE)]
    patience: usize,
    /// Seed of initialisation, augmentation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the photos as they are (no augmentation).
    #[arg(long)]
    no_augment: bool,
    /// Sensitivity the operating threshold must reach on validation data.
    #[arg(long, default_value_t = mpox_trainer::calibration::DEFAULT_TARGET_SENSITIVITY)]
    target_sensitivity: f64,
    /// Fewest photos of each class in the set the operating point is chosen on (the external
    /// set, else the validation fold); fewer are refused. Lower it only for toy runs.
    #[arg(long, default_value_t = mpox_trainer::calibration::MIN_CALIBRATION_PHOTOS)]
    min_calibration_photos: usize,
    /// Test-time views (1, 2, 4 or 8) averaged when calibrating, and recommended to the SDK in
    /// the exported file.
    #[arg(long, default_value_t = FitConfig::VIEWS)]
    views: u32,
    /// Mixup of pooled features with Beta(α, α) blends (0: off).
    #[arg(long, value_name = "ALPHA", default_value_t = FitConfig::MIXUP)]
    mixup: f64,
    /// Where to train (cuda needs a build made by scripts/build-cuda.sh).
    #[arg(long, value_enum, default_value_t)]
    device: ComputeDevice,
}

impl TrainArgs {
    /// Turns the flags into a validated configuration before any data is read.
    fn config(&self) -> anyhow::Result<(FitConfig, Device)> {
        self.config_with(("mobilenet_v2", 224, None))
    }

    /// As [`Self::config`], with other defaults for architecture, input size and epochs.
    fn config_with(
        &self,
        defaults: (&str, u32, Option<usize>),
    ) -> anyhow::Result<(FitConfig, Device)> {
        let arch: Arch = self.arch.as_deref().unwrap_or(defaults.0).parse()?;
        let weights = match &self.weights {
            Some(w) => Some(mpox_trainer::weights::resolve(w)?),
            None => None,
        };
        let mut c = match self.recipe {
            Some(r) => FitConfig::with_recipe(arch, weights, r),
            None => FitConfig::new(arch, weights),
        };
        c.input_size = self.input_size.unwrap_or(defaults.1);
        if let Some(e) = defaults.2 {
            c.epochs = e;
        }
        c.batch_size = self.batch_size;
        if let Some(e) = self.epochs {
            c.epochs = e;
        }
        if self.no_probe {
            c.probe = false;
        }
        if let Some(v) = self.probe_views {
            c.probe_views = v;
        }
        if let Some(u) = &self.unfreeze {
            c.unfreeze = match u.as_str() {
                "all" => Unfreeze::All,
                n => Unfreeze::Last(n.parse().map_err(|_| {
                    anyhow::anyhow!("--unfreeze takes `all` or a number of stages, not {n:?}")
                })?),
            };
        }
        if let Some(lr) = self.lr {
            c.lr = lr;
        }
        c.mixup = self.mixup;
        c.views = self.views;
        c.patience = self.patience;
        c.seed = self.seed;
        if self.no_augment {
            c.augment = None;
        }
        c.target_sensitivity = self.target_sensitivity;
        c.min_calibration_photos = self.min_calibration_photos;
        c.validate()?;
        Ok((c, self.device.open()?))
    }
}

/// Arguments of `fit`.
#[derive(Args, Debug)]
pub struct FitArgs {
    /// ImageFolder dataset (one sub-folder per class).
    data: PathBuf,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    sources: SourceArgs,
    /// Class mapped to `mpox`, all others to `not_mpox` (binary screening).
    #[arg(long)]
    positive: Option<String>,
    /// Split manifest written by `split` (with --fold); without it a duplicate-aware validation part is held out.
    #[arg(long, requires = "fold")]
    split: Option<PathBuf>,
    /// The fold whose test part is held out (the next fold validates).
    #[arg(long, requires = "split")]
    fold: Option<usize>,
    /// Folder of GAN-generated photos (with its manifest) added to the training part only.
    #[arg(long, value_name = "DIR")]
    synthetic: Option<PathBuf>,
    /// Generated photos per real training photo of their class.
    #[arg(long, default_value_t = 1.0, requires = "synthetic")]
    synthetic_ratio: f64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this many epochs in this invocation (resume later with --resume).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Run folder (checkpoints, model card, model.onnx, curves).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The exported model.
    model: PathBuf,
    /// ImageFolder dataset with the photos to evaluate.
    data: PathBuf,
    /// Class mapped to `mpox` for a binary model (the others to `not_mpox`).
    #[arg(long)]
    positive: Option<String>,
    /// Evaluate only the test part of this fold of a split manifest.
    #[arg(long, requires = "fold")]
    split: Option<PathBuf>,
    /// The fold (with --split).
    #[arg(long, requires = "split")]
    fold: Option<usize>,
    /// Test-time views averaged per photo (1, 2, 4 or 8) [default: the model's recommendation].
    #[arg(long)]
    views: Option<u32>,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    json: bool,
    /// Folder for report.md, eval.json and the plots [default: <model>-eval beside the model].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Arguments of `crossval`.
#[derive(Args, Debug)]
pub struct CrossvalArgs {
    /// ImageFolder dataset.
    data: PathBuf,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    sources: SourceArgs,
    /// Number of folds of a new split.
    #[arg(long, default_value_t = mpox_trainer::split::SplitConfig::FOLDS)]
    folds: usize,
    /// Seed of a new split.
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Class mapped to `mpox` (binary screening).
    #[arg(long)]
    positive: Option<String>,
    /// Use this split manifest instead of making one.
    #[arg(long)]
    split: Option<PathBuf>,
    /// Run only these folds (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only_folds: Vec<usize>,
    /// Output folder (split.json, fold-*/, crossval.json, crossval.md, roc.png). Rerun to resume.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `pipeline`.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// ImageFolder dataset; without it a small synthetic demo set is generated (and the model is a demo).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    sources: SourceArgs,
    /// Class mapped to `mpox` (binary screening).
    #[arg(long)]
    positive: Option<String>,
    /// Folds of the split (fold 0 tests, fold 1 validates).
    #[arg(long, default_value_t = mpox_trainer::split::SplitConfig::FOLDS)]
    folds: usize,
    /// Train a GAN on the training photos of the positive class (fold 0's training part, what the
    /// model trains on) and add its photos to the training set; see README for when it helps.
    #[arg(long)]
    gan: bool,
    #[command(flatten)]
    gan_options: super::gan::GanOptions,
    #[command(flatten)]
    sampling: super::gan::SampleOptions,
    /// Generated photos per real training photo of the positive class (with --gan).
    #[arg(long, default_value_t = mpox_trainer::gan::folds::RATIO)]
    synthetic_ratio: f64,
    /// Output folder.
    #[arg(long, default_value = "runs/pipeline")]
    out: PathBuf,
}

/// Arguments of `ablate`.
#[derive(Args, Debug)]
pub struct AblateArgs {
    /// ImageFolder dataset.
    data: PathBuf,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    sources: SourceArgs,
    /// Class the GAN learns and that counts as mpox (binary screening).
    #[arg(long)]
    positive: String,
    /// Folds of the split.
    #[arg(long, default_value_t = mpox_trainer::split::SplitConfig::FOLDS)]
    folds: usize,
    /// Seed of the split.
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    #[command(flatten)]
    gan: super::gan::GanOptions,
    #[command(flatten)]
    sampling: super::gan::SampleOptions,
    /// Generated photos per real training photo of the positive class, one GAN arm per ratio
    /// (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 1.0, 2.0])]
    synthetic_ratios: Vec<f64>,
    /// ImageNet MobileNetV2 weights (a file, or `imagenet`) for the GAN's Fréchet distance and KID
    /// (skipped when absent).
    #[arg(long)]
    feature_weights: Option<PathBuf>,
    /// Run only these folds (comma-separated; GANs are trained for these folds only).
    #[arg(long, value_delimiter = ',')]
    only_folds: Vec<usize>,
    /// Output folder (split.json, real/, augment/, gan/, gan-arm/, ablation.md, ablation.png). Rerun to resume.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `fit`.
pub fn fit(a: FitArgs) -> anyhow::Result<ExitCode> {
    let (config, device) = a.train.config()?;
    let source = DataSource {
        root: a.data.clone(),
        split: a.split.clone().zip(a.fold),
        positive: a.positive.clone(),
        seed: config.seed,
        synthetic: a.synthetic.clone(),
        synthetic_ratio: a.synthetic_ratio,
        negatives: a.sources.negatives.clone(),
        external: a.sources.external_val.clone(),
    };
    let run = RunOptions {
        resume: a.resume,
        stop_after: a.stop_after,
        progress: true,
    };
    let outcome = mpox_trainer::train::fit(&config, &source, &a.out, &device, &run)?;
    match &outcome.card {
        Some(card) => {
            eprintln!(
                "wrote {} (model card {})",
                a.out.join(files::MODEL).display(),
                a.out.join(files::CARD).display()
            );
            println!("{}", serde_json::to_string_pretty(&card.metrics)?);
        }
        None => eprintln!(
            "stopped after {} epochs as asked; continue with --resume",
            outcome.history.len()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `eval`.
pub fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let options = ScreenerOptions {
        views: a.views,
        ..Default::default()
    };
    let screener = super::model::load_screener(&a.model, options)?;
    let photos = mpox_trainer::evaluate::labelled_photos(
        &a.data,
        &screener.info().meta.labels,
        a.positive.as_deref(),
        a.split.as_deref().zip(a.fold),
    )?;
    let report = mpox_trainer::evaluate::evaluate(&screener, &photos, !a.json)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = a
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        a.model.with_file_name(format!("{stem}-eval"))
    });
    let mut title = match a.fold {
        Some(f) => format!("Evaluation on fold {f} test photos"),
        None => format!("Evaluation on {}", a.data.display()),
    };
    if let Some(n) = a.views {
        title.push_str(&format!(" ({n} test-time views)"));
    }
    report.write(&out, &title)?;
    if a.json {
        println!("{}", serde_json::to_string(&report.summary_json())?);
    } else {
        print!(
            "{}",
            report
                .markdown(&title)
                .split("## Confusion")
                .next()
                .unwrap_or_default()
        );
        eprintln!("report, eval.json and plots in {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `crossval`.
pub fn crossval(a: CrossvalArgs) -> anyhow::Result<ExitCode> {
    let (fit, device) = a.train.config()?;
    if a.folds < 3 && a.split.is_none() {
        bail!("--folds must be at least 3 (one tests, one validates, the rest train)");
    }
    let config = mpox_trainer::crossval::CrossvalConfig {
        data: a.data,
        split: a.split,
        folds: a.folds,
        split_seed: a.split_seed,
        positive: a.positive,
        fit,
        synthetic: None,
        synthetic_ratio: 0.0,
        only_folds: a.only_folds,
        negatives: a.sources.negatives,
        external: a.sources.external_val,
    };
    let summary = mpox_trainer::crossval::crossval(&config, &a.out, &device, true)?;
    mpox_trainer::crossval::print_table(&summary);
    eprintln!(
        "{:.0} s; per-fold reports in {}/fold-*/eval, summary in crossval.md",
        summary.seconds,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `pipeline`.
pub fn pipeline(a: PipelineArgs) -> anyhow::Result<ExitCode> {
    let defaults = if a.data.is_some() {
        ("mobilenet_v2", 224, None)
    } else {
        ("mobilenet_v2_w0.5", 96, Some(12))
    };
    let mut train = a.train.clone();
    if a.data.is_some() && train.weights.is_none() && train.arch.is_none() {
        // Real photos: ImageNet features transfer; a network trained from scratch on a few
        // hundred photos does not (docs/results.md).
        train.weights = Some(PathBuf::from("imagenet"));
    }
    let (fit, device) = train.config_with(defaults)?;
    if a.folds < 3 {
        bail!("--folds must be at least 3 (one tests, one validates, the rest train)");
    }
    let config = mpox_trainer::pipeline::PipelineConfig {
        data: a.data,
        positive: a.positive,
        fit,
        folds: a.folds,
        seed: a.train.seed,
        demo_per_class: 120,
        negatives: a.sources.negatives,
        external: a.sources.external_val,
        gan: if a.gan {
            Some(mpox_trainer::pipeline::PipelineGan {
                config: a.gan_options.config()?,
                ratio: a.synthetic_ratio,
                sampling: a.sampling.sampling()?,
            })
        } else {
            None
        },
    };
    let outcome = mpox_trainer::pipeline::pipeline(&config, &a.out, &device, true)?;
    let title = if outcome.demo {
        "Pipeline result (DEMO model, synthetic data)"
    } else {
        "Pipeline result (held-out test fold)"
    };
    print!(
        "{}",
        outcome
            .report
            .markdown(title)
            .split("## Confusion")
            .next()
            .unwrap_or_default()
    );
    if let Some(ext) = &outcome.external {
        print!(
            "{}",
            ext.markdown("External validation set")
                .split("## Confusion")
                .next()
                .unwrap_or_default()
        );
    }
    println!("model: {}", outcome.model.display());
    println!(
        "report: {}",
        outcome
            .model
            .with_file_name("eval")
            .join("report.md")
            .display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `ablate`.
pub fn ablate(a: AblateArgs) -> anyhow::Result<ExitCode> {
    let (fit, device) = a.train.config()?;
    let config = mpox_trainer::ablate::AblateConfig {
        data: a.data,
        positive: a.positive,
        folds: a.folds,
        split_seed: a.split_seed,
        fit,
        gan: a.gan.config()?,
        sampling: a.sampling.sampling()?,
        synthetic_ratios: a.synthetic_ratios,
        feature_weights: a
            .feature_weights
            .as_deref()
            .map(mpox_trainer::weights::resolve)
            .transpose()?,
        only_folds: a.only_folds,
        negatives: a.sources.negatives,
        external: a.sources.external_val,
    };
    let summary = mpox_trainer::ablate::ablate(&config, &a.out, &device)?;
    print!("{}", summary.markdown());
    eprintln!(
        "details in {}/ablation.md, plot in ablation.png",
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
