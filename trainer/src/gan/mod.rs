//! The GAN that enlarges the mpox class: DCGAN (as in the source paper) and a data-efficient
//! projected GAN (FastGAN-style generator, discriminator on frozen pretrained features).

pub mod diffaug;
pub mod eval;
pub mod fastgan;
pub mod folds;
pub mod model;
pub mod pack;
pub mod projected;
pub mod sample;
pub mod select;
pub mod train;
