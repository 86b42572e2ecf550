//! `LrScheduler`: applies a [`Schedule`] to an optimizer's groups, step by step, and saves
//! its position through [`Stateful`]; the time-driven [`LrControl`].

use crate::lr::control::{self, LrControl, LrDrive, LrGroups, LrTarget, Signal};
use crate::lr::schedule::Schedule;
use taper_tensor::{StateDict, Stateful};

use crate::{error::Error, error::Result};

/// A schedule attached to all groups of an optimizer, or to one.
///
/// ```
/// use taper_optim::{CosineAnnealingLr, LrScheduler, Optimizer, Sgd};
/// use taper_tensor::{ParamStore, DType, Device, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// store.parameter("w", 3, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
/// let mut opt = Optimizer::new(Sgd::new(0.1), &store)?;
/// let mut sched = LrScheduler::new(CosineAnnealingLr::new(10), &mut opt)?;
/// for _ in 0..10 {
///     // ... opt.step(&grads)? ...
///     sched.step(&mut opt)?;
/// }
/// assert!(opt.lr() < 1e-12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
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
    pub fn new(schedule: S, opt: &mut dyn LrTarget) -> Result<Self> {
        Self::attach(schedule, opt, LrGroups::All)
    }

    /// Attaches to the groups `groups` selects: one group (`LrGroups::One(i)`), or one
    /// member of an [`OptimizerSet`](crate::OptimizerSet) (`set.groups_of("adamw")?`).
    pub fn for_groups(schedule: S, opt: &mut dyn LrTarget, groups: LrGroups) -> Result<Self> {
        Self::attach(schedule, opt, groups)
    }

    fn attach(schedule: S, opt: &mut dyn LrTarget, groups: LrGroups) -> Result<Self> {
        schedule.validate()?;
        let groups = groups.indices(opt)?;
        if schedule.momentum(0).is_some() {
            // PyTorch: "optimizer must support momentum or beta1 with `cycle_momentum`
            // option enabled".
            if let Some(g) = groups.iter().find(|&&g| opt.group_momentum(g).is_none()) {
                return Err(Error::InvalidHyperparameter {
                    owner: schedule.name(),
                    field: "cycle_momentum",
                    value: format!("true, but group {g}'s optimizer has no momentum or beta1"),
                    expected: "an optimizer with a momentum or beta1 to cycle (SGD, RMSprop, \
                               the Adam family), or .cycle_momentum(false)",
                });
            }
        }
        let base_lrs = groups
            .iter()
            .map(|&g| opt.group_lr(g).unwrap_or(0.0))
            .collect();
        let mut s = Self {
            schedule,
            groups,
            base_lrs,
            step: 0,
        };
        s.go_to(0, opt)?;
        Ok(s)
    }

    /// Advances one step and sets the groups' rates (and momentum, for OneCycle): the
    /// shorthand for [`LrControl::step_with`] with `Signal::at(self.steps() + 1)`.
    /// On error (a schedule past its end, a rate out of range) neither the scheduler nor
    /// the optimizer has changed.
    pub fn step(&mut self, opt: &mut dyn LrTarget) -> Result<()> {
        self.go_to(self.step + 1, opt)
    }

    /// Sets the rates of step `step` (a pure function of it), all groups or none.
    fn go_to(&mut self, step: u64, opt: &mut dyn LrTarget) -> Result<()> {
        let before = control::snapshot(opt, &self.groups);
        let momentum = self.schedule.momentum(step);
        for (&g, &base) in self.groups.iter().zip(&self.base_lrs) {
            let lr = match self.schedule.lr(base, step) {
                Ok(lr) if lr >= 0.0 && lr.is_finite() => lr,
                Ok(lr) => {
                    // Name the schedule, not the optimizer: the schedule produced the value.
                    let err = Error::InvalidHyperparameter {
                        owner: self.schedule.name(),
                        field: "lr",
                        value: format!("{lr} at step {step} from base rate {base}"),
                        expected: "the schedule to give a finite rate >= 0",
                    };
                    return control::restore(opt, &self.groups, &before, err);
                }
                Err(e) => return control::restore(opt, &self.groups, &before, e),
            };
            let set = opt.set_group_lr(g, lr).and_then(|()| match momentum {
                Some(m) => opt.set_group_momentum(g, m).map(|_| ()),
                None => Ok(()),
            });
            if let Err(e) = set {
                return control::restore(opt, &self.groups, &before, e);
            }
        }
        self.step = step;
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
}

impl<S: Schedule> LrControl for LrScheduler<S> {
    fn name(&self) -> &'static str {
        self.schedule.name()
    }

    fn drive(&self) -> LrDrive {
        LrDrive::Time
    }

    /// Sets the rates the schedule gives at `signal.step` (it may jump: the schedule is a
    /// pure function of the step).
    fn step_with(&mut self, signal: Signal<'_>, opt: &mut dyn LrTarget) -> Result<()> {
        self.go_to(signal.step, opt)
    }
}

impl<S: Schedule> Stateful for LrScheduler<S> {
    /// Writes `{prefix}.step` and one `{prefix}.base_lr.{i}` per attached group.
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        out.set_counter(prefix, "step", self.step)?;
        for (i, b) in self.base_lrs.iter().enumerate() {
            out.set_scalar(prefix, &format!("base_lr.{i}"), *b);
        }
        Ok(())
    }

    /// The step must be a counter the schedule can give a rate for (OneCycle's is at most
    /// `total_steps`), and the base rates finite and ≥ 0, one per attached group.
    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.read(prefix, state).map(|_| ())
    }

    /// Restores the position. The groups' current rates and momentum come back with the
    /// optimizer's own state ([`Optimizer::load_state_dict`](crate::Optimizer::load_state_dict)),
    /// as they were when saved.
    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        let (step, bases) = self.read(prefix, state)?;
        self.step = step;
        self.base_lrs = bases;
        Ok(())
    }
}

impl<S: Schedule> LrScheduler<S> {
    fn read(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<(u64, Vec<f64>)> {
        let step = state.counter(prefix, "step")?;
        let bases = (0..self.base_lrs.len())
            .map(|i| {
                let field = format!("base_lr.{i}");
                let b = state.finite(prefix, &field)?;
                if b < 0.0 {
                    return Err(taper_tensor::Error::State {
                        key: format!("{prefix}.{field}"),
                        reason: format!("is {b}; expected a rate >= 0"),
                    });
                }
                Ok(b)
            })
            .collect::<taper_tensor::Result<Vec<_>>>()?;
        for &b in &bases {
            self.schedule
                .lr(b, step)
                .map_err(|e| taper_tensor::Error::State {
                    key: format!("{prefix}.step"),
                    reason: format!("= {step} does not fit the schedule: {e}"),
                })?;
        }
        Ok((step, bases))
    }
}
