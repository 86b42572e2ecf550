//! `OneCycleLR` (Smith & Topin 2018): warm up to `max_lr`, anneal far below the start,
//! cycling the momentum (SGD's momentum, Adam's β₁) the other way. PyTorch's phases,
//! defaults and annealing functions; the schedule sets absolute rates (the optimizer's
//! base rate is not used).

use std::f64::consts::PI;

use crate::error::check;
use crate::lr::schedule::Schedule;
use crate::{error::Error, error::Result};

/// How OneCycle interpolates within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anneal {
    /// Cosine (PyTorch's default `anneal_strategy='cos'`).
    #[default]
    Cos,
    /// Linear.
    Linear,
}

impl Anneal {
    /// From `start` to `end` at fraction `pct` of the way.
    pub(crate) fn at(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// `OneCycleLR(max_lr, total_steps, pct_start=0.3, anneal_strategy='cos',
/// cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25,
/// final_div_factor=1e4, three_phase=False)`: [`OneCycleLr::new`] takes the first two, the
/// others are builders of the same names.
///
/// With momentum cycling on (the default), every group must have a momentum or β₁ to cycle:
/// on plain SGD it turns heavy-ball momentum on (PyTorch writes `group['momentum']`), and
/// on an algorithm without one (Adagrad) attaching the scheduler is an error, as in PyTorch;
/// turn cycling off with `.cycle_momentum(false)` there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycleLr {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Length of the cycle in steps.
    pub total_steps: u64,
    /// Fraction of the cycle spent increasing the rate (default 0.3).
    pub pct_start: f64,
    /// Interpolation (default cosine).
    pub anneal_strategy: Anneal,
    /// Initial rate = max_lr / div_factor (default 25).
    pub div_factor: f64,
    /// Final rate = initial / final_div_factor (default 1e4).
    pub final_div_factor: f64,
    /// Three phases (up, back down to the initial rate, then to the final) instead of two.
    pub three_phase: bool,
    /// Momentum range (base, max), cycled inversely to the rate; `None` disables cycling
    /// (default (0.85, 0.95)).
    pub momentum: Option<(f64, f64)>,
}

struct Phase {
    end_step: f64,
    lr: (f64, f64),
    momentum: (f64, f64),
}

impl OneCycleLr {
    /// A cycle of `total_steps` peaking at `max_lr`, with PyTorch's defaults.
    pub fn new(max_lr: f64, total_steps: u64) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal_strategy: Anneal::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            momentum: Some((0.85, 0.95)),
        }
    }

    /// Builder: the fraction of the cycle spent increasing the rate.
    pub fn pct_start(mut self, pct_start: f64) -> Self {
        self.pct_start = pct_start;
        self
    }

    /// Builder: cosine or linear interpolation.
    pub fn anneal_strategy(mut self, anneal: Anneal) -> Self {
        self.anneal_strategy = anneal;
        self
    }

    /// Builder: initial rate = max_lr / div_factor.
    pub fn div_factor(mut self, div_factor: f64) -> Self {
        self.div_factor = div_factor;
        self
    }

    /// Builder: final rate = initial rate / final_div_factor.
    pub fn final_div_factor(mut self, final_div_factor: f64) -> Self {
        self.final_div_factor = final_div_factor;
        self
    }

    /// Builder: three phases instead of two.
    pub fn three_phase(mut self, three_phase: bool) -> Self {
        self.three_phase = three_phase;
        self
    }

    /// Builder: cycle the momentum (or β₁) inversely to the rate, or leave it alone.
    pub fn cycle_momentum(mut self, on: bool) -> Self {
        self.momentum = on.then(|| self.momentum.unwrap_or((0.85, 0.95)));
        self
    }

    /// Builder: the lowest momentum of the cycle (turns cycling on).
    pub fn base_momentum(mut self, base: f64) -> Self {
        self.momentum = Some((base, self.momentum.unwrap_or((0.85, 0.95)).1));
        self
    }

    /// Builder: the highest momentum of the cycle (turns cycling on).
    pub fn max_momentum(mut self, max: f64) -> Self {
        self.momentum = Some((self.momentum.unwrap_or((0.85, 0.95)).0, max));
        self
    }

    fn check(&self) -> Result<()> {
        let n = "OneCycleLR";
        check(
            n,
            "max_lr",
            self.max_lr,
            self.max_lr > 0.0 && self.max_lr.is_finite(),
            "a finite max_lr > 0",
        )?;
        check(
            n,
            "total_steps",
            self.total_steps as f64,
            self.total_steps > 1,
            "total_steps > 1",
        )?;
        let p = self.pct_start;
        check(n, "pct_start", p, p > 0.0 && p < 1.0, "pct_start in (0, 1)")?;
        check(
            n,
            "div_factor",
            self.div_factor,
            self.div_factor > 0.0 && self.div_factor.is_finite(),
            "a finite div_factor > 0",
        )?;
        check(
            n,
            "final_div_factor",
            self.final_div_factor,
            self.final_div_factor > 0.0 && self.final_div_factor.is_finite(),
            "a finite final_div_factor > 0",
        )?;
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        check(
            n,
            "div_factor",
            self.div_factor,
            initial.is_finite() && min_lr.is_finite(),
            "a div_factor and final_div_factor giving finite rates",
        )?;
        if let Some((lo, hi)) = self.momentum {
            check(
                n,
                "base_momentum",
                lo,
                (0.0..=hi).contains(&lo),
                "0 <= base_momentum <= max_momentum",
            )?;
            check(n, "max_momentum", hi, hi < 1.0, "max_momentum < 1")?;
        }
        Ok(())
    }

    fn phases(&self) -> Vec<Phase> {
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        let (lo, hi) = self.momentum.unwrap_or((0.0, 0.0));
        let total = self.total_steps as f64;
        let up = self.pct_start * total - 1.0;
        if self.three_phase {
            vec![
                Phase {
                    end_step: up,
                    lr: (initial, self.max_lr),
                    momentum: (hi, lo),
                },
                Phase {
                    end_step: 2.0 * self.pct_start * total - 2.0,
                    lr: (self.max_lr, initial),
                    momentum: (lo, hi),
                },
                Phase {
                    end_step: total - 1.0,
                    lr: (initial, min_lr),
                    momentum: (hi, hi),
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: up,
                    lr: (initial, self.max_lr),
                    momentum: (hi, lo),
                },
                Phase {
                    end_step: total - 1.0,
                    lr: (self.max_lr, min_lr),
                    momentum: (lo, hi),
                },
            ]
        }
    }

    /// (lr, momentum) at step t, as PyTorch's `get_lr`.
    fn at(&self, t: u64) -> Result<(f64, f64)> {
        if t > self.total_steps {
            return Err(Error::ScheduleFinished {
                schedule: "OneCycleLR",
                step: t,
                total_steps: self.total_steps,
            });
        }
        let phases = self.phases();
        let mut start = 0.0;
        for (i, ph) in phases.iter().enumerate() {
            if t as f64 <= ph.end_step || i == phases.len() - 1 {
                let pct = (t as f64 - start) / (ph.end_step - start);
                return Ok((
                    self.anneal_strategy.at(ph.lr.0, ph.lr.1, pct),
                    self.anneal_strategy.at(ph.momentum.0, ph.momentum.1, pct),
                ));
            }
            start = ph.end_step;
        }
        unreachable!("the last phase always matches")
    }
}

impl Schedule for OneCycleLr {
    fn name(&self) -> &'static str {
        "OneCycleLR"
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
    fn lr(&self, _base: f64, t: u64) -> Result<f64> {
        Ok(self.at(t)?.0)
    }
    fn momentum(&self, t: u64) -> Option<f64> {
        self.momentum?;
        self.at(t).ok().map(|(_, m)| m)
    }
}
