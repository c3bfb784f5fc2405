//! Times pieces of a transposed convolution and a convolution at DCGAN shapes.
use candle_core::{Device, Tensor};
use std::time::Instant;
fn t<F: FnMut()>(name: &str, mut f: F) {
    f();
    let s = Instant::now();
    for _ in 0..5 {
        f();
    }
    eprintln!("{name}: {:.1} ms", s.elapsed().as_secs_f64() * 1e3 / 5.0);
}
fn main() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (64, 256, 8, 8), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (256, 128, 4, 4), &dev).unwrap();
    t("convT total", || {
        mpox_trainer::ops::conv_transpose2d(&x, &w, 2, 1).unwrap();
    });
    let wt = w.reshape((256, 128 * 16)).unwrap().t().unwrap();
    let wtc = wt.contiguous().unwrap();
    let xc = x
        .reshape((64, 256, 64))
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((256, 64 * 64))
        .unwrap();
    t("channels_first copy", || {
        x.reshape((64, 256, 64))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap();
    });
    t("matmul transposed lhs", || {
        wt.matmul(&xc).unwrap();
    });
    t("matmul contiguous lhs", || {
        wtc.matmul(&xc).unwrap();
    });
    let a = Tensor::randn(0f32, 1.0, (2048, 256), &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, (256, 4096), &dev).unwrap();
    t("plain 2048x256x4096 matmul", || {
        a.matmul(&b).unwrap();
    });
    let xd = Tensor::randn(0f32, 1.0, (64, 128, 16, 16), &dev).unwrap();
    let wd = Tensor::randn(0f32, 1.0, (256, 128, 4, 4), &dev).unwrap();
    t("conv 128->256 s2 total", || {
        mpox_trainer::ops::conv2d(&xd, &wd, 2, 1).unwrap();
    });
}
