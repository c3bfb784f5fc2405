//! `mpox-trainer gan train|sample|eval`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use mpox_trainer::gan::diffaug::Policy;
use mpox_trainer::gan::model::GanArch;
use mpox_trainer::gan::sample::Sampling;
use mpox_trainer::gan::train::{gan_data, GanConfig, GanRun, Loss};
use mpox_trainer::ComputeDevice;

/// GAN commands.
#[derive(Subcommand, Debug)]
pub enum GanCommand {
    /// Train a GAN on the training photos of one class (of one fold, with --split; or of a pack).
    Train(TrainArgs),
    /// Copy one fold's GAN training photos into a folder of their own that `gan train` accepts as
    /// its data: the fold's GAN can then train on a machine without the rest of the dataset.
    Pack(PackArgs),
    /// Generate photos from a GAN checkpoint, with a manifest marking them synthetic.
    Sample(SampleArgs),
    /// Fréchet distance, KID, precision/recall and memorisation of generated photos against real ones.
    Eval(EvalArgs),
}

/// Arguments of `gan train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// ImageFolder dataset.
    data: PathBuf,
    /// Class folder to learn (e.g. Monkeypox).
    #[arg(long)]
    class: String,
    /// Split manifest (with --fold): only the fold's training photos are used.
    #[arg(long, requires = "fold")]
    split: Option<PathBuf>,
    /// Fold whose test (and validation) photos are left out.
    #[arg(long, requires = "split")]
    fold: Option<usize>,
    #[command(flatten)]
    gan: GanOptions,
    /// Continue the run in --out from its checkpoint (a finished one continues to a larger
    /// --gan-steps).
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps in this invocation (resume later).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Where to train (cuda needs a build made by scripts/build-cuda.sh).
    #[arg(long, value_enum, default_value_t)]
    device: ComputeDevice,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
}

/// GAN settings shared by `gan train` and `ablate`. Unset ones take the architecture's recipe
/// (`GanConfig::recipe`).
#[derive(Args, Debug, Clone)]
pub struct GanOptions {
    /// Generator and discriminator: projected (FastGAN-style generator, discriminator on frozen
    /// ImageNet features) or dcgan (the paper's).
    #[arg(long, value_enum, default_value_t)]
    gan_arch: GanArch,
    /// Image side: 64 (the paper) or 128.
    #[arg(long, default_value_t = GanConfig::SIZE)]
    size: usize,
    /// Training steps [default: 4000 projected, 2000 dcgan].
    #[arg(long, visible_alias = "steps")]
    gan_steps: Option<usize>,
    /// Images per step [default: 16 projected, 64 dcgan].
    #[arg(long)]
    gan_batch_size: Option<usize>,
    /// Loss: bce or hinge [default: hinge projected, bce dcgan].
    #[arg(long, value_enum)]
    loss: Option<Loss>,
    /// DiffAugment on real and generated images before D: none, all, or a comma list of colour,
    /// translation, cutout [default: all projected, none dcgan].
    #[arg(long)]
    diffaug: Option<Policy>,
    /// Decay of the generator's moving average, sampled from; 0 for none [default: 0.999
    /// projected, none dcgan].
    #[arg(long)]
    ema: Option<f64>,
    /// Learning rate of both networks [default: 2e-4].
    #[arg(long)]
    gan_lr: Option<f64>,
    /// Weight of the mode-seeking term in the generator's loss (photos from distant latents
    /// pushed apart); 0 for none [default: 0].
    #[arg(long)]
    mode_seeking: Option<f64>,
    /// Seed of initialisation, noise and batches.
    #[arg(long, default_value_t = 0)]
    gan_seed: u64,
    /// A sample grid, plots and a checkpoint every this many steps.
    #[arg(long, default_value_t = GanConfig::EVERY)]
    every: usize,
    /// ImageNet MobileNetV2 weights of the projected discriminator: a file, or `imagenet` for the
    /// ones scripts/fetch-weights.sh caches.
    #[arg(long, default_value = "imagenet")]
    gan_features: PathBuf,
}

