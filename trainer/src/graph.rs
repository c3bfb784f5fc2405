//! A small ONNX graph writer over tract's prost types: just the operators our networks need.
//!
//! A leaf: the networks (`models/`) write their layers through it and `onnx` assembles the file
//! around them, so neither of those two modules needs the other's internals.

use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto::dimension::Value as Dim, type_proto,
};

/// ONNX opset the exporter targets.
pub const OPSET: i64 = 13;
/// IR version written (tract and onnxruntime both read 8).
pub const IR_VERSION: i64 = 8;

/// Collects nodes and initializers, handing out unique value names.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    counter: usize,
}

/// A shape dimension of a graph input or output.
#[derive(Clone, Debug)]
pub enum DimSpec {
    /// A fixed size.
    Fixed(i64),
    /// A named symbolic size (the batch).
    Symbol(&'static str),
}

impl GraphBuilder {
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a float32 initializer and returns its name.
    pub fn constant(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output, returning the output's name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
    ) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.node_named(op, inputs, attributes, &out);
        out
    }

    /// Adds a node whose output takes a given name (for graph outputs).
    pub fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
        output: &str,
    ) {
        let name = format!("{op}_{}", self.nodes.len());
        self.nodes.push(pb::NodeProto {
            name,
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attributes,
            ..Default::default()
        });
    }

    /// `Conv` with a bias; `weight` is `[O, I/groups, k, k]`.
    pub fn conv(
        &mut self,
        x: &str,
        weight: (&[usize; 4], &[f32]),
        bias: &[f32],
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> String {
        let (dims, data) = weight;
        let w = self.constant("w", dims, data);
        let b = self.constant("b", &[dims[0]], bias);
        let k = dims[2] as i64;
        let (s, p) = (stride as i64, padding as i64);
        self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints("pads", &[p, p, p, p]),
                ints("dilations", &[1, 1]),
                int("group", groups as i64),
            ],
        )
    }

    /// `Relu`.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    /// `Clip(x, 0, 6)` (opset 13: bounds as scalar inputs).
    pub fn relu6(&mut self, x: &str) -> String {
        let lo = self.constant("clip_min", &[], &[0.0]);
        let hi = self.constant("clip_max", &[], &[6.0]);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// `Add`.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    /// `MaxPool` with a square kernel.
    pub fn max_pool(&mut self, x: &str, kernel: usize, stride: usize, padding: usize) -> String {
        let (k, s, p) = (kernel as i64, stride as i64, padding as i64);
        self.node(
            "MaxPool",
            &[x],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints("pads", &[p, p, p, p]),
            ],
        )
    }

    /// `GlobalAveragePool` then `Flatten` to `[N, C]`.
    pub fn global_average(&mut self, x: &str) -> String {
        let pooled = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&pooled], vec![int("axis", 1)])
    }

    /// `Gemm(x, Wᵀ) + b` with `weight [out, in]` (candle's and PyTorch's Linear layout), to a named output.
    pub fn linear_named(&mut self, x: &str, weight: &[f32], bias: &[f32], output: &str) {
        let out = bias.len();
        let w = self.constant("fc_w", &[out, weight.len() / out], weight);
        let b = self.constant("fc_b", &[out], bias);
        self.node_named("Gemm", &[x, &w, &b], vec![int("transB", 1)], output);
    }

    /// Assembles the model with one float input and the given outputs.
    pub fn finish(
        self,
        input: (&str, &[DimSpec]),
        outputs: &[(&str, &[DimSpec])],
        metadata: Vec<(String, String)>,
        producer_version: &str,
    ) -> pb::ModelProto {
        let graph = pb::GraphProto {
            name: "mpoxscreen".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(input.0, input.1)],
            output: outputs.iter().map(|(n, d)| value_info(n, d)).collect(),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "mpox-trainer".into(),
            producer_version: producer_version.into(),
            graph: Some(graph),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| pb::StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        }
    }
}

fn value_info(name: &str, dims: &[DimSpec]) -> pb::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                DimSpec::Fixed(v) => Dim::DimValue(*v),
                DimSpec::Symbol(s) => Dim::DimParam((*s).into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}
