//! The model-file contract: the metadata an exported `.onnx` carries, written by the trainer and
//! read back by the SDK through this one type, so both sides always agree on keys and meaning.

use tract_onnx::pb;
use tract_onnx::prelude::TypedModel;

use crate::error::{Error, Result};
use crate::preprocess::{is_view_count, Preprocessing, VIEW_COUNTS};

/// The `mpoxscreen.format` version this SDK writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the graph input.
pub const INPUT_NAME: &str = "image";
/// Name of the logits output `[N, C]`.
pub const LOGITS_NAME: &str = "logits";
/// Name of the class-activation-map output `[N, C, h, w]`.
pub const CAM_NAME: &str = "cam";

/// Metadata keys of the contract, in the order they are written.
pub mod keys {
    /// Integer format version.
    pub const FORMAT: &str = "mpoxscreen.format";
    /// JSON array of class labels, in logit order.
    pub const LABELS: &str = "labels";
    /// The label whose probability is "probability of mpox".
    pub const POSITIVE_LABEL: &str = "positive_label";
    /// Side of the square network input.
    pub const INPUT_SIZE: &str = "input_size";
    /// The shorter side is resized to this before the centre crop.
    pub const RESIZE: &str = "resize";
    /// JSON array of three per-channel means (RGB, on the 0..1 scale).
    pub const MEAN: &str = "mean";
    /// JSON array of three per-channel standard deviations.
    pub const STD: &str = "std";
    /// Temperature dividing the logits before softmax.
    pub const TEMPERATURE: &str = "temperature";
    /// Probability of mpox at or above which the verdict is positive.
    pub const THRESHOLD: &str = "threshold";
    /// JSON array `[low, high]`: probabilities inside it are reported as uncertain.
    pub const UNCERTAIN_BAND: &str = "uncertain_band";
    /// Recommended number of test-time views (1, 2, 4 or 8). Optional: absent means 1, so files
    /// written before it existed keep their meaning and the format version stays 1.
    pub const VIEWS: &str = "mpoxscreen.views";
    /// Network architecture name.
    pub const ARCH: &str = "arch";
    /// Version of the trainer that wrote the file.
    pub const TRAINER_VERSION: &str = "trainer_version";
    /// Fingerprint of the training data (sha256 over sorted file hashes), or `random-init`.
    pub const DATASET_FINGERPRINT: &str = "dataset_fingerprint";
    /// JSON object of validation/test figures.
    pub const METRICS: &str = "metrics";
    /// RFC 3339 creation time.
    pub const CREATED: &str = "created";
}

/// Everything the model file says about itself (also kept as JSON beside training checkpoints).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelMeta {
    /// Class labels in logit order.
    pub labels: Vec<String>,
    /// The label counted as mpox.
    pub positive_label: String,
    /// Resize, crop and normalisation applied before the network.
    pub preprocessing: Preprocessing,
    /// Calibration temperature (> 0).
    pub temperature: f32,
    /// Decision threshold on the calibrated probability of mpox.
    pub threshold: f32,
    /// `[low, high]` around the threshold where the verdict is `Uncertain`.
    pub uncertain_band: [f32; 2],
    /// Test-time views a screener uses unless told otherwise (one of [`VIEW_COUNTS`]); the
    /// temperature, threshold and band are meant for logits averaged over this many views.
    // Model cards written before the field existed read as 1, like model files without the key.
    #[serde(default = "one_view")]
    pub recommended_views: u32,
    /// Architecture, e.g. `mobilenet_v2` or `resnet18`.
    pub arch: String,
    /// Trainer version that produced the file.
    pub trainer_version: String,
    /// Fingerprint of the training data.
    pub dataset_fingerprint: String,
    /// Validation/test figures as a JSON object (may be empty).
    pub metrics: serde_json::Value,
    /// Creation time (RFC 3339).
    pub created: String,
}

fn one_view() -> u32 {
    1
}

impl ModelMeta {
    /// Index of the positive label among `labels`.
    pub fn positive_index(&self) -> usize {
        self.labels
            .iter()
            .position(|l| *l == self.positive_label)
            .unwrap_or(0)
    }

