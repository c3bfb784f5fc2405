//! AdamW with per-parameter learning-rate groups and a state that can be saved and restored,
//! so a resumed run continues exactly where it stopped (candle's AdamW keeps its moments private).

use std::collections::HashMap;

use candle_core::{backprop::GradStore, CpuStorage, Storage, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// One trainable parameter with its optimiser state.
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    /// Learning-rate multiplier of the parameter's group (e.g. 0.1 for a pretrained backbone).
    lr_scale: f64,
    /// Whether decoupled weight decay applies (not to biases and BatchNorm parameters).
    decay: bool,
    /// Where the decay pulls the weight: zero (AdamW), or its pretrained value (L2-SP).
    anchor: Option<Tensor>,
}

/// One update's constants for one parameter.
struct Hyper {
    beta1: f64,
    beta2: f64,
    /// 1 / (1 − β₁ᵗ) and 1 / (1 − β₂ᵗ): the bias corrections.
    inv_bc1: f64,
    inv_bc2: f64,
    eps: f64,
    lr: f64,
    /// The pull per step toward zero or the anchor (0: none).
    decay: f64,
}

impl Slot {
    /// The update as a chain of tensor ops (any device):
    /// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `θ ← θ − d·(θ − a) − lr·m̂/(√v̂ + ε)`, with the
    /// anchor `a` zero for AdamW's decay.
    fn chained_step(&mut self, g: &Tensor, h: &Hyper) -> Result<()> {
        self.m = ((&self.m * h.beta1)? + (g * (1.0 - h.beta1))?)?;
        self.v = ((&self.v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
        let update = ((&self.m * h.inv_bc1)? / ((&self.v * h.inv_bc2)?.sqrt()? + h.eps)?)?;
        let theta = self.var.as_tensor();
        let decayed = match &self.anchor {
            Some(a) => (theta - ((theta - a)? * h.decay)?)?,
            None => (theta * (1.0 - h.decay))?,
        };
        self.var.set(&(decayed - (update * h.lr)?)?)?;
        Ok(())
    }

    /// The same update in one parallel sweep over the CPU tensors' storage, each element computed
    /// as [`Self::chained_step`] computes it (the chain costs about a dozen sweeps, one thread
    /// each). `false` when the tensors are not contiguous f32 on the CPU.
    fn fused_step(&mut self, g: &Tensor, h: &Hyper) -> Result<bool> {
        let g = g.contiguous()?;
        let (theta, m, v) = (self.var.as_tensor(), &self.m, &self.v);
        let anchor = self.anchor.as_ref().map(|a| a.contiguous()).transpose()?;
        let guards = [theta, &g, m, v]
            .into_iter()
            .chain(anchor.as_ref())
            .map(|t| t.storage_and_layout())
            .collect::<Vec<_>>();
        let slices: Option<Vec<&[f32]>> = guards
            .iter()
            .map(
                |(storage, layout)| match (&**storage, layout.contiguous_offsets()) {
                    (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) => Some(&data[a..b]),
                    _ => None,
                },
            )
            .collect();
        let Some(slices) = slices else {
            return Ok(false);
        };
        let n = slices[0].len();
        if slices.iter().any(|s| s.len() != n) {
            return Ok(false);
        }
        let f = |x: f64| x as f32;
        let (b1, b1c, b2, b2c) = (f(h.beta1), f(1.0 - h.beta1), f(h.beta2), f(1.0 - h.beta2));
        let (ib1, ib2, eps, lr, keep) = (
            f(h.inv_bc1),
            f(h.inv_bc2),
            f(h.eps),
            f(h.lr),
            f(1.0 - h.decay),
        );
        let pull = f(h.decay);
        // Every element of the three is written below (no zero fill: 1.5 % of a ResNet-18 step).
        let out = crate::ops::output;
        let (mut theta2, mut m2, mut v2) = (out(n), out(n), out(n));
        const CHUNK: usize = 1 << 14;
        theta2
            .par_chunks_mut(CHUNK)
            .zip(m2.par_chunks_mut(CHUNK))
            .zip(v2.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, ((t2, m2), v2))| {
                let r = c * CHUNK..(c * CHUNK + t2.len());
                let (t, g, m, v) = (
                    &slices[0][r.clone()],
                    &slices[1][r.clone()],
                    &slices[2][r.clone()],
                    &slices[3][r.clone()],
                );
                let a = slices.get(4).map(|a| &a[r]);
                for i in 0..t.len() {
                    let mi = m[i] * b1 + g[i] * b1c;
                    let vi = v[i] * b2 + (g[i] * g[i]) * b2c;
                    let update = (mi * ib1) / ((vi * ib2).sqrt() + eps);
                    let decayed = match a {
                        Some(a) => t[i] - (t[i] - a[i]) * pull,
                        None => t[i] * keep,
                    };
                    t2[i] = decayed - update * lr;
                    m2[i] = mi;
                    v2[i] = vi;
                }
            });
        drop(guards);
        let (shape, device) = (theta.shape().clone(), theta.device().clone());
        self.m = Tensor::from_vec(m2, shape.clone(), &device)?;
        self.v = Tensor::from_vec(v2, shape.clone(), &device)?;
        self.var.set(&Tensor::from_vec(theta2, shape, &device)?)?;
        Ok(true)
    }
}

/// AdamW (Loshchilov & Hutter) over named parameters.
pub struct AdamW {
    slots: Vec<Slot>,
    step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    anchor_decay: f64,
}

impl AdamW {
    /// Optimises `groups` of `(name, var)` lists with their learning-rate multipliers.
    pub fn new(groups: Vec<(Vec<(String, Var)>, f64)>, weight_decay: f64) -> Result<Self> {
        let mut slots = Vec::new();
        for (vars, lr_scale) in groups {
            for (name, var) in vars {
                let zeros = var.as_tensor().zeros_like()?;
                slots.push(Slot {
                    decay: var.rank() > 1,
                    m: zeros.clone(),
                    v: zeros,
                    name,
                    var,
                    lr_scale,
                    anchor: None,
                });
            }
        }
        Ok(Self {
            slots,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            anchor_decay: 0.0,
        })
    }

