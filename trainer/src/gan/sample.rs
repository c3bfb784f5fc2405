//! Folders of generated photos and their manifest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the manifest inside a folder of generated photos.
pub const MANIFEST: &str = "manifest.json";

/// What a folder of generated photos says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticManifest {
    /// Always true: marks every file here as generated, never a real photo.
    pub synthetic: bool,
    /// sha256 of the generator checkpoint that produced the photos.
    pub checkpoint_sha256: String,
    /// Seed of the latent noise.
    pub seed: u64,
    /// The class the generator was trained on.
    pub class: String,
    /// Fingerprint of the dataset the generator was trained on.
    pub dataset_fingerprint: String,
    /// The split fold whose training part the generator saw (`None`: trained without a split).
    pub fold: Option<usize>,
    /// Factor on the latent noise's standard deviation (1: as in training; above 1 trades
    /// realism for variety).
    #[serde(default = "unit_scale", skip_serializing_if = "is_unit_scale")]
    pub latent_scale: f64,
    /// Candidates drawn per kept photo (1: every drawn photo kept; see [`super::select`]).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub select_from: usize,
    /// File names (relative to the folder), in order.
    pub files: Vec<String>,
}

/// Latent scale of the photos `ablate` and `pipeline --gan` add (and `gan sample`'s default).
/// Fold 0's default GAN at step 4000, 167 photos against 111 held-out ones, seeds 0, 1 and 2
/// (docs/results.md): scale 1 gave recall 0.18/0.23/0.23, precision 0.76/0.69/0.74, Fréchet
/// distance 166.2/169.5/168.4; 1.25 gave recall 0.24/0.26/0.31 (higher on every seed), precision
/// 0.71/0.64/0.74, Fréchet distance 167.1/173.6/170.3 (floor 142.6), KID 0.027 against 0.036;
/// 1.15, 1.35, 1.5 and 2 gave less recall than 1.25. Not confirmed on fold 1 (seeds 0, 1):
/// recall 0.18/0.23 at 1 against 0.22/0.21 at 1.25, Fréchet distance 169.2/174.1 against
/// 186.7/189.4 (floor 138.0). With 1 of 8 kept ([`SELECT_FROM`]), all five ablation folds
/// (seed = fold): scale 1 gave recall 0.37/0.44/0.39/0.29/0.33, precision 0.62-0.68, 1.31-1.32x
/// the Fréchet floor; 1.25 gave recall 0.43/0.45/0.40/0.36/0.34, precision 0.56-0.64,
/// 1.32-1.35x: only 1.25 keeps recall at 0.3 or above on every fold.
pub const LATENT_SCALE: f64 = 1.25;

/// Candidates drawn per photo kept by `ablate` and `pipeline --gan` (and `gan sample`'s
/// default), the kept ones chosen by [`super::select::spread`]. The default GAN at step 4000,
/// latent scale 1.25, 167/166 photos against each fold's held-out photos, seed = fold
/// (docs/results.md): every drawn photo kept gave recall 0.24 and 0.21 on folds 0 and 1; 1 of 4
/// gave recall 0.37, 0.38 and 0.22 on folds 0, 1 and 2 (fold 2 seeds 0/1: 0.23/0.28; precision
/// 0.72/0.71/0.66, Fréchet distance 1.21-1.30x the real-vs-real floor), failing the 0.3 target
/// on fold 2; 1 of 6, recall 0.42 (fold 0) and 0.35 (fold 2), precision 0.62/0.67; 1 of 8,
/// recall 0.43/0.45/0.40, precision 0.57/0.61/0.64, Fréchet distance 1.33/1.35/1.32x the floor
/// (target 1.5x), and in the ablation folds 3/4 recall 0.36/0.34, precision 0.56/0.59, 1.35/1.34x:
/// the margin over 0.3 on every fold is worth the precision it costs.
pub const SELECT_FROM: usize = 8;

/// How a GAN's photos are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Factor on the latent noise's standard deviation (1: as in training; above 1 trades
    /// realism for variety).
    pub latent_scale: f64,
    /// Candidates drawn per kept photo (1: every drawn photo kept; above 1, each photo is the
    /// realistic candidate farthest from those kept before it, see [`super::select`]).
    pub select_from: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            latent_scale: LATENT_SCALE,
            select_from: SELECT_FROM,
        }
    }
}

