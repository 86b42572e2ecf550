//! Execution backends of a [`Rule`](crate::Rule)'s update, besides the generic candle
//! tensor path in `engine/optimizer.rs`: the fused in-place CPU loop, the generated C/CUDA
//! kernel source, its NVRTC compilation and cache, and the fused CUDA launch.

#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub(crate) mod fused;
pub(crate) mod kernel_source;
#[cfg(any(feature = "nvrtc", feature = "cuda"))]
pub(crate) mod nvrtc;
