//! `AnyOptimizer`: an object-safe view of any [`Optimizer`], for choosing the algorithm at
//! run time (`Box<dyn AnyOptimizer>`), e.g. from a command-line flag.

use taper_tensor::Gradients;

use crate::engine::optimizer::{Optimizer, StepReport};
use crate::engine::rule::Rule;
use crate::engine::state::OptimizerState;
use crate::error::Result;
use crate::lr::control::LrTarget;

/// What every optimizer can do, whatever its rule. Learning-rate controllers act on it
/// through its [`LrTarget`] side (`&mut *boxed` coerces to `&mut dyn LrTarget`).
pub trait AnyOptimizer: LrTarget + Send {
    /// The algorithm's name.
    fn name(&self) -> &'static str;
    /// Updates the parameters from `grads`.
    fn step(&mut self, grads: &Gradients) -> Result<StepReport>;
    /// The first group's learning rate.
    fn lr(&self) -> f64;
    /// Sets every group's learning rate.
    fn set_lr(&mut self, lr: f64) -> Result<()>;
    /// The state, for checkpoints.
    fn state_dict(&self) -> OptimizerState;
    /// Restores saved state.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
}

impl<R: Rule> AnyOptimizer for Optimizer<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }
    fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        Optimizer::step(self, grads)
    }
    fn lr(&self) -> f64 {
        Optimizer::lr(self)
    }
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        Optimizer::set_lr(self, lr)
    }
    fn state_dict(&self) -> OptimizerState {
        Optimizer::state_dict(self)
    }
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        Optimizer::load_state_dict(self, state)
    }
}
