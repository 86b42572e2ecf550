//! `LrControl`: the one protocol for everything that sets learning rates — schedules of the
//! step ([`LrScheduler`](crate::LrScheduler)), metric-driven control
//! ([`ReduceLrOnPlateau`](crate::ReduceLrOnPlateau)) and gradient-driven control
//! ([`GradNormRatio`](crate::GradNormRatio)).
//!
//! Every controller takes the same [`Signal`] (the step count, and a metric or gradients
//! when it needs them, as [`LrControl::drive`] says), acts on an [`LrTarget`] (any
//! optimizer, all of its groups or one), and saves its state through
//! [`Stateful`] under the name it owns ([`LrControl::state_name`]). A training loop can
//! therefore hold any of them as `Box<dyn LrControl>`:
//!
//! ```
//! use taper_optim::*;
//! use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};
//! let store = ParamStore::new(&Device::Cpu, DType::F32);
//! store.parameter("w", 3, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
//! let mut opt = Optimizer::new(Sgd::new(0.1), &store)?;
//! let mut controls: Vec<Box<dyn LrControl>> = vec![
//!     Box::new(LrScheduler::new(StepLr::new(2).gamma(0.5), &mut opt)?),
//!     Box::new(ReduceLrOnPlateau::new(PlateauConfig::default())?),
//! ];
//! for epoch in 1..=4 {
//!     let val_loss = 1.0; // no improvement: the plateau counts
//!     for c in &mut controls {
//!         let signal = match c.drive() {
//!             LrDrive::Metric => Signal::at(epoch).metric(val_loss),
//!             _ => Signal::at(epoch),
//!         };
//!         c.step_with(signal, &mut opt)?;
//!     }
//! }
//! assert_eq!(opt.lr(), 0.1 * 0.5 * 0.5); // StepLR halved it twice in 4 epochs
//! assert_eq!(controls[0].state_name(), "lr-StepLR");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use taper_tensor::{Gradients, Stateful};

use crate::engine::optimizer::Optimizer;
use crate::engine::rule::Rule;
use crate::{error::Error, error::Result};

/// What a controller may read when it steps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signal<'a> {
    /// The controller's step count after this step (1 on the first call), counted per
    /// batch or per epoch as the caller drives it. Schedules set the rate for this step
    /// (a pure function of it); the other controllers do not use it.
    pub step: u64,
    /// A metric (validation loss, accuracy), for [`LrDrive::Metric`] controllers.
    pub metric: Option<f64>,
    /// This step's gradients, for [`LrDrive::Gradients`] controllers.
    pub grads: Option<&'a Gradients>,
}

impl<'a> Signal<'a> {
    /// The signal of step `step`, with no metric and no gradients.
    pub fn at(step: u64) -> Self {
        Self {
            step,
            metric: None,
            grads: None,
        }
    }

    /// Adds a metric.
    pub fn metric(mut self, metric: f64) -> Self {
        self.metric = Some(metric);
        self
    }

    /// Adds the step's gradients.
    pub fn grads(mut self, grads: &'a Gradients) -> Self {
        self.grads = Some(grads);
        self
    }

    /// The metric, or an error naming `controller`, which needs one.
    pub(crate) fn need_metric(&self, controller: &'static str) -> Result<f64> {
        self.metric.ok_or(Error::MissingSignal {
            controller,
            needs: "a metric (Signal::metric)",
        })
    }

    /// The gradients, or an error naming `controller`, which needs them.
    pub(crate) fn need_grads(&self, controller: &'static str) -> Result<&'a Gradients> {
        self.grads.ok_or(Error::MissingSignal {
            controller,
            needs: "the step's gradients (Signal::grads)",
        })
    }
}

/// What drives a controller: what its [`Signal`] must carry, and when to call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrDrive {
    /// The step count alone (schedules): call after each optimizer step or epoch.
    Time,
    /// A metric (ReduceLROnPlateau): call after each evaluation.
    Metric,
    /// The step's gradients (the gradient-norm ratio): call before each optimizer step.
    Gradients,
}

/// The optimizer side of learning-rate control: its groups' rates and momentum. Object
/// safe, so controllers work on any optimizer (`Optimizer<R>`, `Box<dyn AnyOptimizer>`).
pub trait LrTarget {
    /// Number of parameter groups.
    fn group_count(&self) -> usize;
    /// Group `group`'s learning rate (`None` past the last group).
    fn group_lr(&self, group: usize) -> Option<f64>;
    /// Sets group `group`'s learning rate; an invalid rate is an error and changes nothing.
    fn set_group_lr(&mut self, group: usize, lr: f64) -> Result<()>;
    /// Group `group`'s momentum-like coefficient (SGD's momentum, Adam's β₁), if the group
    /// exists and its rule has one.
    fn group_momentum(&self, group: usize) -> Option<f64>;
    /// Sets that coefficient; false (and nothing changes) when the rule has none.
    fn set_group_momentum(&mut self, group: usize, momentum: f64) -> Result<bool>;
}

