//! AdamW with per-parameter learning-rate groups and a state that can be saved and restored,
//! so a resumed run continues exactly where it stopped (candle's AdamW keeps its moments private).

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Tensor, Var};

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
            s.m = ((&s.m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            s.v = ((&s.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&s.m / bc1)? / ((&s.v / bc2)?.sqrt()? + self.eps)?)?;
            let theta = s.var.as_tensor();
            let decayed = match (&s.anchor, s.decay) {
                (Some(a), _) => (theta - ((theta - a)? * (lr * self.anchor_decay))?)?,
                (None, true) => (theta * (1.0 - lr * self.weight_decay))?,
                (None, false) => theta.clone(),
            };
            s.var.set(&(decayed - (update * lr)?)?)?;
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

    #[test]
    fn cosine_schedule() {
        assert!((cosine_lr(1.0, 0, 100, 0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 50, 100, 0) - 0.5).abs() < 1e-12);
        assert!(cosine_lr(1.0, 100, 100, 0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 4, 100, 10) - 0.5).abs() < 1e-12);
    }
}
