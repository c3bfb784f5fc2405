//! Tensor operations candle lacks or runs too slowly for training on a CPU.

mod depthwise;
mod maxpool;

pub use depthwise::depthwise_conv2d;
pub use maxpool::max_pool2d;
