//! Learning-rate schedules as pure functions of the step: the source documents' decays and
//! torch.optim.lr_scheduler's step-shaped ones.
//!
//! A [`Schedule`] maps (base learning rate, step t) to the learning rate, with t = 0 before
//! the first scheduler step, as PyTorch counts `last_epoch`. Formulas are PyTorch's closed
//! forms; [`crate::LrScheduler`] applies a schedule to an optimizer.

use std::fmt::Debug;

use crate::error::check;
use crate::{error::Error, error::Result};

/// A learning rate as a function of the base rate and the step.
///
/// A schedule is a configuration: `new` takes PyTorch's required arguments, every argument
/// with a PyTorch default is a builder method of the same name, and
/// [`Schedule::validate`] checks it all once, when an [`LrScheduler`](crate::LrScheduler)
/// attaches it (or a composition holding it is checked), naming the field at fault.
pub trait Schedule: Debug + Send + Sync {
    /// The name PyTorch gives this schedule (or the documents' name).
    fn name(&self) -> &'static str;

    /// Checks the configuration, naming the field at fault (default: nothing to check).
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// The learning rate at step `t` for a group whose base rate is `base`.
    fn lr(&self, base: f64, t: u64) -> Result<f64>;

    /// The momentum (or Adam's β₁) at step `t`, for schedules that cycle it (OneCycleLR).
    fn momentum(&self, _t: u64) -> Option<f64> {
        None
    }
}

impl Schedule for Box<dyn Schedule> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn validate(&self) -> Result<()> {
        (**self).validate()
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        (**self).lr(base, t)
    }
    fn momentum(&self, t: u64) -> Option<f64> {
        (**self).momentum(t)
    }
}

/// A user function's factor at step `t`, or an error naming the schedule when it is not
/// finite (LambdaLR, MultiplicativeLR).
pub(crate) fn finite_factor(schedule: &'static str, factor: f64, t: u64) -> Result<f64> {
    if factor.is_finite() {
        Ok(factor)
    } else {
        Err(Error::InvalidHyperparameter {
            owner: schedule,
            field: "lr_lambda",
            value: format!("{factor} at step {t}"),
            expected: "a finite factor",
        })
    }
}

fn positive(name: &'static str, field: &'static str, v: u64) -> Result<()> {
    check(name, field, v as f64, v > 0, "a positive integer")
}

fn gamma_ok(name: &'static str, gamma: f64) -> Result<()> {
    check(
        name,
        "gamma",
        gamma,
        gamma > 0.0 && gamma.is_finite(),
        "a finite gamma > 0",
    )
}

/// The documents' inverse-time decay: α_t = α / (1 + β·t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InverseTime {
    /// Decay rate β ≥ 0.
    pub beta: f64,
}

impl InverseTime {
    /// Decay rate β ≥ 0.
    pub fn new(beta: f64) -> Self {
        Self { beta }
    }
}

impl Schedule for InverseTime {
    fn name(&self) -> &'static str {
        "InverseTime"
    }
    fn validate(&self) -> Result<()> {
        let b = self.beta;
        check(
            self.name(),
            "beta",
            b,
            b >= 0.0 && b.is_finite(),
            "a finite beta >= 0",
        )
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base / (1.0 + self.beta * t as f64))
    }
}

/// The documents' inverse-square-root decay: α_t = α / √(1 + β·t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InverseSqrt {
    /// Decay rate β ≥ 0.
    pub beta: f64,
}

impl InverseSqrt {
    /// Decay rate β ≥ 0.
    pub fn new(beta: f64) -> Self {
        Self { beta }
    }
}

impl Schedule for InverseSqrt {
    fn name(&self) -> &'static str {
        "InverseSqrt"
    }
    fn validate(&self) -> Result<()> {
        let b = self.beta;
        check(
            self.name(),
            "beta",
            b,
            b >= 0.0 && b.is_finite(),
            "a finite beta >= 0",
        )
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base / (1.0 + self.beta * t as f64).sqrt())
    }
}

/// `StepLR(step_size, gamma=0.1)`: base·γ^⌊t / step_size⌋.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLr {
    /// Steps between decays (> 0).
    pub step_size: u64,
    /// The factor γ (default 0.1).
    pub gamma: f64,
}

impl StepLr {
    /// Multiply by γ = 0.1 every `step_size` steps (change γ with [`StepLr::gamma`]).
    pub fn new(step_size: u64) -> Self {
        Self {
            step_size,
            gamma: 0.1,
        }
    }

    /// Builder: the factor γ.
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }
}

impl Schedule for StepLr {
    fn name(&self) -> &'static str {
        "StepLR"
    }
    fn validate(&self) -> Result<()> {
        positive(self.name(), "step_size", self.step_size)?;
        gamma_ok(self.name(), self.gamma)
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base * self.gamma.powi((t / self.step_size) as i32))
    }
}

/// `MultiStepLR(milestones, gamma=0.1)`: base·γ^(number of milestones ≤ t).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    /// The steps at which the rate is multiplied by γ, increasing.
    pub milestones: Vec<u64>,
    /// The factor γ (default 0.1).
    pub gamma: f64,
}

impl MultiStepLr {
    /// Multiply by γ = 0.1 at each milestone (sorted here).
    pub fn new(mut milestones: Vec<u64>) -> Self {
        milestones.sort_unstable();
        Self {
            milestones,
            gamma: 0.1,
        }
    }

    /// Builder: the factor γ.
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }
}

impl Schedule for MultiStepLr {
    fn name(&self) -> &'static str {
        "MultiStepLR"
    }
    fn validate(&self) -> Result<()> {
        gamma_ok(self.name(), self.gamma)
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let passed = self.milestones.partition_point(|&m| m <= t);
        Ok(base * self.gamma.powi(passed as i32))
    }
}

