//! A fold's GAN training photos packed into a folder of their own, with the identity of the split
//! they came from. The GAN of that fold can then train where the rest of the dataset is not (a
//! rented GPU machine receives MSID's 23 MB of mpox photos, not the whole dataset), and its checkpoint
//! still resumes and samples under `ablate` and `pipeline --gan` on the full dataset: the run's
//! identity (class, fold, dataset fingerprint, photos) and the order of its photos are the same.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::train::{gan_data, GanData};
use crate::dataset::sha256_hex;
use crate::error::{Error, Result};

/// File in a pack folder naming its photos and where they came from.
pub const MANIFEST: &str = "gan-pack.json";

/// What a pack holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PackManifest {
    /// The class the photos belong to (their folder in the pack).
    pub class: String,
    /// The fold whose training part they are.
    pub fold: usize,
    /// Fingerprint of the dataset the split was made on.
    pub dataset_fingerprint: String,
    /// The photos in the order the GAN reads them.
    pub photos: Vec<PackedPhoto>,
}

/// One photo of a pack.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PackedPhoto {
    /// File name inside the class folder.
    pub file: String,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// Copies the GAN training photos of `class` in fold `fold` of `split` into `out/<class>/`, with
/// the manifest written last (a folder without one is an interrupted pack).
pub fn pack(
    root: &Path,
    class: &str,
    split: &Path,
    fold: usize,
    out: &Path,
) -> Result<PackManifest> {
    let data = gan_data(root, class, Some((split, fold)))?;
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_some()
    {
        return Err(Error::Invalid(format!(
            "{} is not empty: a pack is written into a new folder (remove an interrupted one)",
            out.display()
        )));
    }
    let dir = out.join(class);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut photos = Vec::with_capacity(data.photos.len());
    for (i, src) in data.photos.iter().enumerate() {
        let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
        // The index keeps the split's order and tells apart photos of one name from two folders.
        let name = src
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let file = format!("{i:04}-{name}");
        std::fs::write(dir.join(&file), &bytes).map_err(|e| Error::io(&dir.join(&file), e))?;
        photos.push(PackedPhoto {
            file,
            sha256: sha256_hex(&bytes),
        });
    }
    let manifest = PackManifest {
        class: class.into(),
        fold,
        dataset_fingerprint: data.fingerprint,
        photos,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    crate::atomic::write_atomic(&out.join(MANIFEST), json.as_bytes())?;
    Ok(manifest)
}

/// The GAN data of a pack folder, each photo checked against its recorded hash; `None` when `dir`
/// is no pack.
pub fn read(dir: &Path, class: &str) -> Result<Option<GanData>> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let m: PackManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    if m.class != class {
        return Err(Error::Invalid(format!(
            "{} packs photos of {:?}, not {class:?}",
            dir.display(),
            m.class
        )));
    }
    let photos = m
        .photos
        .iter()
        .map(|p| {
            let file = dir.join(&m.class).join(&p.file);
            let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
            if sha256_hex(&bytes) != p.sha256 {
                return Err(Error::Invalid(format!(
                    "{}: not the photo the pack recorded (sha256 differs)",
                    file.display()
                )));
            }
            Ok(file)
        })
        .collect::<Result<Vec<PathBuf>>>()?;
    Ok(Some(GanData {
        photos,
        class: m.class,
        fingerprint: m.dataset_fingerprint,
        fold: Some(m.fold),
    }))
}
