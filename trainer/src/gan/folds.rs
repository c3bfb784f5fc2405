//! The GAN of each fold, as `ablate` and `pipeline --gan` use it: trained (or resumed) on the
//! fold's training photos of the positive class only, sampled into a manifest-marked folder, and
//! evaluated against the fold's held-out photos of that class. Every step is skipped when its
//! result is already there, so an interrupted run resumes where it stopped.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::eval::{evaluate, GanEvalReport};
use super::sample::{self, checkpoint_sha256, Reference, Sampling};
use super::train::{files, gan_data, train_and_held_out, GanConfig, GanRun};
use crate::error::{Error, Result};

/// Default generated photos per real training photo of the class.
pub const RATIO: f64 = 1.0;

/// File in a sample folder holding its evaluation (as `gan eval` writes it).
pub const EVAL: &str = "eval.json";

/// The evaluation stored beside a folder of generated photos, if one was written, reads, and
/// compares sets of equal size (older reports did not: they are computed again).
pub fn read_eval(samples: &Path) -> Option<GanEvalReport> {
    let bytes = std::fs::read(samples.join(EVAL)).ok()?;
    let report: GanEvalReport = serde_json::from_slice(&bytes).ok()?;
    (report.compared > 0).then_some(report)
}

/// One fold's generated photos.
#[derive(Clone, Debug)]
pub struct FoldSamples {
    /// The fold whose training part the GAN learnt from.
    pub fold: usize,
    /// The folder of generated photos (with its manifest).
    pub dir: PathBuf,
    /// Their evaluation, when feature weights were given.
    pub eval: Option<GanEvalReport>,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct FoldGan<'a> {
    /// GAN settings.
    pub config: &'a GanConfig,
    /// The dataset.
    pub data: &'a Path,
    /// The class the GAN learns.
    pub class: &'a str,
    /// The split manifest.
    pub split: &'a Path,
    /// Generated photos per real training photo of the class.
    pub ratio: f64,
    /// ImageNet MobileNetV2 weights for the evaluation (none: not evaluated).
    pub eval_weights: Option<&'a Path>,
    /// How the photos are drawn.
    pub sampling: Sampling,
}

impl FoldGan<'_> {
    /// The GAN of `fold` in `out/fold-<fold>`: trains or resumes it (continuing a finished one
    /// when more steps are asked for), samples, evaluates. Photos sampled from another
    /// checkpoint of the run or drawn otherwise are sampled again.
    pub fn run(&self, fold: usize, out: &Path, device: &Device) -> Result<FoldSamples> {
        let dir = out.join(format!("fold-{fold}"));
        let samples = dir.join("samples");
        let ckpt = dir.join(files::CHECKPOINT);
        if !ckpt.exists() && sample::read_manifest(&samples).is_ok() {
            // The checkpoint was removed (to save space): the photos are all there is to use.
            return self.finish(fold, samples, device);
        }
        let data = gan_data(self.data, self.class, Some((self.split, fold)))?;
        // Opening the run refuses a checkpoint made with other settings or data.
        let mut run = GanRun::new(self.config, &data, &dir, device, ckpt.exists())?;
        if run.state().step < self.config.steps {
            eprintln!(
                "== GAN ({:?}) of fold {fold}: {} photos of {}",
                self.config.arch,
                data.photos.len(),
                data.class
            );
            run.train(None, true)?;
        }
        drop(run);
        let n = ((data.photos.len() as f64) * self.ratio).ceil() as usize;
        let generator = checkpoint_sha256(&ckpt)?;
        let current = sample::read_manifest(&samples).is_ok_and(|m| {
            m.checkpoint_sha256 == generator && m.files.len() == n && m.drawn_as(&self.sampling)
        });
        if !current {
            if samples.exists() {
                // Interrupted, from an earlier checkpoint of the run or drawn otherwise: sampled
                // again.
                std::fs::remove_dir_all(&samples).map_err(|e| Error::io(&samples, e))?;
            }
            let reference = self.eval_weights.map(|weights| Reference {
                training: &data.photos,
                weights,
            });
            sample::sample_with(
                &ckpt,
                n,
                fold as u64,
                &self.sampling,
                reference.as_ref(),
                &samples,
                device,
            )?;
        }
        self.finish(fold, samples, device)
    }

    /// Evaluates a fold's finished sample folder (or reads its evaluation back).
    fn finish(&self, fold: usize, samples: PathBuf, device: &Device) -> Result<FoldSamples> {
        let eval = match self.eval_weights {
            Some(weights) => Some(self.evaluate(fold, &samples, weights, device)?),
            None => None,
        };
        Ok(FoldSamples {
            fold,
            dir: samples,
            eval,
        })
    }

    /// The evaluation of a sample folder, read back when an earlier run wrote it.
    fn evaluate(
        &self,
        fold: usize,
        samples: &Path,
        weights: &Path,
        device: &Device,
    ) -> Result<GanEvalReport> {
        if let Some(report) = read_eval(samples) {
            return Ok(report);
        }
        let generated = sample::read_synthetic_folder(samples)?;
        let (training, held_out) =
            train_and_held_out(self.data, self.class, Some(self.split), Some(fold))?;
        let report = evaluate(
            &generated,
            &held_out,
            &training,
            self.config.size,
            weights,
            samples,
            device,
        )?;
        let json = serde_json::to_string_pretty(&report).expect("report serialises");
        crate::atomic::write_atomic(&samples.join(EVAL), json.as_bytes())?;
        eprintln!(
            "   fold {fold}: Fréchet distance {:.1} (real floor {:.1}), precision {:.2}, recall {:.2}, {} of {} memorised",
            report.frechet_distance,
            report.frechet_distance_real_baseline,
            report.precision,
            report.recall,
            report.memorised,
            report.generated
        );
        Ok(report)
    }
}
