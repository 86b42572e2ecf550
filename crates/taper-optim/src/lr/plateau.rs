//! `ReduceLROnPlateau`: the documents' loss-driven learning rate, with PyTorch's semantics.
//!
//! After `patience` steps without improvement of the metric (by more than `threshold`,
//! relative or absolute), every rate is multiplied by `factor` (not below `min_lr`, and only
//! if it changes by more than `eps`); then `cooldown` steps pass before counting again.

use crate::error::check;
use crate::optimizer::Optimizer;
use crate::rule::Rule;
use crate::{Error, Result};
use taper_tensor::{StateDict, Stateful};

/// Whether the metric should go down (a loss) or up (an accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlateauMode {
    /// Lower is better (default).
    #[default]
    Min,
    /// Higher is better.
    Max,
}

/// How `threshold` is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThresholdMode {
    /// Relative: better means below best·(1 − threshold) (min) (default).
    #[default]
    Rel,
    /// Absolute: better means below best − threshold (min).
    Abs,
}

/// ReduceLROnPlateau's configuration; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateauConfig {
    /// Min or max (default min).
    pub mode: PlateauMode,
    /// Multiplier on reduction, in [0, 1) (default 0.1).
    pub factor: f64,
    /// Steps without improvement tolerated (default 10).
    pub patience: u64,
    /// Significance of an improvement (default 1e-4).
    pub threshold: f64,
    /// Relative or absolute threshold (default relative).
    pub threshold_mode: ThresholdMode,
    /// Steps to wait after a reduction (default 0).
    pub cooldown: u64,
    /// Lower bound on every rate (default 0).
    pub min_lr: f64,
    /// Reductions smaller than this are skipped (default 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// The loss-driven rate: call [`ReduceLrOnPlateau::step`] with the metric each epoch.
#[derive(Debug, Clone)]
pub struct ReduceLrOnPlateau {
    config: PlateauConfig,
    best: f64,
    num_bad: u64,
    cooldown_counter: u64,
    reductions: u64,
}

impl ReduceLrOnPlateau {
    /// Validates the configuration (`factor` < 1 is required, as in PyTorch).
    pub fn new(config: PlateauConfig) -> Result<Self> {
        let n = "ReduceLROnPlateau";
        check(
            n,
            "factor",
            config.factor,
            (0.0..1.0).contains(&config.factor),
            "factor in [0, 1)",
        )?;
        check(
            n,
            "threshold",
            config.threshold,
            config.threshold >= 0.0 && config.threshold.is_finite(),
            "a finite threshold >= 0",
        )?;
        check(
            n,
            "min_lr",
            config.min_lr,
            config.min_lr >= 0.0 && config.min_lr.is_finite(),
            "a finite min_lr >= 0",
        )?;
        check(
            n,
            "eps",
            config.eps,
            config.eps >= 0.0 && config.eps.is_finite(),
            "a finite eps >= 0",
        )?;
        let best = match config.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
        Ok(Self {
            config,
            best,
            num_bad: 0,
            cooldown_counter: 0,
            reductions: 0,
        })
    }

    fn is_better(&self, a: f64) -> bool {
        let (t, best) = (self.config.threshold, self.best);
        match (self.config.mode, self.config.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (1.0 + t),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }

    /// Records `metric`; reduces every group's rate when the plateau outlasts the patience.
    /// Returns true when it reduced.
    pub fn step<R: Rule>(&mut self, metric: f64, opt: &mut Optimizer<R>) -> Result<bool> {
        if !metric.is_finite() {
            return Err(Error::InvalidHyperparameter {
                optimizer: "ReduceLROnPlateau",
                field: "metric",
                value: metric.to_string(),
                expected: "a finite metric",
            });
        }
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad = 0;
        } else {
            self.num_bad += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad = 0;
        }
        if self.num_bad <= self.config.patience {
            return Ok(false);
        }
        let (factor, min_lr, eps) = (self.config.factor, self.config.min_lr, self.config.eps);
        for i in 0..opt.groups().len() {
            opt.update_group(i, |r| {
                let old = r.common().lr;
                let new = (old * factor).max(min_lr);
                if old - new > eps {
                    r.common_mut().lr = new;
                }
            })?;
        }
        self.cooldown_counter = self.config.cooldown;
        self.num_bad = 0;
        self.reductions += 1;
        Ok(true)
    }

    /// The best metric seen.
    pub fn best(&self) -> f64 {
        self.best
    }

    /// How many reductions happened.
    pub fn reductions(&self) -> u64 {
        self.reductions
    }
}

impl Stateful for ReduceLrOnPlateau {
    /// Writes `{prefix}.best`, `.num_bad`, `.cooldown_counter` and `.reductions`.
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        out.set_scalar(prefix, "best", self.best);
        out.set_scalar(prefix, "num_bad", self.num_bad as f64);
        out.set_scalar(prefix, "cooldown_counter", self.cooldown_counter as f64);
        out.set_scalar(prefix, "reductions", self.reductions as f64);
        Ok(())
    }

    /// `best` must be a number or the starting ±∞ (not NaN), the counters whole numbers in
    /// range, and the cooldown left no longer than the configured cooldown.
    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.read(prefix, state).map(|_| ())
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        (
            self.best,
            self.num_bad,
            self.cooldown_counter,
            self.reductions,
        ) = self.read(prefix, state)?;
        Ok(())
    }
}

impl ReduceLrOnPlateau {
    fn read(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<(f64, u64, u64, u64)> {
        let best = state.not_nan(prefix, "best")?;
        let num_bad = state.counter(prefix, "num_bad")?;
        let cooldown = state.counter(prefix, "cooldown_counter")?;
        if cooldown > self.config.cooldown {
            return Err(taper_tensor::Error::State {
                key: format!("{prefix}.cooldown_counter"),
                reason: format!(
                    "is {cooldown}; expected at most the configured cooldown, {}",
                    self.config.cooldown
                ),
            });
        }
        Ok((
            best,
            num_bad,
            cooldown,
            state.counter(prefix, "reductions")?,
        ))
    }
}
