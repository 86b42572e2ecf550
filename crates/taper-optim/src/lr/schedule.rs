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
pub trait Schedule: Debug + Send + Sync {
    /// The name PyTorch gives this schedule (or the documents' name).
    fn name(&self) -> &'static str;

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
            optimizer: schedule,
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
    beta: f64,
}

impl InverseTime {
    /// Decay rate β ≥ 0.
    pub fn new(beta: f64) -> Result<Self> {
        check(
            "InverseTime",
            "beta",
            beta,
            beta >= 0.0 && beta.is_finite(),
            "a finite beta >= 0",
        )?;
        Ok(Self { beta })
    }
}

impl Schedule for InverseTime {
    fn name(&self) -> &'static str {
        "InverseTime"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base / (1.0 + self.beta * t as f64))
    }
}

/// The documents' inverse-square-root decay: α_t = α / √(1 + β·t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InverseSqrt {
    beta: f64,
}

impl InverseSqrt {
    /// Decay rate β ≥ 0.
    pub fn new(beta: f64) -> Result<Self> {
        check(
            "InverseSqrt",
            "beta",
            beta,
            beta >= 0.0 && beta.is_finite(),
            "a finite beta >= 0",
        )?;
        Ok(Self { beta })
    }
}

impl Schedule for InverseSqrt {
    fn name(&self) -> &'static str {
        "InverseSqrt"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base / (1.0 + self.beta * t as f64).sqrt())
    }
}

/// `StepLR`: base·γ^⌊t / step_size⌋.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLr {
    step_size: u64,
    gamma: f64,
}

impl StepLr {
    /// Multiply by `gamma` every `step_size` steps (PyTorch's default γ is 0.1).
    pub fn new(step_size: u64, gamma: f64) -> Result<Self> {
        positive("StepLR", "step_size", step_size)?;
        gamma_ok("StepLR", gamma)?;
        Ok(Self { step_size, gamma })
    }
}

impl Schedule for StepLr {
    fn name(&self) -> &'static str {
        "StepLR"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base * self.gamma.powi((t / self.step_size) as i32))
    }
}

/// `MultiStepLR`: base·γ^(number of milestones ≤ t).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLr {
    milestones: Vec<u64>,
    gamma: f64,
}

impl MultiStepLr {
    /// Multiply by `gamma` at each milestone (sorted here; PyTorch's default γ is 0.1).
    pub fn new(mut milestones: Vec<u64>, gamma: f64) -> Result<Self> {
        gamma_ok("MultiStepLR", gamma)?;
        milestones.sort_unstable();
        Ok(Self { milestones, gamma })
    }
}

impl Schedule for MultiStepLr {
    fn name(&self) -> &'static str {
        "MultiStepLR"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let passed = self.milestones.partition_point(|&m| m <= t);
        Ok(base * self.gamma.powi(passed as i32))
    }
}

/// `ExponentialLR`: base·γᵗ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialLr {
    gamma: f64,
}

impl ExponentialLr {
    /// Multiply by `gamma` every step.
    pub fn new(gamma: f64) -> Result<Self> {
        gamma_ok("ExponentialLR", gamma)?;
        Ok(Self { gamma })
    }
}

impl Schedule for ExponentialLr {
    fn name(&self) -> &'static str {
        "ExponentialLR"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(base * self.gamma.powi(t as i32))
    }
}

/// `ConstantLR`: base·factor for t < total_iters, then base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConstantLr {
    factor: f64,
    total_iters: u64,
}

impl ConstantLr {
    /// PyTorch's defaults are factor 1/3 and 5 iterations.
    pub fn new(factor: f64, total_iters: u64) -> Result<Self> {
        check(
            "ConstantLR",
            "factor",
            factor,
            (0.0..=1.0).contains(&factor),
            "factor in [0, 1]",
        )?;
        Ok(Self {
            factor,
            total_iters,
        })
    }
}

impl Schedule for ConstantLr {
    fn name(&self) -> &'static str {
        "ConstantLR"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        Ok(if t < self.total_iters {
            base * self.factor
        } else {
            base
        })
    }
}

/// `LinearLR`: the factor moves linearly from `start_factor` to `end_factor` over
/// `total_iters` steps, then stays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearLr {
    start_factor: f64,
    end_factor: f64,
    total_iters: u64,
}

impl LinearLr {
    /// PyTorch's defaults are 1/3, 1.0 and 5 iterations.
    pub fn new(start_factor: f64, end_factor: f64, total_iters: u64) -> Result<Self> {
        let s = start_factor;
        check(
            "LinearLR",
            "start_factor",
            s,
            s > 0.0 && s <= 1.0,
            "start_factor in (0, 1]",
        )?;
        check(
            "LinearLR",
            "end_factor",
            end_factor,
            (0.0..=1.0).contains(&end_factor),
            "end_factor in [0, 1]",
        )?;
        positive("LinearLR", "total_iters", total_iters)?;
        Ok(Self {
            start_factor,
            end_factor,
            total_iters,
        })
    }
}

impl Schedule for LinearLr {
    fn name(&self) -> &'static str {
        "LinearLR"
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let frac = t.min(self.total_iters) as f64 / self.total_iters as f64;
        Ok(base * (self.start_factor + (self.end_factor - self.start_factor) * frac))
    }
}

/// `PolynomialLR`: base·(1 − min(t, T)/T)^power.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolynomialLr {
    total_iters: u64,
    power: f64,
}

impl PolynomialLr {
    /// PyTorch's defaults are 5 iterations and power 1.
    pub fn new(total_iters: u64, power: f64) -> Result<Self> {
        positive("PolynomialLR", "total_iters", total_iters)?;
        check(
            "PolynomialLR",
            "power",
            power,
            power >= 0.0 && power.is_finite(),
            "a finite power >= 0",
        )?;
        Ok(Self { total_iters, power })
    }
}

impl Schedule for PolynomialLr {
    fn name(&self) -> &'static str {
        "PolynomialLR"
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
