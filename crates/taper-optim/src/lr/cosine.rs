//! Cosine schedules: `CosineAnnealingLR` (Loshchilov & Hutter 2017, without restarts)
//! and `CosineAnnealingWarmRestarts` (SGDR), with PyTorch's closed forms.

use std::f64::consts::PI;

use crate::error::check;
use crate::error::Result;
use crate::lr::schedule::Schedule;

/// `CosineAnnealingLR(T_max, eta_min=0)`: η_min + (base − η_min)·(1 + cos(πt/T_max))/2.
/// Past T_max the cosine continues (rising again), as in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealingLr {
    /// Half a period, in steps (> 0).
    pub t_max: u64,
    /// The floor η_min (default 0).
    pub eta_min: f64,
}

impl CosineAnnealingLr {
    /// Half a period of `t_max` steps down to η_min = 0 (change it with
    /// [`CosineAnnealingLr::eta_min`]).
    pub fn new(t_max: u64) -> Self {
        Self {
            t_max,
            eta_min: 0.0,
        }
    }

    /// Builder: the floor η_min.
    pub fn eta_min(mut self, eta_min: f64) -> Self {
        self.eta_min = eta_min;
        self
    }
}

impl Schedule for CosineAnnealingLr {
    fn name(&self) -> &'static str {
        "CosineAnnealingLR"
    }
    fn validate(&self) -> Result<()> {
        let (t, e) = (self.t_max, self.eta_min);
        check(self.name(), "T_max", t as f64, t > 0, "T_max > 0")?;
        check(
            self.name(),
            "eta_min",
            e,
            e >= 0.0 && e.is_finite(),
            "a finite eta_min >= 0",
        )
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let c = (1.0 + (PI * t as f64 / self.t_max as f64).cos()) / 2.0;
        Ok(self.eta_min + (base - self.eta_min) * c)
    }
}

/// `CosineAnnealingWarmRestarts(T_0, T_mult=1, eta_min=0)`: cosine annealing over periods
/// T₀, T₀·T_mult, T₀·T_mult², …
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealingWarmRestarts {
    /// The first period, in steps (> 0).
    pub t_0: u64,
    /// Each period's growth factor (≥ 1, default 1).
    pub t_mult: u64,
    /// The floor η_min (default 0).
    pub eta_min: f64,
}

impl CosineAnnealingWarmRestarts {
    /// Periods of `t_0` steps down to η_min = 0.
    pub fn new(t_0: u64) -> Self {
        Self {
            t_0,
            t_mult: 1,
            eta_min: 0.0,
        }
    }

    /// Builder: each period's growth factor T_mult.
    pub fn t_mult(mut self, t_mult: u64) -> Self {
        self.t_mult = t_mult;
        self
    }

    /// Builder: the floor η_min.
    pub fn eta_min(mut self, eta_min: f64) -> Self {
        self.eta_min = eta_min;
        self
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
    fn validate(&self) -> Result<()> {
        let n = self.name();
        check(n, "T_0", self.t_0 as f64, self.t_0 > 0, "T_0 > 0")?;
        check(
            n,
            "T_mult",
            self.t_mult as f64,
            self.t_mult >= 1,
            "T_mult >= 1",
        )?;
        let e = self.eta_min;
        check(
            n,
            "eta_min",
            e,
            e >= 0.0 && e.is_finite(),
            "a finite eta_min >= 0",
        )
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let (cur, len) = self.position(t);
        let c = (1.0 + (PI * cur as f64 / len as f64).cos()) / 2.0;
        Ok(self.eta_min + (base - self.eta_min) * c)
    }
}