    /// The metadata as ONNX `metadata_props` key/value pairs.
    pub fn to_props(&self) -> Vec<(String, String)> {
        let p = &self.preprocessing;
        let json = |v: serde_json::Value| v.to_string();
        // f32 → f64 would print 0.485 as 0.48500001430511475; go through f32's shortest form.
        let short = |v: &[f32]| -> Vec<f64> {
            v.iter()
                .map(|x| x.to_string().parse().unwrap_or(f64::from(*x)))
                .collect()
        };
        vec![
            (keys::FORMAT.into(), FORMAT_VERSION.to_string()),
            (keys::LABELS.into(), json(serde_json::json!(self.labels))),
            (keys::POSITIVE_LABEL.into(), self.positive_label.clone()),
            (keys::INPUT_SIZE.into(), p.input_size.to_string()),
            (keys::RESIZE.into(), p.resize.to_string()),
            (keys::MEAN.into(), json(serde_json::json!(short(&p.mean)))),
            (keys::STD.into(), json(serde_json::json!(short(&p.std)))),
            (keys::TEMPERATURE.into(), self.temperature.to_string()),
            (keys::THRESHOLD.into(), self.threshold.to_string()),
            (
                keys::UNCERTAIN_BAND.into(),
                json(serde_json::json!(short(&self.uncertain_band))),
            ),
            (keys::VIEWS.into(), self.recommended_views.to_string()),
            (keys::ARCH.into(), self.arch.clone()),
            (keys::TRAINER_VERSION.into(), self.trainer_version.clone()),
            (
                keys::DATASET_FINGERPRINT.into(),
                self.dataset_fingerprint.clone(),
            ),
            (keys::METRICS.into(), self.metrics.to_string()),
            (keys::CREATED.into(), self.created.clone()),
        ]
    }

    /// Reads and validates the metadata from `metadata_props` pairs.
    pub fn from_props<'a, I>(props: I) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let map: std::collections::BTreeMap<&str, &str> = props.into_iter().collect();
        let get = |key: &str| -> Result<&str> {
            map.get(key).copied().ok_or_else(|| Error::ModelMetadata {
                key: key.into(),
                reason: "missing".into(),
            })
        };
        let bad = |key: &str, reason: String| Error::ModelMetadata {
            key: key.into(),
            reason,
        };
        let format = get(keys::FORMAT)?;
        if format.trim().parse::<u32>().ok() != Some(FORMAT_VERSION) {
            return Err(Error::ModelVersion {
                found: format.into(),
                supported: FORMAT_VERSION,
            });
        }
        fn parse_json<T: serde::de::DeserializeOwned>(key: &str, v: &str) -> Result<T> {
            serde_json::from_str(v).map_err(|e| Error::ModelMetadata {
                key: key.into(),
                reason: format!("{e} in {v:?}"),
            })
        }
        let labels: Vec<String> = parse_json(keys::LABELS, get(keys::LABELS)?)?;
        if labels.len() < 2 {
            return Err(bad(keys::LABELS, "at least two labels are needed".into()));
        }
        let unique: std::collections::BTreeSet<_> = labels.iter().collect();
        if unique.len() != labels.len() || labels.iter().any(|l| l.is_empty()) {
            return Err(bad(
                keys::LABELS,
                "labels must be distinct and non-empty".into(),
            ));
        }
        let positive_label = get(keys::POSITIVE_LABEL)?.to_string();
        if !labels.contains(&positive_label) {
            return Err(bad(
                keys::POSITIVE_LABEL,
                format!("{positive_label:?} is not one of the labels {labels:?}"),
            ));
        }
        let input_size: u32 = parse_json(keys::INPUT_SIZE, get(keys::INPUT_SIZE)?)?;
        let resize: u32 = parse_json(keys::RESIZE, get(keys::RESIZE)?)?;
        if !(16..=2048).contains(&input_size) {
            return Err(bad(
                keys::INPUT_SIZE,
                format!("{input_size} is outside 16..=2048"),
            ));
        }
        if resize < input_size || resize > 4096 {
            return Err(bad(
                keys::RESIZE,
                format!("{resize} must be at least input_size ({input_size}) and at most 4096"),
            ));
        }
        let mean: [f32; 3] = parse_json(keys::MEAN, get(keys::MEAN)?)?;
        let std: [f32; 3] = parse_json(keys::STD, get(keys::STD)?)?;
        if std.iter().any(|s| !s.is_finite() || *s <= 0.0) || mean.iter().any(|m| !m.is_finite()) {
            return Err(bad(
                keys::STD,
                "mean must be finite and std positive".into(),
            ));
        }
        let temperature: f32 = parse_json(keys::TEMPERATURE, get(keys::TEMPERATURE)?)?;
        if !temperature.is_finite() || temperature <= 0.0 {
            return Err(bad(
                keys::TEMPERATURE,
                format!("{temperature} is not a positive number"),
            ));
        }
        let threshold: f32 = parse_json(keys::THRESHOLD, get(keys::THRESHOLD)?)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(bad(
                keys::THRESHOLD,
                format!("{threshold} is outside [0, 1]"),
            ));
        }
        let uncertain_band: [f32; 2] =
            parse_json(keys::UNCERTAIN_BAND, get(keys::UNCERTAIN_BAND)?)?;
        if !(0.0 <= uncertain_band[0]
            && uncertain_band[0] <= threshold
            && threshold <= uncertain_band[1]
            && uncertain_band[1] <= 1.0)
        {
            return Err(bad(
                keys::UNCERTAIN_BAND,
                format!("{uncertain_band:?} must satisfy 0 <= low <= threshold ({threshold}) <= high <= 1"),
            ));
        }
        let recommended_views: u32 = match map.get(keys::VIEWS) {
            Some(v) => parse_json(keys::VIEWS, v)?,
            None => 1,
        };
        if !is_view_count(recommended_views) {
            return Err(bad(
                keys::VIEWS,
                format!("{recommended_views} is not one of {VIEW_COUNTS:?}"),
            ));
        }
        let metrics: serde_json::Value = match map.get(keys::METRICS) {
            Some(v) => parse_json(keys::METRICS, v)?,
            None => serde_json::json!({}),
        };
        let optional = |key: &str| map.get(key).map(|s| s.to_string()).unwrap_or_default();
        Ok(Self {
            labels,
            positive_label,
            preprocessing: Preprocessing {
                input_size,
                resize,
                mean,
                std,
            },
            temperature,
            threshold,
            uncertain_band,
            recommended_views,
            arch: get(keys::ARCH)?.to_string(),
            trainer_version: optional(keys::TRAINER_VERSION),
            dataset_fingerprint: optional(keys::DATASET_FINGERPRINT),
            metrics,
            created: optional(keys::CREATED),
        })
    }
}

