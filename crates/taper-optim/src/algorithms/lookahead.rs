//! Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step
//! back"): any optimizer takes k fast steps, then the slow weights move a fraction α toward
//! where the fast weights arrived, and the fast weights restart from there.
//!
//! φ₀ = θ₀; every step the inner optimizer updates θ; after each k-th step,
//! φ ← φ + α(θ − φ) and θ ← φ. The inner optimizer keeps its state across syncs (the
//! paper's default, optax's `reset_state=False`).
//!
//! optax counterpart: `optax.lookahead(fast_optimizer, sync_period, slow_step_size)`; the
//! paper's usual values are k = 5 and α = 0.5. There is no torch.optim Lookahead.
//! It wraps an [`Optimizer`] of any rule rather than being a rule: the sync is a step
//! function of the step count over whole tensors, once every k steps, so it runs as candle
//! tensor ops and leaves the inner rule's fused path as it is. Its state (the slow weights
//! as `{param}.slow`, the step counter as `lookahead.steps`) is saved with the inner
//! optimizer's.

use candle_core::Tensor;
use taper_tensor::Gradients;

use crate::engine::optimizer::{Optimizer, StepReport};
use crate::engine::rule::Rule;
use crate::engine::state::OptimizerState;
use crate::error::check;
use crate::lr::control::LrTarget;
use crate::{engine::any::AnyOptimizer, error::Error, error::Result};

/// Lookahead around an optimizer.
///
/// ```
/// use taper_optim::{Lookahead, Optimizer, Sgd};
/// use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F64);
/// let w = store.parameter("w", 1, |_, _, d| Ok(Tensor::new(&[1.0f64], d)?))?;
/// let mut opt = Lookahead::new(Optimizer::new(Sgd::new(0.1), &store)?, 2, 0.5)?;
/// for _ in 0..2 {
///     opt.step(&Gradients::compute(&w.sum_all()?, &store)?)?; // g = 1: θ moves −0.1
/// }
/// // Two fast steps reach 0.8; the slow weight moves halfway: 0.9, and θ restarts there.
/// let v = store.var("w")?.as_tensor().to_vec1::<f64>()?[0];
/// assert!((v - 0.9).abs() < 1e-12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Lookahead<R: Rule> {
    inner: Optimizer<R>,
    sync_period: u64,
    slow_step_size: f64,
    slow: Vec<Tensor>,
    steps: u64,
}

const NAME: &str = "Lookahead";

impl<R: Rule> Lookahead<R> {
    /// Wraps `inner`, syncing every `sync_period` (k ≥ 1) steps with slow step size
    /// `slow_step_size` (α in [0, 1]). The slow weights start as a copy of the parameters.
    pub fn new(inner: Optimizer<R>, sync_period: u64, slow_step_size: f64) -> Result<Self> {
        check(
            NAME,
            "sync_period",
            sync_period as f64,
            sync_period >= 1,
            "sync_period >= 1",
        )?;
        check(
            NAME,
            "slow_step_size",
            slow_step_size,
            (0.0..=1.0).contains(&slow_step_size),
            "slow_step_size in [0, 1]",
        )?;
        let slow = inner
            .params()
            .map(|(_, v, _)| Ok(v.as_tensor().copy()?))
            .collect::<Result<_>>()?;
        Ok(Self {
            inner,
            sync_period,
            slow_step_size,
            slow,
            steps: 0,
        })
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &Optimizer<R> {
        &self.inner
    }

    /// The wrapped optimizer, mutably (for its groups and options).
    pub fn inner_mut(&mut self) -> &mut Optimizer<R> {
        &mut self.inner
    }

    /// The slow weights φ, by parameter name, in the optimizer's order.
    pub fn slow_weights(&self) -> Vec<(&str, &Tensor)> {
        self.inner
            .params()
            .map(|(n, _, _)| n)
            .zip(&self.slow)
            .collect()
    }

    /// Steps taken (skipped ones not counted); a sync follows every k-th.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One inner step, then the sync when the step count reaches a multiple of k.
    pub fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        let report = self.inner.step(grads)?;
        if report.skipped {
            return Ok(report);
        }
        self.steps += 1;
        if self.steps % self.sync_period == 0 {
            self.sync()?;
        }
        Ok(report)
    }

