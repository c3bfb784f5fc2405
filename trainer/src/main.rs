//! `mpox-trainer`: the command line. Parsing and dispatch only; the work lives in the library.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use mpox_sdk::contract::ModelMeta;
use mpox_sdk::{Screener, ScreenerOptions};
use mpox_trainer::models::{Arch, Network, DEFAULT_SEED};
use mpox_trainer::train::data::DataSource;
use mpox_trainer::train::{files, FitConfig, RunOptions, Unfreeze};

#[derive(Parser, Debug)]
#[command(
    name = "mpox-trainer",
    version,
    about = "Train, export and check mpox screening models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Export a network (random, pretrained or trained weights) as a self-describing ONNX file.
    Export(ExportArgs),
    /// Compare the candle network with the exported file run by the SDK, image by image.
    Check(CheckArgs),
    /// Screen photos with an exported model through the SDK.
    Screen(ScreenArgs),
    /// Write a small synthetic ImageFolder dataset (cartoon skin photos) for demos and tests.
    Synth(SynthArgs),
    /// Audit an ImageFolder dataset: counts, sizes, formats, unreadable files, duplicates, label conflicts.
    Audit(AuditArgs),
    /// Write a duplicate- and patient-aware stratified k-fold split manifest.
    Split(SplitArgs),
    /// Fine-tune (or train from scratch) a classifier, calibrate it on validation data and export it.
    Fit(FitArgs),
    /// Evaluate an exported model through the SDK: metrics, confusion matrix, calibration, report and plots.
    Eval(EvalArgs),
    /// k-fold cross-validation on duplicate-aware folds: train, calibrate and test every fold; mean ± std.
    Crossval(CrossvalArgs),
    /// The whole job: audit → split → fit → calibrate → export → evaluate (a demo set without --data).
    Pipeline(PipelineArgs),
    /// The GAN that creates extra mpox photos: train, sample, evaluate.
    #[command(subcommand)]
    Gan(cli::gan::GanCommand),
}

#[derive(Args, Debug)]
struct EvalArgs {
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
    /// Print the metrics as one JSON object.
    #[arg(long)]
    json: bool,
    /// Folder for report.md, eval.json and the plots [default: <model>-eval beside the model].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CrossvalArgs {
    /// ImageFolder dataset.
    data: PathBuf,
    #[command(flatten)]
    train: TrainArgs,
    /// Number of folds of a new split.
    #[arg(long, default_value_t = 5)]
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

#[derive(Args, Debug)]
struct PipelineArgs {
    /// ImageFolder dataset; without it a small synthetic demo set is generated (and the model is a demo).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    train: TrainArgs,
    /// Class mapped to `mpox` (binary screening).
    #[arg(long)]
    positive: Option<String>,
    /// Folds of the split (fold 0 tests, fold 1 validates).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Output folder.
    #[arg(long, default_value = "runs/pipeline")]
    out: PathBuf,
}

/// Training settings shared by `fit`, `crossval`, `pipeline` and `ablate`.
#[derive(Args, Debug, Clone)]
struct TrainArgs {
    /// mobilenet_v2, mobilenet_v2_w<WIDTH> or resnet18 [default: mobilenet_v2; mobilenet_v2_w0.5 for the demo set].
    #[arg(long)]
    arch: Option<String>,
    /// torchvision-named pretrained weights (safetensors or .pth); without them the network trains from scratch.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Side of the square network input [default: 224; 96 for the demo set].
    #[arg(long)]
    input_size: Option<u32>,
    /// Photos per training step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Fine-tuning epochs (upper bound; early stopping may end sooner). Default: 8 pretrained, 30 from scratch.
    #[arg(long)]
    epochs: Option<usize>,
    /// Head-only warm-up epochs on cached backbone features. Default: 3 pretrained, 0 from scratch.
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Backbone stages trained after the warm-up: `all` or a number of final stages. Default: 5 (MobileNetV2) or 3 (ResNet-18) pretrained, all from scratch.
    #[arg(long)]
    unfreeze: Option<String>,
    /// Learning rate of the head (base rate).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Fine-tuning epochs without a better validation loss before stopping.
    #[arg(long, default_value_t = 5)]
    patience: usize,
    /// Seed of initialisation, augmentation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the photos as they are (no augmentation).
    #[arg(long)]
    no_augment: bool,
    /// Sensitivity the operating threshold must reach on validation data.
    #[arg(long, default_value_t = 0.95)]
    target_sensitivity: f64,
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
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
        let mut c = FitConfig::new(arch, self.weights.clone());
        c.input_size = self.input_size.unwrap_or(defaults.1);
        if let Some(e) = defaults.2 {
            c.epochs = e;
        }
        c.batch_size = self.batch_size;
        if let Some(e) = self.epochs {
            c.epochs = e;
        }
        if let Some(w) = self.warmup_epochs {
            c.warmup_epochs = w;
        }
        if let Some(u) = &self.unfreeze {
            c.unfreeze = match u.as_str() {
                "all" => Unfreeze::All,
                n => Unfreeze::Last(n.parse().map_err(|_| {
                    anyhow::anyhow!("--unfreeze takes `all` or a number of stages, not {n:?}")
                })?),
            };
        }
        c.lr = self.lr;
        c.patience = self.patience;
        c.seed = self.seed;
        if self.no_augment {
            c.augment = None;
        }
        c.target_sensitivity = self.target_sensitivity;
        c.validate()?;
        Ok((c, mpox_trainer::device(&self.device)?))
    }
}

