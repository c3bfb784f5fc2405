//! Reading torchvision-named weights (safetensors, PyTorch `.pth`) into a network's `VarMap`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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