impl<R: Rule> LrTarget for Optimizer<R> {
    fn group_count(&self) -> usize {
        self.groups().len()
    }

    fn group_lr(&self, group: usize) -> Option<f64> {
        self.groups().get(group).map(|g| g.rule.common().lr)
    }

    fn set_group_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.update_group(group, |r| r.common_mut().lr = lr)
    }

    fn group_momentum(&self, group: usize) -> Option<f64> {
        self.groups().get(group)?.rule.momentum_coefficient()
    }

    fn set_group_momentum(&mut self, group: usize, momentum: f64) -> Result<bool> {
        let mut had = false;
        self.update_group(group, |r| had = r.set_momentum_coefficient(momentum))?;
        Ok(had)
    }
}

/// Which of an optimizer's groups a controller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LrGroups {
    /// Every group (default).
    #[default]
    All,
    /// Group `i` only.
    One(usize),
    /// Groups `start..end` (one member of an [`OptimizerSet`](crate::OptimizerSet):
    /// `set.groups_of("adamw")`).
    Range {
        /// The first group.
        start: usize,
        /// One past the last group.
        end: usize,
    },
}

impl LrGroups {
    /// The group indices of `target` this selects; a missing group is an error.
    pub fn indices(self, target: &dyn LrTarget) -> Result<Vec<usize>> {
        let n = target.group_count();
        match self {
            LrGroups::All => Ok((0..n).collect()),
            LrGroups::One(i) if i < n => Ok(vec![i]),
            LrGroups::One(i) => Err(Error::EmptyGroup {
                group: format!("#{i} (the optimizer has {n} groups)"),
            }),
            LrGroups::Range { start, end } if start < end && end <= n => Ok((start..end).collect()),
            LrGroups::Range { start, end } => Err(Error::EmptyGroup {
                group: format!("#{start}..#{end} (the optimizer has {n} groups)"),
            }),
        }
    }
}

/// Anything that sets learning rates from a [`Signal`]: one step shape for schedules,
/// metric-driven and gradient-driven control. Its state is saved through [`Stateful`]
/// under [`LrControl::state_name`].
pub trait LrControl: Stateful + Send {
    /// The controller's name, as PyTorch names it where it exists there (`StepLR`,
    /// `ReduceLROnPlateau`); errors it raises carry it.
    fn name(&self) -> &'static str;

    /// What its signal must carry, and so when to call it.
    fn drive(&self) -> LrDrive;

    /// Sets the rates (and momentum, for OneCycle) of its groups of `opt` from `signal`.
    /// A signal without what [`LrControl::drive`] asks for is
    /// [`Error::MissingSignal`]; on any error neither the controller nor `opt` changes.
    ///
    /// This is how a loop drives any controller (`Box<dyn LrControl>`). Each controller
    /// type also has PyTorch's shorthand under the name `step`, with the arguments its kind
    /// needs: `scheduler.step(&mut opt)`, `plateau.step(val_loss, &mut opt)`,
    /// `ratio.step(&grads, &mut opt)`; the trait method has its own name so that neither
    /// hides the other.
    fn step_with(&mut self, signal: Signal<'_>, opt: &mut dyn LrTarget) -> Result<()>;

    /// The name its state is saved under in checkpoints: `lr-{name}` (no dots, so it is a
    /// valid `Checkpoint::add_state` name). Two controllers of the same kind in one
    /// checkpoint need names of their own.
    fn state_name(&self) -> String {
        format!("lr-{}", self.name())
    }
}

/// The rates and momenta of `groups`, to put back with [`restore`] when a step fails.
pub(crate) fn snapshot(opt: &dyn LrTarget, groups: &[usize]) -> Vec<(f64, Option<f64>)> {
    groups
        .iter()
        .map(|&g| (opt.group_lr(g).unwrap_or(0.0), opt.group_momentum(g)))
        .collect()
}

/// Puts back what [`snapshot`] took, then returns `err`.
pub(crate) fn restore<T>(
    opt: &mut dyn LrTarget,
    groups: &[usize],
    before: &[(f64, Option<f64>)],
    err: Error,
) -> Result<T> {
    for (&g, &(lr, m)) in groups.iter().zip(before) {
        opt.set_group_lr(g, lr)?;
        if let Some(m) = m {
            opt.set_group_momentum(g, m)?;
        }
    }
    Err(err)
}