    /// Decoupled L2-SP (Li et al. 2018, "Explicit inductive bias for transfer learning"): the
    /// decaying weights named in `anchors` are pulled toward those values, at `strength` times
    /// the learning rate per step, in place of AdamW's pull toward zero; the others keep it.
    pub fn set_anchors(&mut self, anchors: &HashMap<String, Tensor>, strength: f64) {
        for s in &mut self.slots {
            if s.decay {
                s.anchor = anchors.get(&s.name).cloned();
            }
        }
        self.anchor_decay = strength;
    }

    /// Sets Adam's β₁ and β₂ (defaults 0.9 and 0.999; GANs use β₁ = 0.5).
    pub fn set_betas(&mut self, beta1: f64, beta2: f64) {
        self.beta1 = beta1;
        self.beta2 = beta2;
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update with base learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.update(grads, lr, true)
    }

    /// [`Self::step`], with the one-sweep CPU update where it applies when `fused`.
    fn update(&mut self, grads: &GradStore, lr: f64, fused: bool) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            // A gradient that still tracks its graph would chain every step's graph into the
            // moments (memory growing step after step); the update is never differentiated.
            let g = &g.detach();
            let lr = lr * s.lr_scale;
            let h = Hyper {
                beta1: self.beta1,
                beta2: self.beta2,
                inv_bc1: 1.0 / bc1,
                inv_bc2: 1.0 / bc2,
                eps: self.eps,
                lr,
                decay: match (&s.anchor, s.decay) {
                    (Some(_), _) => lr * self.anchor_decay,
                    (None, true) => lr * self.weight_decay,
                    (None, false) => 0.0,
                },
            };
            if !(fused && s.fused_step(g, &h)?) {
                s.chained_step(g, &h)?;
            }
        }
        Ok(())
    }

    /// The moments as named tensors (`adamw.m.<name>`, `adamw.v.<name>`) for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("adamw.m.{}", s.name), s.m.clone()),
                    (format!("adamw.v.{}", s.name), s.v.clone()),
                ]
            })
            .collect()
    }

    /// Restores moments saved by [`Self::state`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            let get = |kind: &str| -> Result<Tensor> {
                let key = format!("adamw.{kind}.{}", s.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    Error::Invalid(format!("checkpoint lacks optimiser state {key}"))
                })?;
                if t.dims() != s.var.dims() {
                    return Err(Error::Invalid(format!(
                        "optimiser state {key} has the wrong shape"
                    )));
                }
                Ok(t.to_device(s.var.device())?)
            };
            s.m = get("m")?;
            s.v = get("v")?;
        }
        self.step = step;
        Ok(())
    }
}

