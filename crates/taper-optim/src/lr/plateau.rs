//! `ReduceLROnPlateau`: the documents' loss-driven learning rate, with PyTorch's semantics.
//!
//! After `patience` steps without improvement of the metric (by more than `threshold`,
//! relative or absolute), every rate is multiplied by `factor` (not below `min_lr`, and only
//! if it changes by more than `eps`); then `cooldown` steps pass before counting again.

use crate::error::check;
use crate::lr::control::{self, LrControl, LrDrive, LrGroups, LrTarget, Signal};
use crate::{error::Error, error::Result};
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

/// ReduceLROnPlateau's configuration: `PlateauConfig::default()` is PyTorch's
/// `ReduceLROnPlateau(mode='min', factor=0.1, patience=10, threshold=1e-4,
/// threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8)`, and each argument is a builder of
/// the same name; [`ReduceLrOnPlateau::new`] checks it.
///
/// ```
/// use taper_optim::{PlateauConfig, PlateauMode, ReduceLrOnPlateau};
/// let plateau = ReduceLrOnPlateau::new(PlateauConfig::default().mode(PlateauMode::Max).patience(3))?;
/// assert!(ReduceLrOnPlateau::new(PlateauConfig::default().factor(1.5)).is_err());
/// # let _ = plateau;
/// # Ok::<(), taper_optim::Error>(())
/// ```
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

macro_rules! plateau_builders {
    ($($(#[$doc:meta])* $field:ident: $ty:ty),* $(,)?) => {
        impl PlateauConfig {
            $(
                $(#[$doc])*
                pub fn $field(mut self, $field: $ty) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

plateau_builders! {
    /// Builder: whether the metric should fall (`Min`) or rise (`Max`).
    mode: PlateauMode,
    /// Builder: the multiplier on each reduction, in [0, 1).
    factor: f64,
    /// Builder: steps without improvement tolerated.
    patience: u64,
    /// Builder: how much better counts as an improvement.
    threshold: f64,
    /// Builder: relative or absolute threshold.
    threshold_mode: ThresholdMode,
    /// Builder: steps to wait after a reduction.
    cooldown: u64,
    /// Builder: the lower bound on every rate.
    min_lr: f64,
    /// Builder: reductions smaller than this are skipped.
    eps: f64,
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
    groups: LrGroups,
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
            groups: LrGroups::All,
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

    /// Builder: the groups it acts on (default every group; `LrGroups::One(i)`, or one
    /// member of an `OptimizerSet` with `set.groups_of(name)?`).
    pub fn groups(mut self, groups: LrGroups) -> Self {
        self.groups = groups;
        self
    }

    /// Records `metric`; reduces the rates when the plateau outlasts the patience. Returns
    /// true when it reduced. The shorthand for [`LrControl::step_with`] with a metric.
    pub fn step(&mut self, metric: f64, opt: &mut dyn LrTarget) -> Result<bool> {
        let before = self.reductions;
        LrControl::step_with(self, Signal::default().metric(metric), opt)?;
        Ok(self.reductions > before)
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

impl LrControl for ReduceLrOnPlateau {
    fn name(&self) -> &'static str {
        "ReduceLROnPlateau"
    }

    fn drive(&self) -> LrDrive {
        LrDrive::Metric
    }

    /// Records `signal.metric` (required, finite); `signal.step` is not used.
    fn step_with(&mut self, signal: Signal<'_>, opt: &mut dyn LrTarget) -> Result<()> {
        let metric = signal.need_metric("ReduceLROnPlateau")?;
        if !metric.is_finite() {
            return Err(Error::InvalidHyperparameter {
                owner: "ReduceLROnPlateau",
                field: "metric",
                value: metric.to_string(),
                expected: "a finite metric",
            });
        }
        let groups = self.groups.indices(opt)?;
        let mut next = self.clone();
        if next.is_better(metric) {
            next.best = metric;
            next.num_bad = 0;
        } else {
            next.num_bad += 1;
        }
        if next.cooldown_counter > 0 {
            next.cooldown_counter -= 1;
            next.num_bad = 0;
        }
        if next.num_bad > next.config.patience {
            let (factor, min_lr, eps) = (self.config.factor, self.config.min_lr, self.config.eps);
            let before = control::snapshot(opt, &groups);
            for (&g, &(old, _)) in groups.iter().zip(&before) {
                let new = (old * factor).max(min_lr);
                if old - new > eps {
                    if let Err(e) = opt.set_group_lr(g, new) {
                        return control::restore(opt, &groups, &before, e);
                    }
                }
            }
            next.cooldown_counter = next.config.cooldown;
            next.num_bad = 0;
            next.reductions += 1;
        }
        *self = next;
        Ok(())
    }
}

impl Stateful for ReduceLrOnPlateau {
    /// Writes `{prefix}.best`, `.num_bad`, `.cooldown_counter` and `.reductions`.
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        out.set_scalar(prefix, "best", self.best);
        out.set_counter(prefix, "num_bad", self.num_bad)?;
        out.set_counter(prefix, "cooldown_counter", self.cooldown_counter)?;
        out.set_counter(prefix, "reductions", self.reductions)?;
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
