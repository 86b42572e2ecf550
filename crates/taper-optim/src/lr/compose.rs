//! Composing schedules: one after another (`SequentialLR`, e.g. warmup then cosine) and
//! multiplied together (`ChainedScheduler`).

use crate::lr::schedule::Schedule;
use crate::{error::Error, error::Result};

/// `SequentialLR`: schedule i runs from milestone i−1 (its own step 0) to milestone i.
#[derive(Debug)]
pub struct SequentialLr {
    parts: Vec<Box<dyn Schedule>>,
    milestones: Vec<u64>,
}

impl SequentialLr {
    /// `milestones` must be increasing and one fewer than `parts` (checked with the parts
    /// by [`Schedule::validate`]).
    pub fn new(parts: Vec<Box<dyn Schedule>>, milestones: Vec<u64>) -> Self {
        Self { parts, milestones }
    }

    /// Linear warmup from `start_factor` over `warmup` steps, then `then`.
    pub fn warmup(warmup: u64, start_factor: f64, then: Box<dyn Schedule>) -> Self {
        let up = crate::lr::schedule::LinearLr::new()
            .start_factor(start_factor)
            .total_iters(warmup);
        Self::new(vec![Box::new(up), then], vec![warmup])
    }
}

impl Schedule for SequentialLr {
    fn name(&self) -> &'static str {
        "SequentialLR"
    }
    fn validate(&self) -> Result<()> {
        let (parts, milestones) = (&self.parts, &self.milestones);
        if parts.is_empty()
            || milestones.len() + 1 != parts.len()
            || milestones.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Error::InvalidHyperparameter {
                owner: "SequentialLR",
                field: "milestones",
                value: format!("{milestones:?} for {} schedules", parts.len()),
                expected: "increasing milestones, one fewer than the schedules",
            });
        }
        parts.iter().try_for_each(|p| p.validate())
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let i = self.milestones.partition_point(|&m| m <= t);
        let start = if i == 0 { 0 } else { self.milestones[i - 1] };
        self.parts[i].lr(base, t - start)
    }
    fn momentum(&self, t: u64) -> Option<f64> {
        let i = self.milestones.partition_point(|&m| m <= t);
        let start = if i == 0 { 0 } else { self.milestones[i - 1] };
        self.parts[i].momentum(t - start)
    }
}

/// `ChainedScheduler`: the product of the schedules' factors, base·Π (lr_i(base, t)/base).
/// Exact for multiplicative schedules (all but cosine with η_min > 0 and OneCycle).
#[derive(Debug)]
pub struct ChainedLr {
    parts: Vec<Box<dyn Schedule>>,
}

impl ChainedLr {
    /// The schedules to multiply.
    pub fn new(parts: Vec<Box<dyn Schedule>>) -> Self {
        Self { parts }
    }
}

impl Schedule for ChainedLr {
    fn name(&self) -> &'static str {
        "ChainedScheduler"
    }
    fn validate(&self) -> Result<()> {
        self.parts.iter().try_for_each(|p| p.validate())
    }
    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let mut lr = base;
        for p in &self.parts {
            lr *= if base == 0.0 {
                0.0
            } else {
                p.lr(base, t)? / base
            };
        }
        Ok(lr)
    }
}