/// Checks names, element types and ranks of the graph's inputs and outputs against the contract
/// before tract builds anything from it; returns the positions of `logits` and `cam` among the
/// graph's outputs.
pub fn check_graph(graph: &pb::GraphProto, meta: &ModelMeta) -> Result<(usize, usize)> {
    let bad = |reason: String| Error::ModelContract { reason };
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(bad(format!(
            "expected one input `{INPUT_NAME}`, found {:?}",
            inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
        )));
    };
    if input.name != INPUT_NAME {
        return Err(bad(format!(
            "the input is called `{}`, expected `{INPUT_NAME}`",
            input.name
        )));
    }
    let dims = tensor_dims(input)
        .ok_or_else(|| bad(format!("input `{INPUT_NAME}` is not a float32 tensor")))?;
    let s = i64::from(meta.preprocessing.input_size);
    let expected = [None, Some(3), Some(s), Some(s)];
    let matches = dims.len() == 4
        && dims
            .iter()
            .zip(expected)
            .all(|(d, e)| d.is_none() || e.is_none() || *d == e);
    if !matches {
        return Err(bad(format!(
            "input `{INPUT_NAME}` has shape {}, expected [N, 3, {s}, {s}]",
            show_dims(&dims)
        )));
    }
    let position = |name: &str| {
        graph
            .output
            .iter()
            .position(|o| o.name == name)
            .ok_or_else(|| bad(format!("output `{name}` is missing")))
    };
    let logits_ix = position(LOGITS_NAME)?;
    let cam_ix = position(CAM_NAME)?;
    for (ix, rank) in [(logits_ix, 2), (cam_ix, 4)] {
        let out = &graph.output[ix];
        match tensor_dims(out) {
            Some(d) if d.len() == rank => {}
            Some(d) => {
                return Err(bad(format!(
                    "output `{}` has rank {}, expected {rank}",
                    out.name,
                    d.len()
                )))
            }
            None => {
                return Err(bad(format!(
                    "output `{}` is not a float32 tensor",
                    out.name
                )))
            }
        }
    }
    Ok((logits_ix, cam_ix))
}

/// Dimensions of a float32 tensor value (`None` per symbolic dimension), or `None` if it is not one.
fn tensor_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::type_proto::Value;
    let Some(Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    if t.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// `[?, 3, 224, 224]`-style display of dimensions.
fn show_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The shape of an output of the optimised model for one image, if tract knows it exactly.
fn concrete_shape(model: &TypedModel, output: usize) -> Result<Vec<usize>> {
    let fact = model
        .output_fact(output)
        .map_err(|e| Error::ModelContract {
            reason: format!("{e:#}"),
        })?;
    fact.shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| Error::ModelContract {
            reason: format!("output {output} has a non-concrete shape {:?}", fact.shape),
        })
}