/// Cosine decay from `base` to 0 over `total` steps, after a linear warm-up of `warmup` steps.
pub fn cosine_lr(base: f64, step: u64, total: u64, warmup: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_step_moves_each_weight_by_lr() {
        // With bias correction, Adam's first update is lr·sign(g) (up to eps).
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![(vec![("w".into(), w.clone())], 1.0)], 0.0).unwrap();
        let loss = (w.as_tensor() * Tensor::new(&[3.0f32, -0.5], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        let v = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.9).abs() < 1e-5 && (v[1] + 1.9).abs() < 1e-5,
            "{v:?}"
        );
    }

    #[test]
    fn l2_sp_pulls_toward_the_anchor_not_toward_zero() {
        // A zero gradient isolates the decay: AdamW shrinks w toward 0, L2-SP toward its anchor.
        let run = |anchor: Option<f32>| -> f32 {
            let w = Var::new(&[[2.0f32]], &Device::Cpu).unwrap();
            let mut opt = AdamW::new(vec![(vec![("w".into(), w.clone())], 1.0)], 0.1).unwrap();
            if let Some(a) = anchor {
                let anchors =
                    HashMap::from([("w".to_string(), Tensor::new(&[[a]], &Device::Cpu).unwrap())]);
                opt.set_anchors(&anchors, 0.5);
            }
            let loss = (w.as_tensor() * 0.0).unwrap().sum_all().unwrap();
            let mut grads = loss.backward().unwrap();
            grads.insert(
                w.as_tensor(),
                Tensor::new(&[[0.0f32]], &Device::Cpu).unwrap(),
            );
            opt.step(&grads, 0.1).unwrap();
            w.as_tensor().to_vec2::<f32>().unwrap()[0][0]
        };
        // AdamW: 2·(1 − 0.1·0.1) = 1.98.
        assert!((run(None) - 1.98).abs() < 1e-6, "{}", run(None));
        // L2-SP: 2 − 0.1·0.5·(2 − 1) = 1.95, and an anchor at the weight leaves it in place.
        assert!((run(Some(1.0)) - 1.95).abs() < 1e-6, "{}", run(Some(1.0)));
        assert!((run(Some(2.0)) - 2.0).abs() < 1e-7);
    }

    #[test]
    fn decay_skips_vectors_and_state_round_trips() {
        let w = Var::new(&[[1.0f32]], &Device::Cpu).unwrap();
        let b = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(
            vec![(vec![("w".into(), w.clone()), ("b".into(), b.clone())], 1.0)],
            0.5,
        )
        .unwrap();
        // First Adam step moves each weight by lr·sign(g); decay shrinks only the matrix first:
        // w = 1·(1 − 0.1·0.5) − 0.1 = 0.85, b = 1 − 0.1 = 0.9.
        let loss = ((w.as_tensor().sum_all().unwrap() * 3.0).unwrap()
            + (b.as_tensor().sum_all().unwrap() * 2.0).unwrap())
        .unwrap();
        opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        let w1 = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let b1 = b.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((w1 - 0.85).abs() < 1e-6, "{w1}");
        assert!((b1 - 0.9).abs() < 1e-6, "{b1}");
        let state: HashMap<String, Tensor> = opt.state().into_iter().collect();
        assert_eq!(state.len(), 4);
        let mut other =
            AdamW::new(vec![(vec![("w".into(), w), ("b".into(), b)], 1.0)], 0.5).unwrap();
        other.load_state(&state, opt.steps()).unwrap();
        assert_eq!(other.steps(), 1);
        assert!(other.load_state(&HashMap::new(), 0).is_err());
    }

    /// The one-sweep CPU update gives the chain of tensor ops' results bit for bit, over
    /// several steps, with decay toward zero, without decay and toward an anchor.
    #[test]
    fn the_fused_update_is_the_chained_one() {
        let dev = Device::Cpu;
        let make = || {
            let vars: Vec<(String, Var)> = ["w", "b", "a"]
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let shape: &[usize] = if *name == "b" { &[40_000] } else { &[200, 201] };
                    let t = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
                    let t = (t * (i + 1) as f64).unwrap();
                    (name.to_string(), Var::from_tensor(&t).unwrap())
                })
                .collect();
            vars
        };
        let vars = make();
        let copy: Vec<(String, Var)> = vars
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap(),
                )
            })
            .collect();
        let anchors = HashMap::from([(
            "a".to_string(),
            Tensor::randn(0f32, 1.0, (200, 201), &dev).unwrap(),
        )]);
        // The fast path runs on CPU tensors (else both sides would be the chain).
        let mut probe = AdamW::new(vec![(vars[..1].to_vec(), 1.0)], 0.0).unwrap();
        let h = Hyper {
            beta1: 0.9,
            beta2: 0.999,
            inv_bc1: 1.0,
            inv_bc2: 1.0,
            eps: 1e-8,
            lr: 0.0,
            decay: 0.0,
        };
        let g = vars[0].1.as_tensor().zeros_like().unwrap();
        assert!(probe.slots[0].fused_step(&g, &h).unwrap());
        let mut fused = AdamW::new(vec![(vars.clone(), 0.5)], 0.05).unwrap();
        let mut chained = AdamW::new(vec![(copy.clone(), 0.5)], 0.05).unwrap();
        fused.set_anchors(&anchors, 0.3);
        chained.set_anchors(&anchors, 0.3);
        for step in 0..3 {
            let grads_for = |vars: &[(String, Var)]| {
                let loss = vars
                    .iter()
                    .map(|(_, v)| v.as_tensor().sqr().unwrap().sum_all().unwrap())
                    .reduce(|a, b| (a + b).unwrap())
                    .unwrap();
                loss.backward().unwrap()
            };
            let lr = 0.01 * (step + 1) as f64;
            fused.update(&grads_for(&vars), lr, true).unwrap();
            chained.update(&grads_for(&copy), lr, false).unwrap();
            for ((name, a), (_, b)) in vars.iter().zip(&copy) {
                let a = a
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let b = b
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(a == b, "{name} differs after step {step}");
            }
        }
    }

    #[test]
    fn cosine_schedule() {
        assert!((cosine_lr(1.0, 0, 100, 0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 50, 100, 0) - 0.5).abs() < 1e-12);
        assert!(cosine_lr(1.0, 100, 100, 0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 4, 100, 10) - 0.5).abs() < 1e-12);
    }
}
