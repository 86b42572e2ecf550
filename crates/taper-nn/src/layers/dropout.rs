//! `Dropout`: inverted dropout in training, the identity in evaluation.
//!
//! Masks come from taper-tensor's seeded generator: `manual_seed` makes them reproducible.

use candle_core::{Result, Tensor};
use taper_tensor::{bernoulli, ModuleT};

use crate::error::check;
use crate::error::Error;

/// Zeroes each element with probability `p` in training and scales the rest by 1/(1−p),
/// so evaluation needs no rescaling (PyTorch's `nn.Dropout`, default p = 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    /// A dropout layer; `p` must lie in [0, 1].
    pub fn new(p: f64) -> crate::error::Result<Self> {
        check("p", p, (0.0..=1.0).contains(&p), "a probability in [0, 1]")?;
        Ok(Self { p })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }
}

/// Functional dropout: identity when `train` is false.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if !train || p == 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    // On the CPU in f32/f64, one node each way (the same mask from the same seed).
    if let Some(y) = crate::cpu::dropout::dropout(x, p)? {
        return Ok(y);
    }
    let mask = bernoulli(x.shape(), 1.0 - p, x.dtype(), x.device())
        .map_err(|e| Error::from(e).into_candle())?;
    x.mul(&mask.affine(1.0 / (1.0 - p), 0.0)?)
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        dropout(x, self.p, train)
    }
}
