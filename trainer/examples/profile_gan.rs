//! Times the parts of one DCGAN step (64 px, batch 64).
use candle_core::{Device, Tensor};
use mpox_trainer::gan::model::{Gan, Z_DIM};
use std::time::Instant;
fn main() {
    let dev = Device::Cpu;
    let gan = Gan::new(64, false, 0, &dev).unwrap();
    let z = Tensor::randn(0f32, 1.0, (64, Z_DIM), &dev).unwrap();
    let real = Tensor::randn(0f32, 0.5, (64, 3, 64, 64), &dev).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let fake = gan.g.forward_t(&z, true).unwrap();
        let t1 = t.elapsed();
        let d = gan.d.forward_t(&real, true).unwrap();
        let t2 = t.elapsed();
        let g = d.sum_all().unwrap().backward().unwrap();
        let t3 = t.elapsed();
        let d2 = gan.d.forward_t(&fake, true).unwrap();
        let g2 = d2.sum_all().unwrap().backward().unwrap();
        let t4 = t.elapsed();
        drop((g, g2));
        eprintln!(
            "G fwd {:?}, D fwd {:?}, D bwd {:?}, D fwd+bwd through G {:?}",
            t1,
            t2 - t1,
            t3 - t2,
            t4 - t3
        );
    }
}