    /// φ ← φ + α(θ − φ), θ ← φ, for every parameter (all new values computed first).
    fn sync(&mut self) -> Result<()> {
        let new: Vec<Tensor> = self
            .inner
            .params()
            .zip(&self.slow)
            .map(|((_, var, _), slow)| {
                let fast = var.as_tensor().to_dtype(slow.dtype())?;
                Ok((slow + fast.sub(slow)?.affine(self.slow_step_size, 0.0)?)?)
            })
            .collect::<Result<_>>()?;
        for ((_, var, _), phi) in self.inner.params().zip(&new) {
            var.set(phi)?;
        }
        self.slow = new;
        Ok(())
    }

    /// The inner optimizer's state plus the slow weights (`{param}.slow`) and the step
    /// counter (`lookahead.steps`); the name is `Lookahead(inner name)`.
    pub fn state_dict(&self) -> OptimizerState {
        let mut out = self.inner.state_dict();
        out.optimizer = format!("{NAME}({})", R::NAME);
        out.scalars
            .insert("lookahead.steps".into(), self.steps as f64);
        for ((name, _, _), slow) in self.inner.params().zip(&self.slow) {
            out.tensors.insert(format!("{name}.slow"), slow.clone());
        }
        out
    }

    /// Restores [`Lookahead::state_dict`]'s output: checked in full (the inner state, every
    /// slow weight's shape and finiteness, the counter) before anything changes.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        let want = format!("{NAME}({})", R::NAME);
        if state.optimizer != want {
            return Err(Error::StateMismatch(format!(
                "state is for {}, this optimizer is {want}",
                state.optimizer
            )));
        }
        let mut inner = state.clone();
        inner.optimizer = R::NAME.to_string();
        let steps = inner
            .scalars
            .remove("lookahead.steps")
            .ok_or_else(|| Error::StateMismatch("missing scalar `lookahead.steps`".into()))?;
        let steps = taper_tensor::checked_counter("lookahead.steps", steps)?;
        let mut slow = Vec::new();
        for ((name, var, _), current) in self.inner.params().zip(&self.slow) {
            let key = format!("{name}.slow");
            let t = inner
                .tensors
                .remove(&key)
                .ok_or_else(|| Error::StateMismatch(format!("missing tensor `{key}`")))?;
            if t.dims() != var.dims() {
                return Err(Error::StateMismatch(format!(
                    "tensor `{key}` has shape {:?}; expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            let t = t.to_device(current.device())?.to_dtype(current.dtype())?;
            if !taper_tensor::all_finite(&t)? {
                return Err(Error::StateMismatch(format!(
                    "tensor `{key}` holds NaN or infinity; expected finite weights"
                )));
            }
            slow.push(t.copy()?);
        }
        let staged = self.inner.stage_state_dict(&inner)?;
        self.inner.commit_state(staged);
        self.slow = slow;
        self.steps = steps;
        Ok(())
    }
}

impl<R: Rule> LrTarget for Lookahead<R> {
    fn group_count(&self) -> usize {
        self.inner.group_count()
    }
    fn group_lr(&self, group: usize) -> Option<f64> {
        self.inner.group_lr(group)
    }
    fn set_group_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.inner.set_group_lr(group, lr)
    }
    fn group_momentum(&self, group: usize) -> Option<f64> {
        self.inner.group_momentum(group)
    }
    fn set_group_momentum(&mut self, group: usize, momentum: f64) -> Result<bool> {
        self.inner.set_group_momentum(group, momentum)
    }
}

impl<R: Rule> AnyOptimizer for Lookahead<R> {
    fn name(&self) -> &'static str {
        NAME
    }
    fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        Lookahead::step(self, grads)
    }
    fn lr(&self) -> f64 {
        self.inner.lr()
    }
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        self.inner.set_lr(lr)
    }
    fn state_dict(&self) -> OptimizerState {
        Lookahead::state_dict(self)
    }
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        Lookahead::load_state_dict(self, state)
    }
}
