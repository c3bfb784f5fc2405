//! The GAN that enlarges the mpox class: DCGAN (as in the source paper) and data-efficient options.

pub mod diffaug;
pub mod eval;
pub mod model;
pub mod sample;
pub mod train;
