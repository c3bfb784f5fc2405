//! One MobileNetV2 training step at 128 px, batch 16, for `perf record`.
use candle_core::{Device, Tensor};
use mpox_trainer::models::{Arch, Network};
fn main() {
    let dev = Device::Cpu;
    let arch: Arch = std::env::args()
        .nth(1)
        .unwrap_or("mobilenet_v2".into())
        .parse()
        .unwrap();
    let net = Network::new(arch, 2, 1, &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (16, 3, 128, 128), &dev).unwrap();
    let y = Tensor::new((0..16u32).map(|i| i % 2).collect::<Vec<_>>(), &dev).unwrap();
    for i in 0..3 {
        let t = std::time::Instant::now();
        let logits = net.forward_t(&x, true).unwrap();
        let f = t.elapsed();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        loss.backward().unwrap();
        eprintln!("step {i}: forward {:?} total {:?}", f, t.elapsed());
    }
}
