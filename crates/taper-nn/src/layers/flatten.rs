//! `Flatten`: merges dimensions `start_dim..=end_dim` (PyTorch's `nn.Flatten`).

use candle_core::{Result, Tensor};
use taper_tensor::Module;

use crate::layers::activation::resolve_dim;

/// Flattens a range of dimensions; PyTorch's defaults are `start_dim = 1`, `end_dim = -1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flatten {
    /// First dimension to merge.
    pub start_dim: isize,
    /// Last dimension to merge (negative counts from the end).
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Self::new()
    }
}

impl Flatten {
    /// PyTorch's `nn.Flatten()`: dimensions 1 to the last.
    pub fn new() -> Self {
        Self {
            start_dim: 1,
            end_dim: -1,
        }
    }

    /// Builder: the first dimension to merge.
    pub fn start_dim(mut self, dim: isize) -> Self {
        self.start_dim = dim;
        self
    }

    /// Builder: the last dimension to merge (negative counts from the end).
    pub fn end_dim(mut self, dim: isize) -> Self {
        self.end_dim = dim;
        self
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 0 {
            return x.reshape(1);
        }
        let (s, e) = (
            resolve_dim(x, self.start_dim)?,
            resolve_dim(x, self.end_dim)?,
        );
        if s > e {
            candle_core::bail!("Flatten: start_dim {s} is after end_dim {e}")
        }
        x.flatten(s, e)
    }
}