/// Checks the optimised model's output shapes for one image against the labels: `logits` must be
/// `[1, C]` and `cam` `[1, C, h, w]`; returns `(h, w)`.
pub fn check_outputs(
    model: &TypedModel,
    meta: &ModelMeta,
    logits_ix: usize,
    cam_ix: usize,
) -> Result<(usize, usize)> {
    let c = meta.labels.len();
    let logits_shape = concrete_shape(model, logits_ix)?;
    if logits_shape != [1, c] {
        return Err(Error::ModelContract {
            reason: format!(
                "`logits` has shape {logits_shape:?} for one image, expected [1, {c}] ({c} labels)"
            ),
        });
    }
    let cam_shape = concrete_shape(model, cam_ix)?;
    if cam_shape.len() != 4 || cam_shape[..2] != [1, c] {
        return Err(Error::ModelContract {
            reason: format!("`cam` has shape {cam_shape:?} for one image, expected [1, {c}, h, w]"),
        });
    }
    Ok((cam_shape[2], cam_shape[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelMeta {
        ModelMeta {
            labels: vec!["not_mpox".into(), "mpox".into()],
            positive_label: "mpox".into(),
            preprocessing: Preprocessing::imagenet(224),
            temperature: 1.5,
            threshold: 0.3,
            uncertain_band: [0.2, 0.6],
            recommended_views: 4,
            arch: "mobilenet_v2".into(),
            trainer_version: "0.1.0".into(),
            dataset_fingerprint: "abc".into(),
            metrics: serde_json::json!({"auc": 0.9}),
            created: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn props(m: &ModelMeta) -> Vec<(String, String)> {
        m.to_props()
    }

    fn parse(p: &[(String, String)]) -> Result<ModelMeta> {
        ModelMeta::from_props(p.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(parse(&props(&m)).unwrap(), m);
        assert_eq!(m.positive_index(), 1);
    }

    #[test]
    fn floats_are_written_as_people_wrote_them() {
        let p = props(&sample());
        let get = |k: &str| p.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get(keys::MEAN), "[0.485,0.456,0.406]");
        assert_eq!(get(keys::STD), "[0.229,0.224,0.225]");
    }

    #[test]
    fn missing_key_is_named() {
        let p: Vec<_> = props(&sample())
            .into_iter()
            .filter(|(k, _)| k != keys::TEMPERATURE)
            .collect();
        match parse(&p) {
            Err(Error::ModelMetadata { key, reason }) => {
                assert_eq!(key, keys::TEMPERATURE);
                assert_eq!(reason, "missing");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn views_are_optional_and_checked() {
        let without: Vec<_> = props(&sample())
            .into_iter()
            .filter(|(k, _)| k != keys::VIEWS)
            .collect();
        assert_eq!(parse(&without).unwrap().recommended_views, 1);
        for bad in ["3", "0", "16", "-1", "two", "4.0"] {
            let mut p = props(&sample());
            p.iter_mut().find(|(k, _)| k == keys::VIEWS).unwrap().1 = bad.into();
            match parse(&p) {
                Err(Error::ModelMetadata { key, .. }) => assert_eq!(key, keys::VIEWS, "{bad}"),
                other => panic!("views={bad}: {other:?}"),
            }
        }
        // A model card from before the field existed.
        let mut card = serde_json::to_value(sample()).unwrap();
        card.as_object_mut().unwrap().remove("recommended_views");
        let card: ModelMeta = serde_json::from_value(card).unwrap();
        assert_eq!(card.recommended_views, 1);
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut p = props(&sample());
        p[0].1 = "2".into();
        assert!(matches!(
            parse(&p),
            Err(Error::ModelVersion { supported: 1, .. })
        ));
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let cases: [(&str, &str); 6] = [
            (keys::POSITIVE_LABEL, "measles"),
            (keys::UNCERTAIN_BAND, "[0.4, 0.6]"),
            (keys::TEMPERATURE, "0"),
            (keys::LABELS, "[\"a\",\"a\"]"),
            (keys::RESIZE, "100"),
            (keys::STD, "[0.2, 0.0, 0.2]"),
        ];
        for (key, value) in cases {
            let mut p = props(&sample());
            p.iter_mut().find(|(k, _)| k == key).unwrap().1 = value.into();
            assert!(
                matches!(parse(&p), Err(Error::ModelMetadata { .. })),
                "{key}={value} accepted"
            );
        }
    }
}