#[derive(Args, Debug)]
struct FitArgs {
    /// ImageFolder dataset (one sub-folder per class).
    data: PathBuf,
    #[command(flatten)]
    train: TrainArgs,
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
    /// Generated photos per real training photo.
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

/// Near-duplicate detection settings shared by `audit` and `split`.
#[derive(Args, Debug, Clone)]
struct NearArgs {
    /// Largest perceptual-hash distance (of 64 bits) at which two photos are compared closely.
    #[arg(long, value_name = "N", default_value_t = mpox_trainer::audit::DEFAULT_NEAR_THRESHOLD)]
    near_threshold: u32,
    /// Smallest aligned correlation confirming a near-duplicate (-1: the hash alone decides).
    #[arg(long, value_name = "R", default_value_t = mpox_trainer::audit::DEFAULT_MIN_CORRELATION,
        allow_negative_numbers = true)]
    min_correlation: f64,
    /// Do not match mirror images.
    #[arg(long)]
    no_mirror: bool,
}

impl NearArgs {
    fn config(&self) -> anyhow::Result<mpox_trainer::audit::AuditConfig> {
        if self.near_threshold > 64 {
            bail!("--near-threshold is a distance between 64-bit hashes: 0 to 64");
        }
        if !(-1.0..=1.0).contains(&self.min_correlation) {
            bail!("--min-correlation must lie in [-1, 1]");
        }
        Ok(mpox_trainer::audit::AuditConfig {
            near_threshold: self.near_threshold,
            min_correlation: self.min_correlation,
            mirror: !self.no_mirror,
            progress: true,
        })
    }
}

#[derive(Args, Debug)]
struct AuditArgs {
    /// Dataset folder: DATA/<class>/<images>.
    data: PathBuf,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    near: NearArgs,
}