impl GanOptions {
    /// The validated GAN configuration.
    pub fn config(&self) -> anyhow::Result<GanConfig> {
        let steps = self
            .gan_steps
            .unwrap_or_else(|| GanConfig::default_steps(self.gan_arch));
        let mut c = GanConfig::recipe(self.gan_arch, steps);
        c.size = self.size;
        c.seed = self.gan_seed;
        c.every = self.every;
        if let Some(b) = self.gan_batch_size {
            c.batch_size = b;
        }
        if let Some(lr) = self.gan_lr {
            c.lr = lr;
        }
        if let Some(l) = self.loss {
            c.loss = l;
        }
        if let Some(p) = self.diffaug {
            c.diffaug = p;
        }
        if let Some(e) = self.ema {
            c.ema = (e > 0.0).then_some(e);
        }
        if let Some(m) = self.mode_seeking {
            c.mode_seeking = m;
        }
        if self.gan_arch == GanArch::Projected {
            c.features = Some(mpox_trainer::weights::resolve(&self.gan_features)?);
        }
        c.validate()?;
        Ok(c)
    }
}

/// Arguments of `gan pack`.
#[derive(Args, Debug)]
pub struct PackArgs {
    /// ImageFolder dataset the split was made on.
    data: PathBuf,
    /// Class folder the GAN learns (e.g. Monkeypox).
    #[arg(long)]
    class: String,
    /// Split manifest.
    #[arg(long)]
    split: PathBuf,
    /// Fold whose training photos are packed.
    #[arg(long)]
    fold: usize,
    /// New folder for the pack.
    #[arg(long)]
    out: PathBuf,
}

/// How a GAN's photos are drawn: `gan sample`, `pipeline --gan` and `ablate` share it.
#[derive(Args, Debug, Clone, Copy)]
pub struct SampleOptions {
    /// Factor on the latent noise's standard deviation when sampling: above 1 trades realism for
    /// variety (1 draws as in training).
    #[arg(long, default_value_t = Sampling::default().latent_scale)]
    latent_scale: f64,
    /// Candidates drawn per photo kept: above 1, each photo is the candidate inside the training
    /// photos' support (MobileNetV2 features) farthest from the photos kept before it: more
    /// variety at little cost in realism (1 keeps every drawn photo; above 1 needs --data,
    /// --split and --weights).
    #[arg(long, default_value_t = Sampling::default().select_from)]
    select_from: usize,
}

impl SampleOptions {
    /// The sampling settings, refused unless usable.
    pub fn sampling(&self) -> anyhow::Result<Sampling> {
        Ok(Sampling {
            latent_scale: self.latent_scale,
            select_from: self.select_from,
        }
        .check()?)
    }
}

/// Arguments of `gan sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// GAN checkpoint (gan.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Photos to generate.
    #[arg(long)]
    n: usize,
    /// Seed of the latent noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    sampling: SampleOptions,
    /// The dataset the GAN was trained on, or a pack of its fold (for --select-from).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split manifest the GAN used (for --select-from).
    #[arg(long)]
    split: Option<PathBuf>,
    /// ImageNet MobileNetV2 weights for --select-from's features: a file, or `imagenet` for the
    /// ones scripts/fetch-weights.sh caches.
    #[arg(long, default_value = "imagenet")]
    weights: PathBuf,
    /// Output folder (must not exist or be empty of a previous sample).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `eval`.
/// Arguments of `gan eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Folder of generated photos (with its manifest).
    generated: PathBuf,
    /// The dataset the GAN was trained on.
    data: PathBuf,
    /// Split manifest the GAN used (held-out photos are its fold's test and validation photos).
    #[arg(long)]
    split: Option<PathBuf>,
    /// ImageNet MobileNetV2 weights for the features: a file, or `imagenet` for the ones
    /// scripts/fetch-weights.sh caches.
    #[arg(long, default_value = "imagenet")]
    weights: PathBuf,
    /// Output folder for eval.json and closest.png [default: the generated folder].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs a GAN command.
