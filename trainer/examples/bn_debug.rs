//! Debug: eval-mode vs train-mode accuracy of a checkpoint on a data folder.
use candle_core::{Device, Tensor};
use mpox_trainer::models::{Arch, Network};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dev = Device::Cpu;
    let arch: Arch = args[1].parse().unwrap();
    let net = Network::new(arch, 2, 0, &dev).unwrap();
    net.load_checkpoint(std::path::Path::new(&args[2])).unwrap();
    let size: u32 = args[4].parse().unwrap();
    let pre = mpox_sdk::Preprocessing::imagenet(size);
    for (label, class) in ["not_mpox", "mpox"].iter().enumerate() {
        let files = mpox_trainer::dataset::list_images(&std::path::Path::new(&args[3]).join(class))
            .unwrap();
        let flat: Vec<f32> = files
            .iter()
            .take(16)
            .flat_map(|f| pre.tensor(&mpox_trainer::dataset::load_image(f).unwrap()))
            .collect();
        let n = flat.len() / (3 * (size * size) as usize);
        let x = Tensor::from_vec(flat, (n, 3, size as usize, size as usize), &dev).unwrap();
        let e = net
            .forward_t(&x, false)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        // train mode changes running stats but we do not save
        let t = net
            .forward_t(&x, true)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        let acc =
            |v: &[u32]| v.iter().filter(|&&p| p as usize == label).count() as f32 / v.len() as f32;
        println!(
            "{class}: eval acc {:.2} train-mode acc {:.2}",
            acc(&e),
            acc(&t)
        );
    }
    let data = net.varmap().data().lock().unwrap();
    for k in [
        "features.1.conv.0.1.running_var",
        "features.10.conv.1.1.running_var",
        "features.18.1.running_mean",
        "features.18.1.running_var",
    ] {
        let v = data[k].as_tensor().to_vec1::<f32>().unwrap();
        println!("{k}: {:?}", &v[..4]);
    }
}