#[derive(Args, Debug)]
struct SplitArgs {
    /// Dataset folder: DATA/<class>/<images>.
    data: PathBuf,
    /// Number of folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Seed of the assignment.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Class folder that is `mpox`; every other class becomes `not_mpox`.
    #[arg(long, value_name = "CLASS")]
    positive: Option<String>,
    /// Regex whose first group is the patient id in a file name.
    #[arg(long, value_name = "RE", default_value = mpox_trainer::split::DEFAULT_PATIENT_REGEX)]
    patient_regex: String,
    #[command(flatten)]
    near: NearArgs,
    /// Output manifest (JSON).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Output folder (one sub-folder per class).
    #[arg(long)]
    out: PathBuf,
    /// Photos per class.
    #[arg(long, default_value_t = 60)]
    per_class: usize,
    /// Side of each photo in pixels.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Seed of the generator.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

/// Where a network's weights come from.
#[derive(Args, Debug, Clone)]
struct WeightArgs {
    /// torchvision-named weights (safetensors or .pth); a mismatched classifier head is ignored.
    #[arg(long, value_name = "FILE", conflicts_with = "checkpoint")]
    weights: Option<PathBuf>,
    /// A checkpoint written by `fit` (safetensors with a JSON model card beside it).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Seed of the random initialisation (of the whole network, or of the head with --weights).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// mobilenet_v2, mobilenet_v2_w<WIDTH> or resnet18 (read from the checkpoint's card when omitted).
    #[arg(long)]
    arch: Option<String>,
    #[command(flatten)]
    weights: WeightArgs,
    /// Class labels in logit order, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "not_mpox,mpox")]
    labels: Vec<String>,
    /// Side of the square network input.
    #[arg(long, default_value_t = 224)]
    input_size: u32,
    /// Output model file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The exported model.
    model: PathBuf,
    /// Folder of images to compare on.
    #[arg(long)]
    images: PathBuf,
    #[command(flatten)]
    weights: WeightArgs,
}

#[derive(Args, Debug)]
struct ScreenArgs {
    /// The exported model.
    model: PathBuf,
    /// Photos to screen.
    #[arg(required = true)]
    photos: Vec<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Expected sha256 of the model file.
    #[arg(long)]
    sha256: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Export(a) => export(a),
        Command::Check(a) => check(a),
        Command::Screen(a) => screen(a),
        Command::Synth(a) => {
            mpox_trainer::synthetic::write_dataset(&a.out, a.per_class, a.size, a.seed)?;
            eprintln!(
                "wrote {} synthetic photos per class to {} (a demo dataset, not medical data)",
                a.per_class,
                a.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(a) => audit(a),
        Command::Split(a) => split(a),
        Command::Fit(a) => fit(a),
        Command::Eval(a) => eval(a),
        Command::Crossval(a) => crossval(a),
        Command::Pipeline(a) => pipeline(a),
        Command::Gan(c) => cli::gan::run(c),
    }
}

fn fit(a: FitArgs) -> anyhow::Result<ExitCode> {
    let (config, device) = a.train.config()?;
    let source = DataSource {
        root: a.data.clone(),
        split: a.split.clone().zip(a.fold),
        positive: a.positive.clone(),
        seed: config.seed,
        synthetic: a.synthetic.clone(),
        synthetic_ratio: a.synthetic_ratio,
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

fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let screener = Screener::from_path(&a.model, ScreenerOptions::default())
        .with_context(|| format!("loading {}", a.model.display()))?;
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
    let title = match a.fold {
        Some(f) => format!("Evaluation on fold {f} test photos"),
        None => format!("Evaluation on {}", a.data.display()),
    };
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

fn crossval(a: CrossvalArgs) -> anyhow::Result<ExitCode> {
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

fn pipeline(a: PipelineArgs) -> anyhow::Result<ExitCode> {
    let defaults = if a.data.is_some() {
        ("mobilenet_v2", 224, None)
    } else {
        ("mobilenet_v2_w0.5", 96, Some(12))
    };
    let (fit, device) = a.train.config_with(defaults)?;
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

fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let report = mpox_trainer::audit::audit(&a.data, &a.near.config()?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn split(a: SplitArgs) -> anyhow::Result<ExitCode> {
    if a.folds < 2 {
        bail!("--folds must be at least 2");
    }
    regex::Regex::new(&a.patient_regex).context("--patient-regex")?;
    let config = mpox_trainer::split::SplitConfig {
        folds: a.folds,
        seed: a.seed,
        positive: a.positive.clone(),
        patient_regex: a.patient_regex.clone(),
        audit: a.near.config()?,
    };
    let manifest = mpox_trainer::split::split(&a.data, &config)?;
    manifest.save(&a.out)?;
    print!("{}", manifest.summary());
    eprintln!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds the network and loads its weights; returns the checkpoint's model card if there is one.
fn build_network(
    arch: Arch,
    classes: usize,
    w: &WeightArgs,
    device: &Device,
) -> anyhow::Result<Network> {
    let net = Network::new(arch, classes, w.seed, device)?;
    if let Some(path) = &w.weights {
        let report = net.load_weights(path)?;
        eprintln!(
            "loaded {} tensors from {}{}",
            report.loaded,
            path.display(),
            if report.head_kept.is_empty() {
                String::new()
            } else {
                format!("; new {classes}-class head (seed {})", w.seed)
            }
        );
    } else if let Some(path) = &w.checkpoint {
        let report = net.load_checkpoint(path)?;
        eprintln!("loaded {} tensors from {}", report.loaded, path.display());
    }
    Ok(net)
}

/// The model card stored beside a checkpoint (`model.safetensors` → `model.json`).
fn read_card(checkpoint: &Path) -> anyhow::Result<Option<ModelMeta>> {
    let card = checkpoint.with_extension("json");
    if !card.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&card).with_context(|| format!("reading {}", card.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("parsing model card {}", card.display())
    })?))
}

fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let card = match &a.weights.checkpoint {
        Some(c) => read_card(c)?,
        None => None,
    };
    let meta = match (&card, &a.arch) {
        (Some(card), Some(arch)) if *arch != card.arch => {
            bail!(
                "--arch {arch} contradicts the checkpoint's card ({})",
                card.arch
            )
        }
        (Some(card), _) => ModelMeta {
            created: mpox_trainer::now_rfc3339(),
            trainer_version: mpox_trainer::VERSION.into(),
            ..card.clone()
        },
        (None, Some(arch)) => {
            let arch: Arch = arch.parse()?;
            if a.labels.len() < 2 {
                bail!("--labels needs at least two labels");
            }
            let mut meta = mpox_trainer::untrained_meta(arch, a.labels.clone(), a.input_size);
            if a.weights.weights.is_none() && a.weights.checkpoint.is_none() {
                meta.dataset_fingerprint = format!("random-init:seed={}", a.weights.seed);
            }
            meta
        }
        (None, None) => bail!("--arch is required unless the checkpoint has a model card"),
    };
    let arch: Arch = meta.arch.parse()?;
    let net = build_network(arch, meta.labels.len(), &a.weights, &Device::Cpu)?;
    mpox_trainer::onnx::write(&net, &meta, &a.out)?;
    let bytes = std::fs::read(&a.out)?;
    eprintln!(
        "wrote {} ({} bytes, sha256 {})",
        a.out.display(),
        bytes.len(),
        mpox_sdk::hex(&sha2_digest(&bytes))
    );
    Ok(ExitCode::SUCCESS)
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let screener = Screener::from_path(&a.model, ScreenerOptions::default())
        .with_context(|| format!("loading {}", a.model.display()))?;
    let meta = &screener.info().meta;
    let arch: Arch = meta.arch.parse()?;
    let net = build_network(arch, meta.labels.len(), &a.weights, &Device::Cpu)?;
    let parity = mpox_trainer::check::parity_dir(&net, &screener, &a.images)?;
    for p in &parity.images {
        println!(
            "{}\tmax_abs_diff={:.3e}\tcandle={:?}\tsdk={:?}",
            p.file.display(),
            p.max_abs_diff,
            p.candle,
            p.sdk
        );
    }
    println!(
        "max_abs_diff={:.3e} rel_diff={:.3e}",
        parity.max_abs_diff, parity.rel_diff
    );
    Ok(ExitCode::SUCCESS)
}

fn screen(a: ScreenArgs) -> anyhow::Result<ExitCode> {
    let options = ScreenerOptions {
        expected_sha256: a.sha256.clone(),
        ..Default::default()
    };
    let screener = Screener::from_path(&a.model, options)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let mut failures = 0;
    for photo in &a.photos {
        let result = std::fs::read(photo)
            .map_err(|e| mpox_sdk::Error::Io {
                path: photo.clone(),
                source: e,
            })
            .and_then(|bytes| screener.screen(&bytes));
        match result {
            Ok(s) => {
                if a.json {
                    let probabilities: serde_json::Map<String, serde_json::Value> = s
                        .probabilities
                        .iter()
                        .map(|c| (c.label.clone(), serde_json::json!(c.probability)))
                        .collect();
                    let quality: Vec<&str> = s.quality.iter().map(|q| q.code()).collect();
                    println!(
                        "{}",
                        serde_json::json!({
                            "file": photo.display().to_string(),
                            "probabilities": probabilities,
                            "verdict": s.verdict.code(),
                            "quality": quality,
                            "latency_ms": s.latency_ms,
                        })
                    );
                } else {
                    let quality: Vec<&str> = s.quality.iter().map(|q| q.code()).collect();
                    println!(
                        "{}\t{}\tp(mpox)={:.3}\t{:.1} ms{}",
                        photo.display(),
                        s.verdict.code(),
                        s.probability_mpox,
                        s.latency_ms,
                        if quality.is_empty() {
                            String::new()
                        } else {
                            format!("\tquality: {}", quality.join(", "))
                        }
                    );
                }
            }
            Err(e) => {
                failures += 1;
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"file": photo.display().to_string(), "error": e.to_string()})
                    );
                } else {
                    eprintln!("{}: {e}", photo.display());
                }
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
