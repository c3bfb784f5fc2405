//! The CUDA ops against the CPU ops, value and gradient, and one whole training step of each
//! network on CUDA against the CPU. They need a CUDA device: they are compiled only with the
//! `cuda` feature and run on the GPU machine (scripts/gpu-check.sh), where a missing device is a
//! failure, not a skip.

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::models::{Arch, Network};
use crate::ops::cuda_host::{max_rel, randn};
use crate::ops::{
    batch_norm, channel_stats, depthwise_conv2d, leaky_relu, max_pool2d, relu, relu6, residual,
    Activation,
};
use crate::train::weighted_cross_entropy;

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests run on a machine with a CUDA device")
}

/// `f` of `inputs` on the CPU and on CUDA: the outputs and the gradients of `Σ y·r` (a fixed
/// upstream gradient `r`) with respect to every input agree to `tol`.
fn same_on_gpu(name: &str, inputs: &[Tensor], tol: f32, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let run = |dev: &Device| -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let vars = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.to_device(dev)?))
            .collect::<Result<Vec<_>>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts)?;
        // Made on the CPU: the devices' `sin` may differ in the last bit.
        let r = (Tensor::arange(0u32, y.elem_count() as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            * 0.37)?
            .sin()?
            .reshape(y.shape())?
            .to_device(dev)?;
        let grads = (&y * &r)?.sum_all()?.backward()?;
        let mut gs = Vec::new();
        for v in &vars {
            gs.push(match grads.get(v) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => Vec::new(),
            });
        }
        Ok((y.flatten_all()?.to_vec1::<f32>()?, gs))
    };
    let (cpu_y, cpu_g) = run(&Device::Cpu).unwrap();
    let (gpu_y, gpu_g) = run(&gpu()).unwrap();
    let e = max_rel(&gpu_y, &cpu_y);
    assert!(e <= tol, "{name}: value differs by {e} (relative)");
    for (i, (g, c)) in gpu_g.iter().zip(&cpu_g).enumerate() {
        assert_eq!(
            g.len(),
            c.len(),
            "{name}: input {i} has a gradient on one device only"
        );
        let e = max_rel(g, c);
        assert!(
            e <= tol,
            "{name}: gradient of input {i} differs by {e} (relative)"
        );
    }
}

const ACTIVATIONS: [Option<Activation>; 4] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Relu6),
    Some(Activation::Leaky(0.2)),
];

#[test]
fn depthwise_matches_cpu() {
    for (k, stride, padding, hw) in [(3, 1, 1, (13, 11)), (3, 2, 1, (14, 9)), (5, 2, 2, (10, 10))] {
        let x = randn(&[2, 8, hw.0, hw.1], 1);
        let w = randn(&[8, 1, k, k], 2);
        same_on_gpu(
            &format!("depthwise k{k} s{stride} p{padding}"),
            &[x, w],
            1e-5,
            |t| depthwise_conv2d(&t[0], &t[1], stride, padding),
        );
    }
}

