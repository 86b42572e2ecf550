//! `AnyOptimizer`: what every optimizer can do, whatever its algorithm and shape: a rule's
//! [`Optimizer`], [`Lookahead`](crate::Lookahead), [`LbfgsOptimizer`](crate::LbfgsOptimizer),
//! an [`OptimizerSet`](crate::OptimizerSet) of several, and taper-dist's `ZeroOptimizer`.
//! Training loops, `Fit` and `Checkpoint` take `&mut dyn AnyOptimizer`, so any of them
//! trains, is driven by learning-rate controllers ([`LrTarget`]) and is checkpointed
//! ([`Stateful`]).

use candle_core::{Tensor, Var};
use taper_tensor::{Gradients, StateDict, Stateful};

use crate::engine::optimizer::{Optimizer, StepReport};
use crate::engine::rule::Rule;
use crate::engine::state::OptimizerState;
use crate::error::{Error, Result};
use crate::lr::control::LrTarget;

/// Any optimizer, object-safe (`Box<dyn AnyOptimizer>`, `&mut dyn AnyOptimizer`).
///
/// Its state is [`Stateful`] under a prefix like every other piece of a run; the
/// provided [`AnyOptimizer::state_dict`] and [`AnyOptimizer::load_state_dict`] are that
/// state under no prefix, tagged with [`AnyOptimizer::name`] (what an optimizer file and a
/// checkpoint's `optimizer.safetensors` hold).
///
/// ```
/// use taper_optim::{Adam, AnyOptimizer, Lookahead, Optimizer, Sgd};
/// use taper_tensor::{DType, Device, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let w = store.parameter("w", 2, |_, _, d| Ok(Tensor::new(&[1f32, -1.], d)?))?;
/// let mut opts: Vec<Box<dyn AnyOptimizer>> = vec![
///     Box::new(Optimizer::new(Sgd::new(0.1), &store)?),
///     Box::new(Lookahead::new(Optimizer::new(Adam::new(0.1), &store)?, 5, 0.5)?),
/// ];
/// for opt in &mut opts {
///     let loss = w.sqr()?.sum_all()?;
///     opt.backward_step(&loss)?;
///     assert_eq!(opt.steps(), 1);
/// }
/// assert_eq!(opts[1].name(), "Lookahead(Adam)");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait AnyOptimizer: LrTarget + Stateful {
    /// The algorithm's name (`Adam`, `Lookahead(Adam)`, `OptimizerSet(muon: Muon, adamw:
    /// Adam)`), checked when a saved state is loaded.
    fn name(&self) -> String;

    /// The parameters it updates, by name, in order.
    fn params(&self) -> Vec<(String, Var)>;

    /// Updates the parameters from `grads` (those it has no gradient for are reported
    /// missing). [`AnyOptimizer::needs_closure`] optimizers cannot step from gradients
    /// alone and return an error saying so.
    fn step(&mut self, grads: &Gradients) -> Result<StepReport>;

    /// Optimizer steps taken (skipped ones not counted): what per-step schedules count.
    fn steps(&self) -> u64;

    /// Whether a step must re-evaluate the loss (L-BFGS's line search): such an optimizer
    /// steps only through [`AnyOptimizer::step_closure`]. Default false.
    fn needs_closure(&self) -> bool {
        false
    }

    /// One step given a closure that computes the loss at the current parameters: a
    /// gradient method calls it once and steps with the gradients of its parameters; L-BFGS
    /// calls it as often as its line search needs.
    fn step_closure(&mut self, closure: &mut dyn FnMut() -> Result<Tensor>) -> Result<StepReport> {
        let loss = closure()?;
        self.backward_step(&loss)
    }

    /// Computes the gradients of `loss` for its parameters and steps (PyTorch's
    /// `loss.backward(); opt.step()`).
    fn backward_step(&mut self, loss: &Tensor) -> Result<StepReport> {
        let grads = Gradients::from_grad_store(&loss.backward()?, &self.params());
        self.step(&grads)
    }

    /// The first group's learning rate.
    fn lr(&self) -> f64 {
        self.group_lr(0).unwrap_or(f64::NAN)
    }

    /// Sets every group's learning rate; an invalid rate is an error and changes nothing.
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        let before: Vec<f64> = (0..self.group_count())
            .map(|g| self.group_lr(g).unwrap_or(lr))
            .collect();
        for g in 0..self.group_count() {
            if let Err(e) = self.set_group_lr(g, lr) {
                for (h, &old) in before.iter().enumerate().take(g) {
                    self.set_group_lr(h, old)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// The state under no prefix, tagged with [`AnyOptimizer::name`] (tensors shared, not
    /// copied: save before the next step).
    fn state_dict(&self) -> Result<OptimizerState> {
        let mut sd = StateDict::default();
        self.save_state("", &mut sd)?;
        Ok(OptimizerState {
            optimizer: self.name(),
            tensors: sd.tensors,
            scalars: sd.scalars,
        })
    }

    /// Checks that [`AnyOptimizer::load_state_dict`] would accept `state`, changing nothing.
    fn check_state_dict(&self, state: &OptimizerState) -> Result<()> {
        same_name(&self.name(), state)?;
        Ok(self.check_state("", &as_dict(state))?)
    }

    /// Restores what [`AnyOptimizer::state_dict`] gave; on error nothing has changed.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        same_name(&self.name(), state)?;
        Ok(self.load_state("", &as_dict(state))?)
    }
}

fn same_name(name: &str, state: &OptimizerState) -> Result<()> {
    if state.optimizer == name {
        Ok(())
    } else {
        Err(Error::StateMismatch(format!(
            "state is for {}, this optimizer is {name}",
            state.optimizer
        )))
    }
}

fn as_dict(state: &OptimizerState) -> StateDict {
    StateDict {
        tensors: state.tensors.clone(),
        scalars: state.scalars.clone(),
    }
}

impl<R: Rule> AnyOptimizer for Optimizer<R> {
    fn name(&self) -> String {
        R::NAME.to_string()
    }
    fn params(&self) -> Vec<(String, Var)> {
        Optimizer::params(self)
            .map(|(n, v, _)| (n.to_string(), v.clone()))
            .collect()
    }
    fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        Optimizer::step(self, grads)
    }
    fn steps(&self) -> u64 {
        Optimizer::steps(self)
    }
    fn state_dict(&self) -> Result<OptimizerState> {
        Optimizer::state_dict(self)
    }
    fn check_state_dict(&self, state: &OptimizerState) -> Result<()> {
        Optimizer::check_state_dict(self, state)
    }
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        Optimizer::load_state_dict(self, state)
    }
}
