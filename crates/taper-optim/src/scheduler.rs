//! `LrScheduler`: applies a [`Schedule`] to an optimizer's groups, step by step, and saves
//! its position with the optimizer state.

use crate::optimizer::Optimizer;
use crate::rule::Rule;
use crate::schedule::Schedule;
use crate::state::OptimizerState;
use crate::{Error, Result};

/// A schedule attached to all groups of an optimizer, or to one.
///
/// ```
/// use taper_optim::{CosineAnnealingLr, LrScheduler, Optimizer, Sgd};
/// use taper_tensor::{ParamStore, DType, Device};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let mut opt = Optimizer::new(Sgd::new(0.1), &store)?;
/// let mut sched = LrScheduler::new(CosineAnnealingLr::new(10, 0.0)?, &mut opt)?;
/// for _ in 0..10 {
///     // ... opt.step(&grads)? ...
///     sched.step(&mut opt)?;
/// }
/// assert!(opt.lr() < 1e-12);
/// # Ok::<(), taper_optim::Error>(())
/// ```
#[derive(Debug)]
pub struct LrScheduler<S> {
    schedule: S,
    groups: Vec<usize>,
    base_lrs: Vec<f64>,
    step: u64,
}

impl<S: Schedule> LrScheduler<S> {
    /// Attaches to every group, taking their current rates as base rates, and applies
    /// step 0 (as PyTorch's constructors do).
    pub fn new<R: Rule>(schedule: S, opt: &mut Optimizer<R>) -> Result<Self> {
        let groups = (0..opt.groups().len()).collect();
        Self::attach(schedule, opt, groups)
    }

    /// Attaches to group `i` only.
    pub fn for_group<R: Rule>(schedule: S, opt: &mut Optimizer<R>, i: usize) -> Result<Self> {
        if i >= opt.groups().len() {
            return Err(Error::EmptyGroup {
                group: format!("#{i}"),
            });
        }
        Self::attach(schedule, opt, vec![i])
    }

    fn attach<R: Rule>(schedule: S, opt: &mut Optimizer<R>, groups: Vec<usize>) -> Result<Self> {
        let base_lrs = groups
            .iter()
            .map(|&g| opt.groups()[g].rule.common().lr)
            .collect();
        let s = Self {
            schedule,
            groups,
            base_lrs,
            step: 0,
        };
        s.apply(opt)?;
        Ok(s)
    }

    /// Advances one step and sets the groups' rates (and momentum, for OneCycle).
    pub fn step<R: Rule>(&mut self, opt: &mut Optimizer<R>) -> Result<()> {
        self.step += 1;
        self.apply(opt)
    }

    fn apply<R: Rule>(&self, opt: &mut Optimizer<R>) -> Result<()> {
        let momentum = self.schedule.momentum(self.step);
        for (&g, &base) in self.groups.iter().zip(&self.base_lrs) {
            let lr = self.schedule.lr(base, self.step)?;
            opt.update_group(g, |r| {
                r.common_mut().lr = lr;
                if let Some(m) = momentum {
                    r.set_momentum(m);
                }
            })?;
        }
        Ok(())
    }

    /// Scheduler steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The rate the schedule gives each attached group now.
    pub fn last_lr(&self) -> Result<Vec<f64>> {
        self.base_lrs
            .iter()
            .map(|&b| self.schedule.lr(b, self.step))
            .collect()
    }

    /// The schedule.
    pub fn schedule(&self) -> &S {
        &self.schedule
    }

    /// Writes the position into optimizer state, under `scheduler.{name}.*`.
    pub fn write_state(&self, state: &mut OptimizerState, name: &str) {
        state
            .scalars
            .insert(format!("scheduler.{name}.step"), self.step as f64);
        for (i, b) in self.base_lrs.iter().enumerate() {
            state
                .scalars
                .insert(format!("scheduler.{name}.base_lr.{i}"), *b);
        }
    }

    /// Restores the position written by [`LrScheduler::write_state`].
    pub fn read_state(&mut self, state: &OptimizerState, name: &str) -> Result<()> {
        let get = |k: String| {
            state
                .scalars
                .get(&k)
                .copied()
                .ok_or_else(|| Error::StateMismatch(format!("missing scheduler scalar `{k}`")))
        };
        let step = get(format!("scheduler.{name}.step"))?;
        let bases = (0..self.base_lrs.len())
            .map(|i| get(format!("scheduler.{name}.base_lr.{i}")))
            .collect::<Result<Vec<_>>>()?;
        self.step = step as u64;
        self.base_lrs = bases;
        Ok(())
    }
}