/// `ExponentialLR(gamma)`: base·γᵗ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialLr {
    /// The factor γ per step.
    pub gamma: f64,
}

impl ExponentialLr {
    /// Multiply by `gamma` every step.
    pub fn new(gamma: f64) -> Self {
        Self { gamma }
    }
}

impl Schedule for ExponentialLr {
    fn name(&self) -> &'static str {
        "ExponentialLR"
    }
    fn validate(&self) -> Result<()> {
        gamma_ok(self.name(), self.gamma)
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base * self.gamma.powi(t as i32))
    }
}

/// `ConstantLR(factor=1/3, total_iters=5)`: base·factor for t < total_iters, then base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConstantLr {
    /// The factor, in [0, 1] (default 1/3).
    pub factor: f64,
    /// Steps it applies for (default 5).
    pub total_iters: u64,
}

impl Default for ConstantLr {
    fn default() -> Self {
        Self::new()
    }
}

impl ConstantLr {
    /// PyTorch's defaults: factor 1/3 for 5 steps.
    pub fn new() -> Self {
        Self {
            factor: 1.0 / 3.0,
            total_iters: 5,
        }
    }

    /// Builder: the factor.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Builder: the steps it applies for.
    pub fn total_iters(mut self, total_iters: u64) -> Self {
        self.total_iters = total_iters;
        self
    }
}

impl Schedule for ConstantLr {
    fn name(&self) -> &'static str {
        "ConstantLR"
    }
    fn validate(&self) -> Result<()> {
        let f = self.factor;
        check(
            self.name(),
            "factor",
            f,
            (0.0..=1.0).contains(&f),
            "factor in [0, 1]",
        )
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(if t < self.total_iters {
            base * self.factor
        } else {
            base
        })
    }
}

/// `LinearLR(start_factor=1/3, end_factor=1.0, total_iters=5)`: the factor moves linearly
/// from `start_factor` to `end_factor` over `total_iters` steps, then stays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearLr {
    /// The first factor, in (0, 1] (default 1/3).
    pub start_factor: f64,
    /// The last factor, in [0, 1] (default 1).
    pub end_factor: f64,
    /// Steps from the first to the last (default 5).
    pub total_iters: u64,
}

impl Default for LinearLr {
    fn default() -> Self {
        Self::new()
    }
}

impl LinearLr {
    /// PyTorch's defaults: from 1/3 to 1 over 5 steps.
    pub fn new() -> Self {
        Self {
            start_factor: 1.0 / 3.0,
            end_factor: 1.0,
            total_iters: 5,
        }
    }

    /// Builder: the first factor.
    pub fn start_factor(mut self, start_factor: f64) -> Self {
        self.start_factor = start_factor;
        self
    }

    /// Builder: the last factor.
    pub fn end_factor(mut self, end_factor: f64) -> Self {
        self.end_factor = end_factor;
        self
    }

    /// Builder: the steps from the first factor to the last.
    pub fn total_iters(mut self, total_iters: u64) -> Self {
        self.total_iters = total_iters;
        self
    }
}

impl Schedule for LinearLr {
    fn name(&self) -> &'static str {
        "LinearLR"
    }
    fn validate(&self) -> Result<()> {
        let (s, e) = (self.start_factor, self.end_factor);
        check(
            self.name(),
            "start_factor",
            s,
            s > 0.0 && s <= 1.0,
            "start_factor in (0, 1]",
        )?;
        check(
            self.name(),
            "end_factor",
            e,
            (0.0..=1.0).contains(&e),
            "end_factor in [0, 1]",
        )?;
        positive(self.name(), "total_iters", self.total_iters)
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let frac = t.min(self.total_iters) as f64 / self.total_iters as f64;
        Ok(base * (self.start_factor + (self.end_factor - self.start_factor) * frac))
    }
}

/// `PolynomialLR(total_iters=5, power=1.0)`: base·(1 − min(t, T)/T)^power.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolynomialLr {
    /// T, the steps of decay (default 5).
    pub total_iters: u64,
    /// The power (default 1).
    pub power: f64,
}

impl Default for PolynomialLr {
    fn default() -> Self {
        Self::new()
    }
}

impl PolynomialLr {
    /// PyTorch's defaults: linear decay to 0 over 5 steps.
    pub fn new() -> Self {
        Self {
            total_iters: 5,
            power: 1.0,
        }
    }

    /// Builder: T, the steps of decay.
    pub fn total_iters(mut self, total_iters: u64) -> Self {
        self.total_iters = total_iters;
        self
    }

    /// Builder: the power.
    pub fn power(mut self, power: f64) -> Self {
        self.power = power;
        self
    }
}

impl Schedule for PolynomialLr {
    fn name(&self) -> &'static str {
        "PolynomialLR"
    }
    fn validate(&self) -> Result<()> {
        positive(self.name(), "total_iters", self.total_iters)?;
        let p = self.power;
        check(
            self.name(),
            "power",
            p,
            p >= 0.0 && p.is_finite(),
            "a finite power >= 0",
        )
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let frac = t.min(self.total_iters) as f64 / self.total_iters as f64;
        Ok(base * (1.0 - frac).powf(self.power))
    }
}

/// `LambdaLR`: base·f(t) for a user function f.
pub struct LambdaLr {
    f: Box<dyn Fn(u64) -> f64 + Send + Sync>,
}

impl LambdaLr {
    /// The factor as a function of the step.
    pub fn new(f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> Self {
        Self { f: Box::new(f) }
    }
}

impl Debug for LambdaLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LambdaLR(<closure>)")
    }
}

impl Schedule for LambdaLr {
    fn name(&self) -> &'static str {
        "LambdaLR"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base * finite_factor("LambdaLR", (self.f)(t), t)?)
    }
}
