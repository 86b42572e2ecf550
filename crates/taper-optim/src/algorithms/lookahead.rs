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

use candle_core::{Tensor, Var};
use taper_tensor::{Gradients, StateDict, Stateful};

use crate::engine::any::AnyOptimizer;
use crate::engine::optimizer::{Optimizer, StepReport};
use crate::engine::rule::Rule;
use crate::engine::state::OptimizerState;
use crate::error::check;
use crate::error::Result;
use crate::lr::control::LrTarget;

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
    pub fn state_dict(&self) -> Result<OptimizerState> {
        AnyOptimizer::state_dict(self)
    }

    /// Restores [`Lookahead::state_dict`]'s output: checked in full (the inner state, every
    /// slow weight's shape and finiteness, the counter) before anything changes.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        AnyOptimizer::load_state_dict(self, state)
    }

    /// The slow weights, counter and inner state under `prefix`, checked, ready to swap in.
    fn stage(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<Staged<R>> {
        let key = |field: &str| {
            if prefix.is_empty() {
                field.to_string()
            } else {
                format!("{prefix}.{field}")
            }
        };
        let steps = state.counter(prefix, "lookahead.steps")?;
        let mut inner = state.clone();
        inner.scalars.remove(&key("lookahead.steps"));
        let mut slow = Vec::new();
        for ((name, var, _), current) in self.inner.params().zip(&self.slow) {
            let k = key(&format!("{name}.slow"));
            let t = inner
                .tensors
                .remove(&k)
                .ok_or_else(|| taper_tensor::Error::State {
                    key: k.clone(),
                    reason: "is missing".into(),
                })?;
            let bad = |reason: String| taper_tensor::Error::State {
                key: k.clone(),
                reason,
            };
            if t.dims() != var.dims() {
                return Err(bad(format!(
                    "has shape {:?}; expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            let t = t.to_device(current.device())?.to_dtype(current.dtype())?;
            if !taper_tensor::all_finite(&t)? {
                return Err(bad("holds NaN or infinity; expected finite weights".into()));
            }
            slow.push(t.copy()?);
        }
        self.inner.check_state(prefix, &inner)?;
        Ok(Staged {
            inner,
            slow,
            steps,
            _rule: std::marker::PhantomData,
        })
    }
}

/// A checked Lookahead state: the inner optimizer's entries, the slow weights, the counter.
struct Staged<R> {
    inner: StateDict,
    slow: Vec<Tensor>,
    steps: u64,
    _rule: std::marker::PhantomData<R>,
}

impl<R: Rule> Stateful for Lookahead<R> {
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        self.inner.save_state(prefix, out)?;
        out.set_counter(prefix, "lookahead.steps", self.steps)?;
        for ((name, _, _), slow) in self.inner.params().zip(&self.slow) {
            out.set_tensor(prefix, &format!("{name}.slow"), slow);
        }
        Ok(())
    }

    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.stage(prefix, state).map(|_| ())
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        let staged = self.stage(prefix, state)?;
        // Checked in `stage`: the inner load cannot fail now.
        self.inner.load_state(prefix, &staged.inner)?;
        self.slow = staged.slow;
        self.steps = staged.steps;
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
    fn name(&self) -> String {
        format!("{NAME}({})", R::NAME)
    }
    fn params(&self) -> Vec<(String, Var)> {
        AnyOptimizer::params(&self.inner)
    }
    fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        Lookahead::step(self, grads)
    }
    fn steps(&self) -> u64 {
        self.steps
    }
}
