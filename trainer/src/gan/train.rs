//! GAN training: the projected GAN's recipe (hinge loss, DiffAugment, Adam β = (0, 0.99), EMA
//! generator) or the paper's DCGAN recipe (BCE loss, Adam 2e-4, β₁ 0.5); per-step losses and D
//! scores to CSV, the paper's two figures as PNG, sample grids from fixed noise, atomic
//! checkpoints and exact resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::diffaug::{self, Policy};
use super::model::{Gan, GanArch, Z_DIM};
use crate::checkpoint::{Checkpoint, Loaded};
use crate::dataset::{self, Dataset};
use crate::error::{Error, Result};
use crate::split::SplitManifest;
use crate::train::augment::rng_for;
use crate::train::optim::AdamW;

/// The adversarial loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Loss {
    /// Binary cross-entropy with the non-saturating generator loss (the paper's DCGAN).
    Bce,
    /// Hinge loss (as in SAGAN/BigGAN), often steadier on small data.
    Hinge,
}

/// Everything that defines a GAN run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GanConfig {
    /// Generator and discriminator.
    pub arch: GanArch,
    /// Image side: 64 or 128.
    pub size: usize,
    /// Training steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam learning rate of both networks.
    pub lr: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Loss.
    pub loss: Loss,
    /// DiffAugment policy (nothing: the plain DCGAN).
    pub diffaug: Policy,
    /// Decay of the generator's moving average (`None`: no EMA generator).
    pub ema: Option<f64>,
    /// Weight of the mode-seeking term (Mao et al. 2019) in the generator's loss; 0: none.
    /// Left out of the run's identity when 0, so runs from before the option still resume.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode_seeking: f64,
    /// Seed of initialisation, noise and sampling.
    pub seed: u64,
    /// A sample grid (and a checkpoint) every this many steps.
    pub every: usize,
    /// The ImageNet MobileNetV2 weights of a projected discriminator. Not part of the run's
    /// identity as a path (machines differ): the file's hash is.
    #[serde(skip)]
    pub features: Option<PathBuf>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl GanConfig {
    /// Default image side (the paper's).
    pub const SIZE: usize = 64;
    /// Default steps between sample grids and checkpoints.
    pub const EVERY: usize = 100;

    /// The recipe of `arch` with `steps` steps.
    pub fn recipe(arch: GanArch, steps: usize) -> Self {
        match arch {
            GanArch::Dcgan => Self::dcgan(steps),
            GanArch::Projected => Self::projected(steps),
        }
    }

    /// Default steps of `arch`: the projected GAN's take about 43 minutes on the 2-core machine
    /// (0.65 s a step: docs/results.md, "A GAN that learns from ~170 photos"); the DCGAN's are
    /// the earlier default.
    pub fn default_steps(arch: GanArch) -> usize {
        match arch {
            GanArch::Dcgan => 2000,
            GanArch::Projected => 4000,
        }
    }

    /// The paper's DCGAN at 64 px: BCE loss, Adam 2e-4 with β = (0.5, 0.999), batches of 64.
    pub fn dcgan(steps: usize) -> Self {
        Self {
            arch: GanArch::Dcgan,
            size: Self::SIZE,
            steps,
            batch_size: 64,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            loss: Loss::Bce,
            diffaug: Policy::none(),
            ema: None,
            mode_seeking: 0.0,
            seed: 0,
            every: Self::EVERY,
            features: None,
        }
    }

    /// The projected GAN (Sauer et al. 2021) at 64 px: hinge loss, DiffAugment (colour,
    /// translation, cutout), Adam 2e-4 with β = (0, 0.99), an EMA generator, batches of 16 (the
    /// paper's 64 cost four times the CPU time per step).
    pub fn projected(steps: usize) -> Self {
        Self {
            arch: GanArch::Projected,
            batch_size: 16,
            beta1: 0.0,
            beta2: 0.99,
            loss: Loss::Hinge,
            diffaug: Policy::all(),
            ema: Some(0.999),
            ..Self::dcgan(steps)
        }
    }

    /// Refuses settings that cannot work, before any data is read.
    pub fn validate(&self) -> Result<()> {
        super::model::check_size(self.size)?;
        if self.batch_size < 2 || self.steps == 0 || self.every == 0 {
            return Err(Error::Invalid(
                "--batch-size must be at least 2, --steps and --every at least 1".into(),
            ));
        }
        if !(self.mode_seeking >= 0.0 && self.mode_seeking.is_finite()) {
            return Err(Error::Invalid(format!(
                "--mode-seeking {} must be a finite weight of at least 0",
                self.mode_seeking
            )));
        }
        if let Some(b) = self.ema {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::Invalid(format!("--ema {b} must lie in [0, 1)")));
            }
        }
        if self.arch == GanArch::Projected {
            match &self.features {
                None => {
                    return Err(Error::Invalid(
                        "the projected GAN needs ImageNet MobileNetV2 weights (--gan-features)"
                            .into(),
                    ))
                }
                Some(p) if !p.is_file() => {
                    return Err(Error::Invalid(format!(
                        "--gan-features {}: no such file",
                        p.display()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The photos a GAN learns from: one class, training part of a fold only.
#[derive(Clone, Debug)]
pub struct GanData {
    /// The photos.
    pub photos: Vec<PathBuf>,
    /// The class.
    pub class: String,
    /// Dataset fingerprint.
    pub fingerprint: String,
    /// The fold whose training part was used (`None`: the whole class).
    pub fold: Option<usize>,
}

/// Selects the training photos of `class`: with a split, only those outside the fold's test part
/// and outside its validation fold (the next one), exactly the photos `fit --fold` trains on;
/// without one, a pack folder's photos ([`super::pack`]) or every photo of the class.
pub fn gan_data(root: &Path, class: &str, split: Option<(&Path, usize)>) -> Result<GanData> {
    let (photos, fold, fingerprint, classes) = match split {
        Some((path, fold)) => {
            let parts = SplitManifest::open(path, root, fold)?;
            let classes: Vec<String> = parts
                .manifest
                .items
                .iter()
                .map(|i| i.class.clone())
                .collect();
            let photos = parts
                .train()
                .into_iter()
                .filter(|i| i.class == class)
                .map(|i| parts.manifest.path_of(i))
                .collect();
            (
                photos,
                Some(fold),
                parts.manifest.dataset_fingerprint.clone(),
                classes,
            )
        }
        None => {
            if let Some(packed) = super::pack::read(root, class)? {
                return Ok(packed);
            }
            let ds = Dataset::scan(root)?;
            (
                ds.items
                    .iter()
                    .filter(|i| ds.class_of(i) == class)
                    .map(|i| ds.path(i))
                    .collect::<Vec<_>>(),
                None,
                ds.fingerprint(),
                ds.classes.clone(),
            )
        }
    };
    if !classes.iter().any(|c| c == class) {
        return Err(Error::Invalid(format!(
            "no class folder {class:?} in {}",
            root.display(),
        )));
    }
    if photos.len() < 2 {
        return Err(Error::Invalid(format!(
            "{} training photos of {class}: too few for a GAN",
            photos.len()
        )));
    }
    Ok(GanData {
        photos,
        class: class.into(),
        fingerprint,
        fold,
    })
}

/// One step's figures (the paper's figure 2 plots the losses, figure 3 the mean D scores).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// 1-based step.
    pub step: usize,
    /// Discriminator loss.
    pub d_loss: f64,
    /// Generator loss.
    pub g_loss: f64,
    /// Mean D(x): sigmoid of the discriminator's logit on real photos.
    pub d_real: f64,
    /// Mean D(G(z)) before the discriminator's update.
    pub d_fake: f64,
}

/// The resumable state stored in a GAN checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GanState {
    /// Configuration and data identity, to refuse resuming with other settings.
    pub identity: serde_json::Value,
    /// Steps done.
    pub step: usize,
    /// Every step so far.
    pub history: Vec<StepRecord>,
}

/// File names in a GAN run folder.
pub mod files {
    /// The checkpoint (both networks, EMA, optimisers, state).
    pub const CHECKPOINT: &str = "gan.safetensors";
    /// Per-step losses and scores.
    pub const LOG: &str = "log.csv";
    /// Generator and discriminator losses (the paper's figure 2).
    pub const LOSSES: &str = "losses.png";
    /// Mean D(x) and D(G(z)) (the paper's figure 3).
    pub const SCORES: &str = "scores.png";
}

/// Scales a photo to `[−1, 1]` CHW at `size` (centre crop of the shorter side).
pub fn to_gan_input(img: &RgbImage, size: usize) -> Vec<f32> {
    let pre = mpox_sdk::Preprocessing {
        input_size: size as u32,
        resize: size as u32,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    pre.tensor(img)
}

/// Turns generator output `[N, 3, S, S]` in [−1, 1] into images.
pub fn to_images(x: &Tensor) -> Result<Vec<RgbImage>> {
    let (n, _, h, w) = x.dims4()?;
    let data = ((x.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    Ok((0..n)
        .map(|i| {
            let base = i * 3 * plane;
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let p = y as usize * w + x as usize;
                image::Rgb(std::array::from_fn(|c| {
                    data[base + c * plane + p].round() as u8
                }))
            })
        })
        .collect())
}

/// A grid of images, `cols` across, with a 2-pixel white gutter.
pub fn grid(images: &[RgbImage], cols: usize) -> RgbImage {
    let (w, h) = images.first().map_or((1, 1), |i| i.dimensions());
    let rows = images.len().div_ceil(cols.max(1));
    let gap = 2;
    let mut out = RgbImage::from_pixel(
        cols as u32 * (w + gap) + gap,
        rows as u32 * (h + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    for (k, img) in images.iter().enumerate() {
        let (c, r) = ((k % cols) as u32, (k / cols) as u32);
        image::imageops::replace(
            &mut out,
            img,
            i64::from(gap + c * (w + gap)),
            i64::from(gap + r * (h + gap)),
        );
    }
    out
}

/// Latent vectors from a seeded generator.
pub fn noise(n: usize, rng: &mut StdRng, device: &Device) -> Result<Tensor> {
    let z: Vec<f32> = (0..n * Z_DIM)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Ok(Tensor::from_vec(z, (n, Z_DIM), device)?)
}

/// The mode-seeking term (Mao et al. 2019, "Mode seeking generative adversarial networks"):
/// the inverse of how far the images of the batch's two halves lie apart per unit of latent
/// distance, so that a generator mapping different latents to near-identical photos pays for it.
fn mode_seeking(images: &Tensor, z: &Tensor) -> Result<Tensor> {
    let h = images.dim(0)? / 2;
    let apart = |x: &Tensor| -> candle_core::Result<Tensor> {
        (x.narrow(0, 0, h)? - x.narrow(0, h, h)?)?.abs()?.mean_all()
    };
    Ok((apart(images)? / apart(z)?)?.affine(1.0, 1e-5)?.recip()?)
}

fn softplus(x: &Tensor) -> Result<Tensor> {
    // log(1 + e^x) = max(x, 0) + log(1 + e^−|x|), exact for large |x|.
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

fn sigmoid_mean(x: &Tensor) -> Result<f64> {
    let s = (x.neg()?.exp()? + 1.0)?.recip()?;
    Ok(f64::from(s.mean_all()?.to_scalar::<f32>()?))
}

/// A GAN training run.
pub struct GanRun {
    config: GanConfig,
    gan: Gan,
    opt_g: AdamW,
    opt_d: AdamW,
    reals: Vec<Vec<f32>>,
    device: Device,
    state: GanState,
    fixed_noise: Tensor,
    out: PathBuf,
}

fn named_vars(vars: &candle_nn::VarMap) -> Vec<(String, candle_core::Var)> {
    let data = vars.data().lock().expect("varmap lock");
    let mut v: Vec<(String, candle_core::Var)> = data
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl GanRun {
    /// Prepares a run in `out` (resuming from its checkpoint when `resume`).
    pub fn new(
        config: &GanConfig,
        data: &GanData,
        out: &Path,
        device: &Device,
        resume: bool,
    ) -> Result<Self> {
        config.validate()?;
        let ckpt = out.join(files::CHECKPOINT);
        if ckpt.exists() && !resume {
            return Err(Error::Invalid(format!(
                "{} already holds a GAN run: pass --resume to continue it, or choose another --out",
                out.display()
            )));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let reals = data
            .photos
            .iter()
            .map(|p| Ok(to_gan_input(&dataset::load_image(p)?, config.size)))
            .collect::<Result<Vec<_>>>()?;
        let gan = Gan::new(
            config.arch,
            config.size,
            config.ema.is_some(),
            config.seed,
            config.features.as_deref(),
            device,
        )?;
        let adam = |vars| -> Result<AdamW> {
            let mut o = AdamW::new(vec![(vars, 1.0)], 0.0)?;
            o.set_betas(config.beta1, config.beta2);
            Ok(o)
        };
        let opt_g = adam(named_vars(&gan.g_vars))?;
        let opt_d = adam(named_vars(&gan.d_vars))?;
        let features_sha256 = match &config.features {
            Some(p) if config.arch == GanArch::Projected => Some(crate::dataset::sha256_hex(
                &std::fs::read(p).map_err(|e| Error::io(p, e))?,
            )),
            _ => None,
        };
        let identity = serde_json::json!({
            "config": config,
            "features_sha256": features_sha256,
            "class": data.class,
            "fold": data.fold,
            "dataset_fingerprint": data.fingerprint,
            "photos": data.photos.len(),
        });
        let fixed_noise = noise(64, &mut StdRng::seed_from_u64(config.seed ^ 0xF1DE), device)?;
        let mut run = Self {
            config: config.clone(),
            gan,
            opt_g,
            opt_d,
            reals,
            device: device.clone(),
            state: GanState {
                identity,
                step: 0,
                history: Vec::new(),
            },
            fixed_noise,
            out: out.to_path_buf(),
        };
        if resume && ckpt.exists() {
            run.restore(&ckpt)?;
            eprintln!("resuming {} after step {}", out.display(), run.state.step);
        }
        run.rewrite_log()?;
        Ok(run)
    }

    /// The networks.
    pub fn gan(&self) -> &Gan {
        &self.gan
    }

    /// Steps done and their figures.
    pub fn state(&self) -> &GanState {
        &self.state
    }

    /// One adversarial step: a discriminator update on real and generated images, then a
    /// generator update through the (updated) discriminator.
    pub fn step(&mut self) -> Result<StepRecord> {
        let c = &self.config;
        let step = self.state.step + 1;
        let mut rng = rng_for(c.seed, step as u64, 0x6A4);
        let s = c.size;
        // Real batch: random photos, each mirrored with probability ½.
        let mut flat = Vec::with_capacity(c.batch_size * 3 * s * s);
        for _ in 0..c.batch_size {
            let img = &self.reals[rng.random_range(0..self.reals.len())];
            if rng.random_bool(0.5) {
                for row in img.chunks(s) {
                    flat.extend(row.iter().rev());
                }
            } else {
                flat.extend_from_slice(img);
            }
        }
        let real = Tensor::from_vec(flat, (c.batch_size, 3, s, s), &self.device)?;
        let z = noise(c.batch_size, &mut rng, &self.device)?;
        let fake = self.gan.g.forward_t(&z, true)?;
        let aug = |x: &Tensor, rng: &mut StdRng| -> Result<Tensor> {
            if c.diffaug.any() {
                Ok(diffaug::augment(x, c.diffaug, rng)?)
            } else {
                Ok(x.clone())
            }
        };
        // Discriminator.
        let d_real = self.gan.d.forward_t(&aug(&real, &mut rng)?, true)?;
        let d_fake = self
            .gan
            .d
            .forward_t(&aug(&fake.detach(), &mut rng)?, true)?;
        let d_loss = match c.loss {
            Loss::Bce => {
                (softplus(&d_real.neg()?)?.mean_all()? + softplus(&d_fake)?.mean_all()?)?
            }
            Loss::Hinge => {
                ((1.0 - &d_real)?.relu()?.mean_all()? + (&d_fake + 1.0)?.relu()?.mean_all()?)?
            }
        };
        let grads = d_loss.backward()?;
        self.opt_d.step(&grads, c.lr)?;
        // Generator.
        let d_gen = self.gan.d.forward_fixed(&aug(&fake, &mut rng)?, true)?;
        let mut g_loss = match c.loss {
            Loss::Bce => softplus(&d_gen.neg()?)?.mean_all()?,
            Loss::Hinge => d_gen.mean_all()?.neg()?,
        };
        if c.mode_seeking > 0.0 {
            g_loss = (g_loss + (mode_seeking(&fake, &z)? * c.mode_seeking)?)?;
        }
        let grads = g_loss.backward()?;
        self.opt_g.step(&grads, c.lr)?;
        if let Some(beta) = c.ema {
            self.gan.update_ema(ema_decay(beta, step as u64))?;
        }
        let record = StepRecord {
            step,
            d_loss: f64::from(d_loss.to_scalar::<f32>()?),
            g_loss: f64::from(g_loss.to_scalar::<f32>()?),
            d_real: sigmoid_mean(&d_real)?,
            d_fake: sigmoid_mean(&d_fake)?,
        };
        self.state.step = step;
        self.state.history.push(record.clone());
        self.append_log(&record)?;
        Ok(record)
    }

    /// Trains up to the configured number of steps (or `stop_after` more), with grids, plots and
    /// checkpoints every `every` steps and at the end.
    pub fn train(&mut self, stop_after: Option<usize>, progress: bool) -> Result<()> {
        let total = self.config.steps;
        let bar = if progress {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "gan [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_position(self.state.step as u64);
            b
        } else {
            ProgressBar::hidden()
        };
        let start = Instant::now();
        let mut done = 0;
        while self.state.step < total && stop_after.is_none_or(|n| done < n) {
            let r = self.step()?;
            done += 1;
            bar.inc(1);
            bar.set_message(format!(
                "D {:.3} G {:.3} D(x) {:.2} D(G(z)) {:.2}, {:.1} img/s",
                r.d_loss,
                r.g_loss,
                r.d_real,
                r.d_fake,
                (done * self.config.batch_size) as f64 / start.elapsed().as_secs_f64()
            ));
            if r.step.is_multiple_of(self.config.every) || r.step == total {
                self.snapshot()?;
            }
        }
        bar.finish_and_clear();
        if !self.state.step.is_multiple_of(self.config.every) && self.state.step != total {
            self.snapshot()?;
        }
        Ok(())
    }

    /// Sample grid from the fixed noise, the two figures, and the checkpoint.
    fn snapshot(&self) -> Result<()> {
        let imgs = to_images(&self.gan.sampler().forward_t(&self.fixed_noise, false)?)?;
        let path = self.out.join(format!("samples-{:06}.png", self.state.step));
        let g = grid(&imgs, 8);
        crate::atomic::write_atomic_with(&path, |tmp| {
            g.save_with_format(tmp, image::ImageFormat::Png)
                .map_err(|e| crate::atomic::image_error(tmp, e))
        })?;
        self.plots()?;
        self.checkpoint()
    }

    fn plots(&self) -> Result<()> {
        let h = &self.state.history;
        let series = |f: &dyn Fn(&StepRecord) -> f64| -> Vec<(f64, f64)> {
            h.iter().map(|r| (r.step as f64, f(r))).collect()
        };
        crate::plots::line_chart(
            &self.out.join(files::LOSSES),
            "Generator and discriminator loss",
            "step",
            "loss",
            &[
                ("D loss", series(&|r| r.d_loss)),
                ("G loss", series(&|r| r.g_loss)),
            ],
        )?;
        crate::plots::line_chart(
            &self.out.join(files::SCORES),
            "Discriminator scores",
            "step",
            "mean score",
            &[
                ("D(x)", series(&|r| r.d_real)),
                ("D(G(z))", series(&|r| r.d_fake)),
            ],
        )
    }

    fn append_log(&self, r: &StepRecord) -> Result<()> {
        let path = self.out.join(files::LOG);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(
            f,
            "{},{:.6},{:.6},{:.6},{:.6}",
            r.step, r.d_loss, r.g_loss, r.d_real, r.d_fake
        )
        .map_err(|e| Error::io(&path, e))
    }

    /// Rewrites the CSV from the state, dropping rows a killed run wrote after its last checkpoint.
    fn rewrite_log(&self) -> Result<()> {
        let mut csv = String::from("step,d_loss,g_loss,d_real,d_fake\n");
        for r in &self.state.history {
            csv.push_str(&format!(
                "{},{:.6},{:.6},{:.6},{:.6}\n",
                r.step, r.d_loss, r.g_loss, r.d_real, r.d_fake
            ));
        }
        crate::atomic::write_atomic(&self.out.join(files::LOG), csv.as_bytes())
    }

    /// Writes networks, EMA, optimiser moments and state into one checkpoint, atomically.
    pub fn checkpoint(&self) -> Result<()> {
        let mut c = Checkpoint::new();
        c.vars(Some("g"), &self.gan.g_vars)
            .vars(Some("d"), &self.gan.d_vars);
        if let Some((_, ema)) = &self.gan.ema {
            c.vars(Some("ema"), ema);
        }
        c.tensors(Some("opt_g"), self.opt_g.state())
            .tensors(Some("opt_d"), self.opt_d.state())
            .state(STATE, &self.state)
            .meta("mpoxscreen.gan_size", self.config.size.to_string())
            .meta(
                "mpoxscreen.gan_arch",
                format!("{:?}", self.config.arch).to_lowercase(),
            )
            .write(&self.out.join(files::CHECKPOINT))
    }

    fn restore(&mut self, path: &Path) -> Result<()> {
        let c = read_checkpoint(path, &self.device)?;
        let state: GanState = c.state(STATE)?;
        c.same_run(
            &without_length(&state.identity),
            &without_length(&self.state.identity),
        )?;
        c.load_vars("g", &self.gan.g_vars)?;
        c.load_vars("d", &self.gan.d_vars)?;
        if let Some((_, ema)) = &self.gan.ema {
            c.load_vars("ema", ema)?;
        }
        let steps = state.step as u64;
        self.opt_g.load_state(&c.prefixed("opt_g"), steps)?;
        self.opt_d.load_state(&c.prefixed("opt_d"), steps)?;
        self.state.step = state.step;
        self.state.history = state.history;
        Ok(())
    }
}

/// A run's identity without its number of steps: nothing in a step depends on the total (no
/// learning-rate schedule; the EMA's ramp counts steps done), so a finished run continues
/// when asked for more steps, to the same weights as a run asked for them from the start.
fn without_length(identity: &serde_json::Value) -> serde_json::Value {
    let mut identity = identity.clone();
    if let Some(config) = identity.get_mut("config").and_then(|c| c.as_object_mut()) {
        config.remove("steps");
    }
    identity
}

/// The checkpoint's metadata entry holding the run state ([`GanState`]).
pub const STATE: &str = "mpoxscreen.gan_state";

/// A GAN checkpoint, read onto `device`.
pub fn read_checkpoint(path: &Path, device: &Device) -> Result<Loaded> {
    Loaded::read(path, device, STATE, "a GAN checkpoint")
}

/// For `gan eval`: the training photos of `class` (what the generator saw) and the held-out ones
/// (the fold's test and validation photos; without a split, every photo is "training").
pub fn train_and_held_out(
    root: &Path,
    class: &str,
    split: Option<&Path>,
    fold: Option<usize>,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    match (split, fold) {
        (Some(path), Some(fold)) => {
            let training = gan_data(root, class, Some((path, fold)))?.photos;
            let m = SplitManifest::load(path)?;
            let held = m
                .items
                .iter()
                .filter(|i| i.class == class && !training.contains(&m.path_of(i)))
                .map(|i| m.path_of(i))
                .collect();
            Ok((training, held))
        }
        (None, None) => Err(Error::Invalid(
            "the generator was trained on every photo of its class: no held-out photos to compare with (train it with --split/--fold)".into(),
        )),
        _ => Err(Error::Invalid(
            "pass the --split the generator was trained with".into(),
        )),
    }
}

/// The EMA decay used after `step` updates: `beta`, but no more than `(1 + step) / (10 + step)`.
///
/// A plain 0.999 would still weigh the random initial generator at 0.999⁴⁰⁰ = 67 % after 400
/// steps (its samples were flat grey); the ramp lets the average follow early training.
pub fn ema_decay(beta: f64, step: u64) -> f64 {
    let step = step as f64;
    beta.min((1.0 + step) / (10.0 + step))
}

#[cfg(test)]
mod tests {
    use super::ema_decay;

    #[test]
    fn mode_seeking_is_the_inverse_distance_ratio() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        // Four 1×1×2 images: the halves differ by 0.5 in every pixel, their latents by 2 in each.
        let images = Tensor::from_vec(
            vec![0f32, 1.0, 0.2, 0.3, 0.5, 1.5, 0.7, 0.8],
            (4, 1, 1, 2),
            &dev,
        )
        .unwrap();
        let z = Tensor::from_vec(
            vec![1f32, -1.0, 0.0, 0.0, 3.0, 1.0, 2.0, -2.0],
            (4, 2),
            &dev,
        )
        .unwrap();
        let got = super::mode_seeking(&images, &z)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got - 1.0 / (0.25 + 1e-5)).abs() < 1e-3, "{got}");
        // Identical photos from different latents: the term is as large as it gets (1 / 1e-5).
        let same = Tensor::ones((4, 1, 1, 2), candle_core::DType::F32, &dev).unwrap();
        let got = super::mode_seeking(&same, &z)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got - 1e5).abs() < 1.0, "{got}");
    }

    #[test]
    fn ema_decay_ramps_up_to_beta() {
        assert!((ema_decay(0.999, 0) - 0.1).abs() < 1e-12);
        assert!((ema_decay(0.999, 90) - 0.91).abs() < 1e-12);
        assert_eq!(ema_decay(0.999, 100_000), 0.999);
        // After 400 steps the initial weights' share is small (it was 67 % without the ramp).
        let share: f64 = (1..=400).map(|t| ema_decay(0.999, t)).product();
        assert!(share < 1e-3, "{share}");
    }
}
