//! ONNX export: a trained network becomes one self-describing model file (docs/architecture.md,
//! "The model file").
//!
//! BatchNorm is folded into the convolutions, so the inference graph holds only
//! Conv/Clip/Relu/Add/MaxPool/GlobalAveragePool/Flatten/Gemm. Besides `logits` the file has a `cam`
//! output: the head applied to the last feature map as a 1×1 convolution, whose spatial mean equals
//! the logits, so the SDK can draw a heatmap without gradients.

use std::path::Path;

use mpox_sdk::contract::{ModelMeta, CAM_NAME, INPUT_NAME, LOGITS_NAME};
use prost::Message;

pub use crate::graph::{DimSpec, GraphBuilder, IR_VERSION, OPSET};

use crate::error::{Error, Result};
use crate::models::Network;

/// Builds the ONNX model of `net` with `meta` as its metadata.
pub fn to_model(net: &Network, meta: &ModelMeta) -> Result<tract_onnx::pb::ModelProto> {
    let s = meta.preprocessing.input_size as usize;
    if meta.labels.len() != net.num_classes() {
        return Err(Error::Invalid(format!(
            "{} labels for a network with {} outputs",
            meta.labels.len(),
            net.num_classes()
        )));
    }
    let mut g = GraphBuilder::default();
    let features = net.export_features(&mut g, INPUT_NAME)?;
    let pooled = g.global_average(&features);
    let head = net.head();
    let w = head.weight.flatten_all()?.to_vec1::<f32>()?;
    let b = head.bias.to_vec1::<f32>()?;
    g.linear_named(&pooled, &w, &b, LOGITS_NAME);
    let (c, f) = (net.num_classes(), net.feature_dim());
    let cam_w = g.constant("cam_w", &[c, f, 1, 1], &w);
    let cam_b = g.constant("cam_b", &[c], &b);
    g.node_named("Conv", &[&features, &cam_w, &cam_b], vec![], CAM_NAME);
    let side = net.arch().feature_side(s) as i64;
    let (n, s, c) = (DimSpec::Symbol("N"), s as i64, c as i64);
    Ok(g.finish(
        (
            INPUT_NAME,
            &[
                n.clone(),
                DimSpec::Fixed(3),
                DimSpec::Fixed(s),
                DimSpec::Fixed(s),
            ],
        ),
        &[
            (LOGITS_NAME, &[n.clone(), DimSpec::Fixed(c)]),
            (
                CAM_NAME,
                &[
                    n,
                    DimSpec::Fixed(c),
                    DimSpec::Fixed(side),
                    DimSpec::Fixed(side),
                ],
            ),
        ],
        meta.to_props(),
        env!("CARGO_PKG_VERSION"),
    ))
}

/// Serialised ONNX bytes of `net` with `meta`.
pub fn to_bytes(net: &Network, meta: &ModelMeta) -> Result<Vec<u8>> {
    Ok(to_model(net, meta)?.encode_to_vec())
}

/// Writes the model file atomically.
pub fn write(net: &Network, meta: &ModelMeta, path: &Path) -> Result<()> {
    crate::atomic::write_atomic(path, &to_bytes(net, meta)?)
}
