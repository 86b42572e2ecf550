//! Execution backends of a [`Rule`](crate::Rule)'s update, besides the generic candle
//! tensor path in `engine/optimizer.rs`: the fused in-place CPU loop, and the generated
//! C/CUDA kernel source.

pub(crate) mod fused;
pub(crate) mod kernel_source;
