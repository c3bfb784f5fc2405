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
    /// File names (relative to the folder), in order.
    pub files: Vec<String>,
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
