//! Training checkpoints: a run's tensors (weights, EMA copies, optimiser moments) and its JSON
//! state in one safetensors file, written atomically, and read back with the state checked
//! against the resuming run. `fit` (`train/`) and `gan train` (`gan/train.rs`) both save and
//! resume through here, so a killed run of either comes back the same way.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// A checkpoint being assembled; [`Checkpoint::write`] puts it on disk.
#[derive(Default)]
pub struct Checkpoint {
    tensors: Vec<(String, Tensor)>,
    meta: HashMap<String, String>,
}

/// `prefix.name`, or `name` without a prefix.
fn key(prefix: Option<&str>, name: &str) -> String {
    match prefix {
        Some(p) => format!("{p}.{name}"),
        None => name.to_string(),
    }
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every variable of `vars`, named `prefix.<name>` (or by its own name).
    pub fn vars(&mut self, prefix: Option<&str>, vars: &VarMap) -> &mut Self {
        for (k, v) in vars.data().lock().expect("varmap lock").iter() {
            self.tensors.push((key(prefix, k), v.as_tensor().clone()));
        }
        self
    }

    /// Adds named tensors (an optimiser's state), named `prefix.<name>` (or by their own name).
    pub fn tensors(
        &mut self,
        prefix: Option<&str>,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> &mut Self {
        self.tensors
            .extend(tensors.into_iter().map(|(k, t)| (key(prefix, &k), t)));
        self
    }

    /// Stores a text value in the file's metadata.
    pub fn meta(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.meta.insert(name.to_string(), value.into());
        self
    }

    /// Stores `state` as JSON in the file's metadata.
    pub fn state(&mut self, name: &str, state: &impl Serialize) -> &mut Self {
        self.meta(
            name,
            serde_json::to_string(state).expect("run states serialise"),
        )
    }

    /// Writes the checkpoint to `path`, atomically: a run killed meanwhile leaves the previous
    /// checkpoint as it was, and no other file.
    pub fn write(&self, path: &Path) -> Result<()> {
        // Serialised in memory, then written through `atomic`: safetensors' own
        // `serialize_to_file` goes through a randomly named temporary file of its own, which a
        // kill leaves behind where no resumed run can tell it from another process's.
        let meta = (!self.meta.is_empty()).then(|| self.meta.clone());
        let bytes =
            safetensors::tensor::serialize(self.tensors.iter().map(|(k, t)| (k.as_str(), t)), meta)
                .map_err(|e| crate::atomic::safetensors_error(path, e))?;
        crate::atomic::write_atomic(path, &bytes)
    }
}

/// A checkpoint read back from disk.
pub struct Loaded {
    /// Every tensor, by name.
    pub tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
    path: PathBuf,
}

impl Loaded {
    /// Reads the checkpoint at `path` onto `device`; a file without the metadata entry `state`
    /// is refused as not being `what` ("a GAN checkpoint", ...).
    pub fn read(path: &Path, device: &Device, state: &str, what: &str) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::Invalid(format!("{}: not {what}: {e}", path.display())))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if !meta.contains_key(state) {
            return Err(Error::Invalid(format!(
                "{}: not {what} (no {state} in it)",
                path.display()
            )));
        }
        Ok(Self {
            tensors: candle_core::safetensors::load_buffer(&bytes, device)?,
            meta,
            path: path.to_path_buf(),
        })
    }

    /// A text value of the metadata, if there.
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.meta.get(name).map(String::as_str)
    }

    /// The JSON state stored under `name`.
    pub fn state<S: DeserializeOwned>(&self, name: &str) -> Result<S> {
        let text = self.meta(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no {name} in the checkpoint",
                self.path.display()
            ))
        })?;
        serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("{}: unreadable {name}: {e}", self.path.display())))
    }

    /// Refuses to resume a run whose settings or data (`now`) differ from the checkpoint's.
    pub fn same_run<T: PartialEq + Display>(&self, made: &T, now: &T) -> Result<()> {
        if made == now {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{} was made with other settings or data; resume with the same ones.\n  checkpoint: {made}\n  now:        {now}",
            self.path.display()
        )))
    }

    /// The tensors named `prefix.<name>`, by `<name>`.
    pub fn prefixed(&self, prefix: &str) -> HashMap<String, Tensor> {
        let prefix = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|k| (k.to_string(), t.clone())))
            .collect()
    }

    /// Whether any tensor is named `prefix.<name>`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let prefix = format!("{prefix}.");
        self.tensors.keys().any(|k| k.starts_with(&prefix))
    }

    /// Sets every variable of `vars` from the tensor `prefix.<name>`; a missing or mis-shaped one
    /// is an error.
    pub fn load_vars(&self, prefix: &str, vars: &VarMap) -> Result<()> {
        for (name, var) in vars.data().lock().expect("varmap lock").iter() {
            let key = format!("{prefix}.{name}");
            let t = self.tensors.get(&key).ok_or_else(|| {
                Error::Invalid(format!("{}: checkpoint lacks {key}", self.path.display()))
            })?;
            if t.dims() != var.dims() {
                return Err(Error::Invalid(format!(
                    "{}: checkpoint tensor {key} has shape {:?}, the network {:?}",
                    self.path.display(),
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_prefixes_state_and_refusals() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mpox-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        let vars = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &Device::Cpu);
        vb.get_with_hints(3, "w", candle_nn::Init::Const(2.0))?;
        let moment = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
        Checkpoint::new()
            .vars(Some("g"), &vars)
            .tensors(Some("opt"), [("m".to_string(), moment)])
            .state("run.state", &serde_json::json!({"step": 7}))
            .meta("run.size", "64")
            .write(&path)?;

        let back = Loaded::read(&path, &Device::Cpu, "run.state", "a test checkpoint")?;
        assert_eq!(back.state::<serde_json::Value>("run.state")?["step"], 7);
        assert_eq!(back.meta("run.size"), Some("64"));
        assert!(back.has_prefix("opt") && !back.has_prefix("ema"));
        assert_eq!(back.prefixed("opt")["m"].to_vec1::<f32>()?, [1.0, 2.0]);
        let fresh = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&fresh, candle_core::DType::F32, &Device::Cpu);
        let v = vb.get_with_hints(3, "w", candle_nn::Init::Const(0.0))?;
        back.load_vars("g", &fresh)?;
        assert_eq!(v.to_vec1::<f32>()?, [2.0, 2.0, 2.0]);
        assert!(back.load_vars("ema", &fresh).is_err());
        assert!(back.same_run(&1, &1).is_ok());
        assert!(back.same_run(&1, &2).is_err());
        // Another kind of checkpoint, and a file that is none, are refused by name.
        let e = Loaded::read(&path, &Device::Cpu, "other.state", "a GAN checkpoint");
        assert!(e
            .err()
            .unwrap()
            .to_string()
            .contains("not a GAN checkpoint"));
        std::fs::write(dir.join("junk"), b"junk").unwrap();
        assert!(Loaded::read(&dir.join("junk"), &Device::Cpu, "run.state", "x").is_err());
        std::fs::remove_dir_all(dir).unwrap();
        Ok(())
    }
}
