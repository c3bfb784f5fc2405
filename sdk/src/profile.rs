//! Per-node timing of a screener's optimised plan: where one inference spends its time.
//!
//! The figures come from running the very plan `Screener::infer` runs, node by node, with a clock
//! around each node's evaluation; the plan's own bookkeeping between nodes is not counted, so the
//! node times add up to slightly less than an inference.

use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::plan::{eval, SimpleState};

/// The time one node of the optimised plan took, averaged over the profiled runs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    /// Node name in the optimised plan (derived from the ONNX node names).
    pub name: String,
    /// Kind of operation, as the inference engine names it (`DepthWiseConv`, `OptMatMul`, ...).
    pub op: String,
    /// Mean wall time of the node per inference, in milliseconds.
    pub ms: f64,
    /// Multiply-adds the node performs per inference (0 for ops that declare none).
    pub fmas: u64,
}

impl NodeTime {
    /// Billions of floating-point operations per second (two per multiply-add); 0 when the node
    /// declares no arithmetic or took no measurable time.
    pub fn gflops(&self) -> f64 {
        gflops(self.fmas, self.ms)
    }
}

/// Billions of floating-point operations per second for `fmas` multiply-adds in `ms`
/// milliseconds; 0 when no time was measured.
pub fn gflops(fmas: u64, ms: f64) -> f64 {
    if ms > 0.0 {
        2.0 * fmas as f64 / (ms * 1e6)
    } else {
        0.0
    }
}

/// Runs `plan` `runs` times on `input` and returns each evaluated node's mean time, in plan order.
pub(crate) fn profile_plan(
    plan: &Arc<TypedRunnableModel>,
    input: Tensor,
    runs: usize,
) -> TractResult<Vec<NodeTime>> {
    let model = plan.model();
    let mut totals = vec![0f64; model.nodes().len()];
    let mut evaluated = vec![false; model.nodes().len()];
    let mut state = SimpleState::new(plan)?;
    for _ in 0..runs.max(1) {
        state.run_plan_with_eval(
            tvec!(input.clone().into()),
            |session, op_state, node, inputs| {
                let start = Instant::now();
                let out = eval(session, op_state, node, inputs);
                totals[node.id] += start.elapsed().as_secs_f64();
                evaluated[node.id] = true;
                out
            },
        )?;
    }
    let runs = runs.max(1) as f64;
    let mut nodes = Vec::new();
    for node in model.nodes() {
        if !evaluated[node.id] {
            continue;
        }
        let facts = model.node_input_facts(node.id)?;
        let fmas = node
            .op
            .cost(&facts)
            .map(|costs| {
                costs
                    .iter()
                    .filter(|(kind, _)| matches!(kind, Cost::FMA(_)))
                    .filter_map(|(_, n)| n.to_i64().ok())
                    .sum::<i64>()
            })
            .unwrap_or(0);
        nodes.push(NodeTime {
            name: node.name.clone(),
            op: node.op.name().to_string(),
            ms: totals[node.id] / runs * 1e3,
            fmas: fmas.max(0) as u64,
        });
    }
    Ok(nodes)
}
