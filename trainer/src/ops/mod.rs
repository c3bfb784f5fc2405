//! Tensor operations candle lacks or runs too slowly for training on a CPU.

mod activation;
mod batchnorm;
mod depthwise;
mod im2col;
mod maxpool;

pub use activation::{leaky_relu, relu6};
pub use batchnorm::{batch_norm, channel_stats};
pub use depthwise::depthwise_conv2d;
pub use im2col::{conv1x1, conv2d, conv_transpose2d};
pub use maxpool::max_pool2d;
