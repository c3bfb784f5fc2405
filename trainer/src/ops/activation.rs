//! Element-wise activations with their gradients in one sweep each way (candle builds ReLU6 and
//! LeakyReLU from several broadcast ops, each with its own backward pass).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{cpu_slice, on_cpu};

/// An activation `f` with derivative `df`, both of the input.
#[derive(Clone, Copy)]
enum Kind {
    Relu6,
    Leaky(f32),
}

impl Kind {
    fn f(self, v: f32) -> f32 {
        match self {
            Kind::Relu6 => v.clamp(0.0, 6.0),
            Kind::Leaky(a) => {
                if v > 0.0 {
                    v
                } else {
                    a * v
                }
            }
        }
    }

    fn df(self, v: f32) -> f32 {
        match self {
            Kind::Relu6 => {
                if v > 0.0 && v < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Kind::Leaky(a) => {
                if v > 0.0 {
                    1.0
                } else {
                    a
                }
            }
        }
    }
}

struct Act(Kind);

impl CustomOp1 for Act {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "activation", "input")?;
        let y: Vec<f32> = x.iter().map(|&v| self.0.f(v)).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &ActGrad(self.0))?,
        ))
    }
}

struct ActGrad(Kind);

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "activation-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1, "activation", "input")?;
        let g = cpu_slice(s2, l2, "activation", "gradient")?;
        let out: Vec<f32> = x.iter().zip(g).map(|(&v, &g)| g * self.0.df(v)).collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `min(max(x, 0), 6)`; its gradient is 1 strictly inside (0, 6), else 0.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    if !on_cpu(x) {
        return x.clamp(0f32, 6f32);
    }
    x.contiguous()?.apply_op1(Act(Kind::Relu6))
}

/// `x` for positive inputs, `slope·x` otherwise.
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    if !on_cpu(x) {
        return x.maximum(&(x * f64::from(slope))?);
    }
    x.contiguous()?.apply_op1(Act(Kind::Leaky(slope)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn relu6_value_and_gradient() -> Result<()> {
        let x = Var::new(&[-1f32, 0.5, 5.9, 6.5, 3.0], &Device::Cpu)?;
        let y = relu6(x.as_tensor())?;
        assert_eq!(y.to_vec1::<f32>()?, [0.0, 0.5, 5.9, 6.0, 3.0]);
        let g = (y * Tensor::new(&[1f32, 2., 3., 4., 5.], &Device::Cpu)?)?
            .sum_all()?
            .backward()?;
        assert_eq!(
            g.get(&x).unwrap().to_vec1::<f32>()?,
            [0.0, 2.0, 3.0, 0.0, 5.0]
        );
        Ok(())
    }

    #[test]
    fn leaky_relu_value_and_gradient() -> Result<()> {
        let x = Var::new(&[-2f32, 0.5, 3.0], &Device::Cpu)?;
        let y = leaky_relu(x.as_tensor(), 0.2)?;
        assert_eq!(y.to_vec1::<f32>()?, [-0.4, 0.5, 3.0]);
        let g = y.sum_all()?.backward()?;
        assert_eq!(g.get(&x).unwrap().to_vec1::<f32>()?, [0.2, 1.0, 1.0]);
        Ok(())
    }
}
