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
    let head = net.head();
    let w = head.weight.flatten_all()?.to_vec1::<f32>()?;
    let b = head.bias.to_vec1::<f32>()?;
    let side = net.arch().feature_side(s);
    Ok(finish_with_heads(
        g,
        &features,
        (&w, &b),
        side,
        meta,
        env!("CARGO_PKG_VERSION"),
    ))
}

/// Adds the file's two heads to a graph's `features` and finishes it with the contract's input
/// and outputs: `logits` (global average pool, then the linear head `weight` `[classes × dim]`,
/// `bias` `[classes]`) and `cam` (the same head as a 1×1 convolution over the
/// `feature_side`² map).
pub fn finish_with_heads(
    mut g: GraphBuilder,
    features: &str,
    (weight, bias): (&[f32], &[f32]),
    feature_side: usize,
    meta: &ModelMeta,
    producer_version: &str,
) -> tract_onnx::pb::ModelProto {
    let classes = bias.len();
    let pooled = g.global_average(features);
    g.linear_named(&pooled, weight, bias, LOGITS_NAME);
    let cam_w = g.constant("cam_w", &[classes, weight.len() / classes, 1, 1], weight);
    let cam_b = g.constant("cam_b", &[classes], bias);
    g.node_named("Conv", &[features, &cam_w, &cam_b], vec![], CAM_NAME);
    let (n, s) = (
        DimSpec::Symbol("N"),
        i64::from(meta.preprocessing.input_size),
    );
    let (c, side) = (classes as i64, feature_side as i64);
    g.finish(
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
        producer_version,
    )
}

/// Serialised ONNX bytes of `net` with `meta`.
pub fn to_bytes(net: &Network, meta: &ModelMeta) -> Result<Vec<u8>> {
    Ok(to_model(net, meta)?.encode_to_vec())
}

/// Writes the model file atomically.
pub fn write(net: &Network, meta: &ModelMeta, path: &Path) -> Result<()> {
    crate::atomic::write_atomic(path, &to_bytes(net, meta)?)
}