impl Sampling {
    /// Drawn as in training, every photo kept.
    pub fn plain() -> Self {
        Sampling {
            latent_scale: 1.0,
            select_from: 1,
        }
    }

    /// `self` when its values can be used.
    pub fn check(&self) -> Result<Self> {
        check_latent_scale(self.latent_scale)?;
        if self.select_from == 0 {
            return Err(Error::Invalid(
                "--select-from 0: draw at least one candidate per photo".into(),
            ));
        }
        Ok(*self)
    }

    /// Refuses selection (`select_from` above 1) without feature weights to select by: checked
    /// before long runs that sample late.
    pub fn check_selectable(&self, weights: Option<&Path>) -> Result<()> {
        if self.select_from > 1 && weights.is_none() {
            return Err(Error::Invalid(format!(
                "--select-from {} keeps generated photos by their MobileNetV2 features: give feature weights (--gan-features) or pass --select-from 1",
                self.select_from
            )));
        }
        Ok(())
    }
}

/// What selection compares candidates with: the generator's training photos, in the feature
/// space of the evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Reference<'a> {
    /// The photos the generator learnt from.
    pub training: &'a [PathBuf],
    /// ImageNet MobileNetV2 weights for the features.
    pub weights: &'a Path,
}

/// `latent_scale` itself when it is a positive number (checked before long runs that sample late).
pub fn check_latent_scale(latent_scale: f64) -> Result<f64> {
    if latent_scale.is_finite() && latent_scale > 0.0 {
        Ok(latent_scale)
    } else {
        Err(Error::Invalid(format!(
            "latent scale {latent_scale}: must be a positive number"
        )))
    }
}

fn unit_scale() -> f64 {
    1.0
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_unit_scale(s: &f64) -> bool {
    *s == 1.0
}

impl SyntheticManifest {
    /// What made these photos: the generator, and how they were drawn when not plainly (so a
    /// fold trained on them can tell when they were drawn again).
    pub fn origin(&self) -> String {
        let mut origin = self.checkpoint_sha256.clone();
        if !is_unit_scale(&self.latent_scale) {
            origin += &format!(" latent-scale {}", self.latent_scale);
        }
        if !is_one(&self.select_from) {
            origin += &format!(" select-from {}", self.select_from);
        }
        origin
    }

    /// Whether these photos were drawn as `sampling` draws them.
    pub fn drawn_as(&self, sampling: &Sampling) -> bool {
        self.latent_scale == sampling.latent_scale && self.select_from == sampling.select_from
    }
}

/// Reads a folder's manifest, refusing folders that are not marked synthetic.
pub fn read_manifest(dir: &Path) -> Result<SyntheticManifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let m: SyntheticManifest = serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{}: not a synthetic-image manifest: {e}",
            path.display()
        ))
    })?;
    if !m.synthetic {
        return Err(Error::Invalid(format!(
            "{} does not mark its photos as synthetic",
            path.display()
        )));
    }
    Ok(m)
}

/// The generated photos of a folder, in manifest order.
pub fn read_synthetic_folder(dir: &Path) -> Result<Vec<PathBuf>> {
    let m = read_manifest(dir)?;
    let files: Vec<PathBuf> = m.files.iter().map(|f| dir.join(f)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::Invalid(format!(
            "{} is listed in the manifest but missing",
            missing.display()
        )));
    }
    Ok(files)
}

/// Generates `n` photos from a GAN checkpoint (its EMA generator when it has one) into `out`,
/// with a manifest that marks them synthetic and names the checkpoint, seed, class and fold.
pub fn sample(
    checkpoint: &Path,
    n: usize,
    seed: u64,
    out: &Path,
    device: &candle_core::Device,
) -> Result<SyntheticManifest> {
    sample_with(checkpoint, n, seed, &Sampling::plain(), None, out, device)
}

