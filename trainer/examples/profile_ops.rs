//! Times single ops at ResNet-18 shapes (128 px, batch 16).
use candle_core::{Device, Tensor, Var};
use std::time::Instant;
fn t<F: FnMut()>(name: &str, mut f: F) {
    f();
    let s = Instant::now();
    for _ in 0..3 {
        f();
    }
    eprintln!("{name}: {:.1} ms", s.elapsed().as_secs_f64() * 1e3 / 3.0);
}
fn main() {
    let dev = Device::Cpu;
    for (c, hw) in [(64usize, 32usize), (128, 16), (256, 8)] {
        let x = Var::randn(0f32, 1.0, (16, c, hw, hw), &dev).unwrap();
        let w = Var::randn(0f32, 0.1, (c, c, 3, 3), &dev).unwrap();
        t(&format!("im2col conv fwd c{c} {hw}"), || {
            mpox_trainer::ops::conv2d(&x, &w, 1, 1).unwrap();
        });
        t(&format!("candle conv fwd c{c} {hw}"), || {
            x.conv2d(&w, 1, 1, 1, 1).unwrap();
        });
        t(&format!("im2col conv fwd+bwd c{c} {hw}"), || {
            mpox_trainer::ops::conv2d(&x, &w, 1, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        t(&format!("candle conv fwd+bwd c{c} {hw}"), || {
            x.conv2d(&w, 1, 1, 1, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        t(&format!("maxpool fwd+bwd c{c} {hw}"), || {
            mpox_trainer::ops::max_pool2d(&x, 3, 2, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        let wm = w.reshape((c, c * 9)).unwrap();
        let cols = Tensor::randn(0f32, 1.0, (16, c * 9, hw * hw), &dev).unwrap();
        t(&format!("broadcast_matmul c{c} {hw}"), || {
            wm.broadcast_matmul(&cols).unwrap();
        });
    }
}
