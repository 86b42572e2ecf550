//! The documents' gradient-norm-ratio adaptive rate:
//! η_t = η · max(‖g_t‖², ε) / max(‖g_{t−1}‖², ε), with η_1 = η.
//!
//! The rate rises when gradients grow and falls when they shrink, relative to the previous
//! step only (it does not compound). Call [`GradNormRatio::step`] with each step's
//! gradients before the optimizer step.

use taper_tensor::{Gradients, Norm};

use crate::error::check;
use crate::optimizer::Optimizer;
use crate::rule::Rule;
use crate::Result;

/// The gradient-norm-ratio rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradNormRatio {
    eta: f64,
    eps: f64,
    previous: Option<f64>,
}

impl GradNormRatio {
    /// Base rate η and floor ε on the squared norms.
    pub fn new(eta: f64, eps: f64) -> Result<Self> {
        check(
            "GradNormRatio",
            "eta",
            eta,
            eta >= 0.0 && eta.is_finite(),
            "a finite eta >= 0",
        )?;
        check("GradNormRatio", "eps", eps, eps > 0.0, "eps > 0")?;
        Ok(Self {
            eta,
            eps,
            previous: None,
        })
    }

    /// The rate for gradients with squared L2 norm `sq_norm`; remembers it for the next step.
    pub fn rate(&mut self, sq_norm: f64) -> f64 {
        let cur = sq_norm.max(self.eps);
        let lr = match self.previous {
            None => self.eta,
            Some(prev) => self.eta * cur / prev,
        };
        self.previous = Some(cur);
        lr
    }

    /// Computes the rate from `grads` and sets it on every group of `opt`; returns it.
    pub fn step<R: Rule>(&mut self, grads: &Gradients, opt: &mut Optimizer<R>) -> Result<f64> {
        let n = grads.norm(Norm::L2)?;
        let lr = self.rate(n * n);
        opt.set_lr(lr)?;
        Ok(lr)
    }
}
