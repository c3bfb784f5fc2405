//! The GAN that enlarges the mpox class: DCGAN (as in the source paper) and data-efficient options.

pub mod sample;
