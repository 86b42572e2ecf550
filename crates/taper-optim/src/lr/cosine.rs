//! Cosine schedules: `CosineAnnealingLR` (Loshchilov & Hutter 2017, without restarts)
//! and `CosineAnnealingWarmRestarts` (SGDR), with PyTorch's closed forms.

use std::f64::consts::PI;

use crate::error::check;
use crate::error::Result;
use crate::lr::schedule::Schedule;

/// `CosineAnnealingLR`: η_min + (base − η_min)·(1 + cos(πt/T_max))/2. Past T_max the cosine
/// continues (rising again), as in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealingLr {
    t_max: u64,
    eta_min: f64,
}

impl CosineAnnealingLr {
    /// Half a period of `t_max` steps down to `eta_min` (PyTorch's default η_min is 0).
    pub fn new(t_max: u64, eta_min: f64) -> Result<Self> {
        check(
            "CosineAnnealingLR",
            "T_max",
            t_max as f64,
            t_max > 0,
            "T_max > 0",
        )?;
        check(
            "CosineAnnealingLR",
            "eta_min",
            eta_min,
            eta_min >= 0.0 && eta_min.is_finite(),
            "a finite eta_min >= 0",
        )?;
        Ok(Self { t_max, eta_min })
    }
}

impl Schedule for CosineAnnealingLr {
    fn name(&self) -> &'static str {
        "CosineAnnealingLR"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let c = (1.0 + (PI * t as f64 / self.t_max as f64).cos()) / 2.0;
        Ok(self.eta_min + (base - self.eta_min) * c)
    }
}

/// `CosineAnnealingWarmRestarts`: cosine annealing over periods T₀, T₀·T_mult, T₀·T_mult², …
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealingWarmRestarts {
    t_0: u64,
    t_mult: u64,
    eta_min: f64,
}

impl CosineAnnealingWarmRestarts {
    /// First period `t_0`, growth `t_mult` ≥ 1 (PyTorch's default 1), floor `eta_min`.
    pub fn new(t_0: u64, t_mult: u64, eta_min: f64) -> Result<Self> {
        let name = "CosineAnnealingWarmRestarts";
        check(name, "T_0", t_0 as f64, t_0 > 0, "T_0 > 0")?;
        check(name, "T_mult", t_mult as f64, t_mult >= 1, "T_mult >= 1")?;
        check(
            name,
            "eta_min",
            eta_min,
            eta_min >= 0.0 && eta_min.is_finite(),
            "a finite eta_min >= 0",
        )?;
        Ok(Self {
            t_0,
            t_mult,
            eta_min,
        })
    }

    /// (position in the current period, period length) at step t.
    fn position(&self, t: u64) -> (u64, u64) {
        if self.t_mult == 1 {
            return (t % self.t_0, self.t_0);
        }
        // Walk the geometric periods; integer arithmetic avoids PyTorch's log rounding.
        let (mut start, mut len) = (0u64, self.t_0);
        // `t - start >= len` rather than `t >= start + len`, and a saturating product:
        // with a huge T_mult the periods outgrow u64, which must neither overflow nor loop.
        while t - start >= len {
            start += len;
            len = len.saturating_mul(self.t_mult);
        }
        (t - start, len)
    }
}

impl Schedule for CosineAnnealingWarmRestarts {
    fn name(&self) -> &'static str {
        "CosineAnnealingWarmRestarts"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let (cur, len) = self.position(t);
        let c = (1.0 + (PI * cur as f64 / len as f64).cos()) / 2.0;
        Ok(self.eta_min + (base - self.eta_min) * c)
    }
}