#[test]
fn channel_stats_match_cpu() {
    let x = randn(&[3, 5, 17, 9], 3).affine(4.0, 10.0).unwrap();
    let cpu = channel_stats(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let gpu = channel_stats(&x.to_device(&gpu()).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_rel(&gpu, &cpu) <= 1e-6, "{gpu:?} vs {cpu:?}");
}

#[test]
fn batch_norm_matches_cpu_in_training_and_evaluation() {
    let x = randn(&[4, 6, 9, 7], 4);
    let gamma = randn(&[6], 5).affine(0.5, 1.0).unwrap();
    let beta = randn(&[6], 6);
    for batch_stats in [true, false] {
        for a in ACTIVATIONS {
            same_on_gpu(
                &format!("batch norm {a:?} batch_stats={batch_stats}"),
                &[x.clone(), gamma.clone(), beta.clone()],
                1e-4,
                |t| {
                    let (mean, var) = if batch_stats {
                        let s = channel_stats(&t[0])?;
                        (s.get(0)?, s.get(1)?)
                    } else {
                        let dev = t[0].device();
                        (Tensor::full(0.1f32, 6, dev)?, Tensor::full(1.7f32, 6, dev)?)
                    };
                    let params = Tensor::stack(&[&t[1], &t[2], &mean, &var], 0)?;
                    batch_norm(&t[0], &params, 1e-5, batch_stats, a)
                },
            );
        }
    }
}

#[test]
fn max_pool_matches_cpu_with_ties() {
    // Rounded values tie often: the first maximum of each window must take the gradient on both.
    let x = (randn(&[2, 3, 11, 10], 7) * 2.0).unwrap().round().unwrap();
    same_on_gpu("max pool 3/2/1", std::slice::from_ref(&x), 0.0, |t| {
        max_pool2d(&t[0], 3, 2, 1)
    });
    same_on_gpu("max pool 2/2/0", &[x], 0.0, |t| max_pool2d(&t[0], 2, 2, 0));
}

#[test]
fn activations_and_residuals_match_cpu() {
    let x = (randn(&[3, 4, 8, 8], 8) * 4.0).unwrap();
    let r = randn(&[3, 4, 8, 8], 9);
    same_on_gpu("relu", std::slice::from_ref(&x), 0.0, |t| relu(&t[0]));
    same_on_gpu("relu6", std::slice::from_ref(&x), 0.0, |t| relu6(&t[0]));
    same_on_gpu("leaky", std::slice::from_ref(&x), 0.0, |t| {
        leaky_relu(&t[0], 0.2)
    });
    for a in ACTIVATIONS {
        same_on_gpu(
            &format!("residual {a:?}"),
            &[x.clone(), r.clone()],
            0.0,
            |t| residual(&t[0], &t[1], a),
        );
    }
}

/// A step's loss and each variable's gradient, by name.
type StepResult = (f32, Vec<(String, Vec<f32>)>);

/// Loss and every variable's gradient of one training step (batch statistics, class-weighted
/// loss), CUDA against the CPU, to 1e-3 relative per tensor.
fn training_step_matches_cpu(arch: Arch, size: usize) {
    let step = |dev: &Device| -> Result<StepResult> {
        let net = Network::new(arch, 2, 11, dev).unwrap();
        let x = randn(&[4, 3, size, size], 12).to_device(dev)?;
        let y = Tensor::new(&[0u32, 1, 1, 0], dev)?;
        let w = Tensor::new(&[1f32, 1.5], dev)?;
        let logits = net.forward_t(&x, true).unwrap();
        let loss = weighted_cross_entropy(&logits, &y, &w).unwrap();
        let grads = loss.backward()?;
        let data = net.varmap().data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(g) = grads.get(data[name].as_tensor()) {
                out.push((name.clone(), g.flatten_all()?.to_vec1::<f32>()?));
            }
        }
        Ok((loss.to_scalar::<f32>()?, out))
    };
    let (cpu_loss, cpu_grads) = step(&Device::Cpu).unwrap();
    let (gpu_loss, gpu_grads) = step(&gpu()).unwrap();
    let e = (gpu_loss - cpu_loss).abs() / cpu_loss.abs().max(1e-6);
    assert!(
        e <= 1e-3,
        "{arch:?}: loss {gpu_loss} on CUDA, {cpu_loss} on the CPU"
    );
    assert_eq!(
        gpu_grads.len(),
        cpu_grads.len(),
        "{arch:?}: gradients of different variables"
    );
    assert!(!cpu_grads.is_empty());
    for ((name, g), (_, c)) in gpu_grads.iter().zip(&cpu_grads) {
        let e = max_rel(g, c);
        assert!(
            e <= 1e-3,
            "{arch:?}: gradient of {name} differs by {e} (relative)"
        );
    }
}

#[test]
fn mobilenet_v2_training_step_matches_cpu() {
    training_step_matches_cpu(Arch::MobileNetV2 { width: 1.0 }, 64);
}

#[test]
fn resnet18_training_step_matches_cpu() {
    training_step_matches_cpu(Arch::ResNet18, 64);
}