/// [`sample`] drawn as `sampling` says; selection (`select_from` above 1) compares the
/// candidates with `reference`'s training photos and needs it.
pub fn sample_with(
    checkpoint: &Path,
    n: usize,
    seed: u64,
    sampling: &Sampling,
    reference: Option<&Reference>,
    out: &Path,
    device: &candle_core::Device,
) -> Result<SyntheticManifest> {
    use rand::SeedableRng;
    sampling.check()?;
    sampling.check_selectable(reference.map(|r| r.weights))?;
    let reference = reference.filter(|_| sampling.select_from > 1);
    let c = super::train::read_checkpoint(checkpoint, device)?;
    let state: super::train::GanState = c.state(super::train::STATE)?;
    let id = &state.identity;
    let config: super::train::GanConfig =
        serde_json::from_value(id["config"].clone()).map_err(|e| {
            Error::Invalid(format!(
                "{}: unreadable GAN settings: {e}",
                checkpoint.display()
            ))
        })?;
    let vars = candle_nn::VarMap::new();
    let g = super::model::Generator::new(
        config.arch,
        config.size,
        candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, device),
    )?;
    let prefix = if c.has_prefix("ema") { "ema" } else { "g" };
    c.load_vars(prefix, &vars)?;
    if out.join(MANIFEST).exists() {
        return Err(Error::Invalid(format!(
            "{} already holds generated photos; choose another --out",
            out.display()
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let drawn = n * sampling.select_from;
    let mut images = Vec::with_capacity(drawn);
    while images.len() < drawn {
        let batch = (drawn - images.len()).min(64);
        let z = (super::train::noise(batch, &mut rng, device)? * sampling.latent_scale)?;
        images.extend(super::train::to_images(&g.forward_t(&z, false)?)?);
    }
    if let Some(r) = reference {
        let net = super::eval::feature_network(r.weights, device)?;
        let training = super::eval::load_at(r.training, config.size)?;
        let (fc, ft) = (
            super::eval::features(&net, &images, device)?,
            super::eval::features(&net, &training, device)?,
        );
        let kept =
            super::select::spread(&fc, &ft, sampling.select_from, super::eval::PR_NEIGHBOURS);
        let mut slots: Vec<Option<image::RgbImage>> = images.into_iter().map(Some).collect();
        images = kept
            .into_iter()
            .map(|i| slots[i].take().expect("spread keeps each candidate once"))
            .collect();
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut files = Vec::with_capacity(n);
    for img in &images {
        let name = format!("gen_{:05}.png", files.len());
        let path = out.join(&name);
        img.save(&path)
            .map_err(|e| crate::atomic::image_error(&path, e))?;
        files.push(name);
    }
    let manifest = SyntheticManifest {
        synthetic: true,
        checkpoint_sha256: checkpoint_sha256(checkpoint)?,
        seed,
        class: id["class"].as_str().unwrap_or_default().to_string(),
        dataset_fingerprint: id["dataset_fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        fold: id["fold"].as_u64().map(|f| f as usize),
        latent_scale: sampling.latent_scale,
        select_from: sampling.select_from,
        files,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    // The manifest is written last: a folder without one is an interrupted, unusable sample.
    crate::atomic::write_atomic(&out.join(MANIFEST), json.as_bytes())?;
    Ok(manifest)
}

/// The training photos of a GAN checkpoint, read from `data` (the dataset with the `split` the
/// run used, or a pack of its fold): refused when they are not the photos it learnt from.
pub fn training_photos(
    checkpoint: &Path,
    data: &Path,
    split: Option<&Path>,
    device: &candle_core::Device,
) -> Result<Vec<PathBuf>> {
    let c = super::train::read_checkpoint(checkpoint, device)?;
    let state: super::train::GanState = c.state(super::train::STATE)?;
    let id = &state.identity;
    let class = id["class"].as_str().unwrap_or_default();
    let fold = id["fold"].as_u64().map(|f| f as usize);
    let photos = super::train::gan_data(data, class, split.zip(fold))?;
    if photos.fold != fold
        || Some(photos.fingerprint.as_str()) != id["dataset_fingerprint"].as_str()
    {
        return Err(Error::Invalid(format!(
            "{} with {} is not what {} learnt from ({}): give the dataset and --split it was trained with, or a pack of that fold",
            data.display(),
            split.map_or("no split".into(), |s| s.display().to_string()),
            checkpoint.display(),
            fold.map_or("every photo of its class".into(), |f| format!(
                "the training part of fold {f}"
            ))
        )));
    }
    Ok(photos.photos)
}

/// The sha256 of a checkpoint file, as a sample's manifest names its generator.
pub fn checkpoint_sha256(checkpoint: &Path) -> Result<String> {
    let bytes = std::fs::read(checkpoint).map_err(|e| Error::io(checkpoint, e))?;
    Ok(crate::dataset::sha256_hex(&bytes))
}
