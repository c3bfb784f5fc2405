//! Max pooling with a kernel larger than its stride (ResNet's 3×3/2), trainable on every device.
//!
//! candle's `max_pool2d` backward supports only kernel == stride, so the pool is written as the
//! element-wise maximum of its k·k strided views, whose gradient candle already knows.

use candle_core::{bail, Result, Tensor};

/// `MaxPool2d(kernel, stride, padding)` over `x [N, C, H, W]`, padding with −∞ as PyTorch does.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if stride == 0 || kernel == 0 || h + 2 * padding < kernel || w + 2 * padding < kernel {
        bail!("max pool {kernel}/{stride}/{padding} does not fit a {h}x{w} input");
    }
    let oh = (h + 2 * padding - kernel) / stride + 1;
    let ow = (w + 2 * padding - kernel) / stride + 1;
    // Each view starts at ky and spans stride·oh rows, so the padded input needs that much room.
    let hp = (kernel - 1 + stride * oh).max(h + padding);
    let wp = (kernel - 1 + stride * ow).max(w + padding);
    let xp = pad_min(x, 2, padding, hp - h - padding)?;
    let xp = pad_min(&xp, 3, padding, wp - w - padding)?;
    let mut out: Option<Tensor> = None;
    for ky in 0..kernel {
        let rows = xp.narrow(2, ky, stride * oh)?;
        for kx in 0..kernel {
            let view = rows
                .narrow(3, kx, stride * ow)?
                .reshape((n, c, oh, stride, ow, stride))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((n, c, oh, ow))?;
            out = Some(match out {
                None => view,
                Some(acc) => acc.maximum(&view)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("empty max pool kernel".into()))
}

fn pad_min(x: &Tensor, dim: usize, left: usize, right: usize) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let mut dims = x.dims().to_vec();
    if left > 0 {
        dims[dim] = left;
        parts.push(Tensor::full(f32::MIN, dims.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    parts.push(x.clone());
    if right > 0 {
        dims[dim] = right;
        parts.push(Tensor::full(f32::MIN, dims.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    Tensor::cat(&parts, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Reference max pool and its gradient (to the first maximum of each window) by direct loops.
    fn reference(
        x: &[f32],
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> (Vec<f32>, Vec<usize>) {
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let mut out = vec![f32::MIN; oh * ow];
        let mut arg = vec![0; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let ix = (ox * s + kx) as isize - p as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let i = iy as usize * w + ix as usize;
                        if x[i] > out[oy * ow + ox] {
                            out[oy * ow + ox] = x[i];
                            arg[oy * ow + ox] = i;
                        }
                    }
                }
            }
        }
        (out, arg)
    }

    #[test]
    fn matches_loops_in_value_and_gradient() -> Result<()> {
        for &(h, w) in &[(7usize, 7usize), (8, 9), (112, 112), (5, 4)] {
            // Distinct values so the maximum of each window is unique.
            let vals: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % (h * w)) as f32).collect();
            let x = Var::from_vec(vals.clone(), (1, 1, h, w), &Device::Cpu)?;
            let y = max_pool2d(x.as_tensor(), 3, 2, 1)?;
            let (expected, arg) = reference(&vals, h, w, 3, 2, 1);
            assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, expected);
            let grads = y.sum_all()?.backward()?;
            let g = grads
                .get(x.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut want = vec![0f32; h * w];
            for i in arg {
                want[i] += 1.0;
            }
            assert_eq!(g, want, "{h}x{w}");
        }
        Ok(())
    }
}