pub fn run(cmd: GanCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GanCommand::Train(a) => {
            let config = a.gan.config()?;
            let device = a.device.open()?;
            let data = gan_data(&a.data, &a.class, a.split.as_deref().zip(a.fold))?;
            eprintln!(
                "training a {}-px GAN on {} photos of {}{}",
                config.size,
                data.photos.len(),
                data.class,
                data.fold
                    .map_or(String::new(), |f| format!(" (training part of fold {f})"))
            );
            let mut run = GanRun::new(&config, &data, &a.out, &device, a.resume)?;
            run.train(a.stop_after, true)?;
            let last = run.state().history.last().cloned();
            if let Some(r) = last {
                eprintln!(
                    "step {}: D loss {:.3}, G loss {:.3}, D(x) {:.3}, D(G(z)) {:.3}; plots and grids in {}",
                    r.step, r.d_loss, r.g_loss, r.d_real, r.d_fake, a.out.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        GanCommand::Pack(a) => {
            let m = mpox_trainer::gan::pack::pack(&a.data, &a.class, &a.split, a.fold, &a.out)?;
            eprintln!(
                "packed {} training photos of {} (fold {}) into {}: train there with `gan train {} --class {}`",
                m.photos.len(),
                m.class,
                m.fold,
                a.out.display(),
                a.out.display(),
                m.class
            );
            Ok(ExitCode::SUCCESS)
        }
        GanCommand::Sample(a) => {
            let sampling = a.sampling.sampling()?;
            let device = candle_core::Device::Cpu;
            // A checkpoint that is not there is the first thing to hear of, before what selection
            // needs.
            std::fs::metadata(&a.checkpoint)
                .map_err(|e| mpox_trainer::Error::io(&a.checkpoint, e))?;
            let selection = if sampling.select_from > 1 {
                let data = a.data.as_deref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--select-from keeps photos by the training photos: give the dataset the GAN was trained on (--data, with its --split) or pass --select-from 1"
                    )
                })?;
                let training = mpox_trainer::gan::sample::training_photos(
                    &a.checkpoint,
                    data,
                    a.split.as_deref(),
                    &device,
                )?;
                Some((training, mpox_trainer::weights::resolve(&a.weights)?))
            } else {
                None
            };
            let reference = selection.as_ref().map(|(training, weights)| {
                mpox_trainer::gan::sample::Reference { training, weights }
            });
            let m = mpox_trainer::gan::sample::sample_with(
                &a.checkpoint,
                a.n,
                a.seed,
                &sampling,
                reference.as_ref(),
                &a.out,
                &device,
            )?;
            eprintln!(
                "wrote {} synthetic photos of {} to {}",
                m.files.len(),
                m.class,
                a.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        GanCommand::Eval(a) => {
            let m = mpox_trainer::gan::sample::read_manifest(&a.generated)?;
            let generated = mpox_trainer::gan::sample::read_synthetic_folder(&a.generated)?;
            let (training, held_out) = mpox_trainer::gan::train::train_and_held_out(
                &a.data,
                &m.class,
                a.split.as_deref(),
                m.fold,
            )?;
            let size = image::image_dimensions(&generated[0])
                .map_err(|e| anyhow::anyhow!("{}: {e}", generated[0].display()))?
                .0 as usize;
            let out = a.out.unwrap_or_else(|| a.generated.clone());
            let report = mpox_trainer::gan::eval::evaluate(
                &generated,
                &held_out,
                &training,
                size,
                &mpox_trainer::weights::resolve(&a.weights)?,
                &out,
                &candle_core::Device::Cpu,
            )?;
            let json = serde_json::to_string_pretty(&report)?;
            mpox_trainer::atomic::write_atomic(
                &out.join(mpox_trainer::gan::folds::EVAL),
                json.as_bytes(),
            )?;
            println!(
                "{} generated and {} training photos against {} held-out ones",
                report.compared, report.compared, report.held_out
            );
            println!(
                "Fréchet distance {:.2} (real training vs held-out: {:.2}); KID {:.4} ± {:.4} (real: {:.4} ± {:.4})",
                report.frechet_distance,
                report.frechet_distance_real_baseline,
                report.kid.0,
                report.kid.1,
                report.kid_real_baseline.0,
                report.kid_real_baseline.1
            );
            println!(
                "precision {:.2}, recall {:.2} (k = {}; real training vs held-out: {:.2}, {:.2})",
                report.precision,
                report.recall,
                mpox_trainer::gan::eval::PR_NEIGHBOURS,
                report.precision_recall_real_baseline.0,
                report.precision_recall_real_baseline.1
            );
            println!(
                "spread (median distance to the k-th nearest photo of the same set, k = {}): generated {:.2}, real training {:.2}",
                mpox_trainer::gan::eval::PR_NEIGHBOURS,
                report.spread,
                report.spread_real
            );
            println!(
                "memorisation: {} of {} generated photos are near-duplicates of a training photo; median feature distance to the nearest training photo {:.2} (held-out real photos: {:.2})",
                report.memorised, report.generated, report.median_feature_distance, report.median_feature_distance_real
            );
            println!("(MobileNetV2 features: not comparable with Inception-based FID/KID.) Closest pairs: {}", out.join("closest.png").display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
