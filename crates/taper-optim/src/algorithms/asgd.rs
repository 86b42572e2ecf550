//! ASGD: averaged stochastic gradient descent (Polyak & Juditsky 1992), in PyTorch's form,
//! which follows Bottou's "Stochastic Gradient Tricks" (2012): SGD with a decaying rate and
//! a shrink of θ, plus a running average of the iterates that starts at step t₀.
//!
//! At step t (1-based), with η and μ from the previous step (η₀ = lr, μ₀ = 1):
//! θ ← θ(1 − λη) − η·g; ā ← ā + μ(θ − ā) (ā = θ while μ = 1); then
//! η ← lr / (1 + λ·lr·t)^α and μ ← 1 / max(1, t − t₀).
//! η and μ are per-parameter scalar state (`eta`, `mu`), ā is the state tensor `ax`; the
//! averaged parameters are read with [`Optimizer::averaged`](crate::Optimizer) (torch keeps
//! them as `state[p]["ax"]` and leaves it to the user to swap them in, as here).
//!
//! PyTorch counterpart: `torch.optim.ASGD(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6,
//! weight_decay=0, maximize=False)`; `WeightDecay::L2` is its `weight_decay`. PyTorch keeps
//! η and μ as float32 tensors; Taper keeps them in float64 (a difference of about 1e-7
//! relative in η).

use candle_core::Tensor;

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{Slots, StateSlot};
use crate::error::check;
use crate::{engine::optimizer::Optimizer, error::Result};

crate::slots! {
    /// The per-parameter state tensor of [`Asgd`], as torch.optim names it.
    pub enum AsgdSlot {
        /// The running average ā of the iterates.
        Ax = "ax",
    }
}

crate::slots! {
    /// The per-parameter scalar state of [`Asgd`], as torch.optim names it.
    pub enum AsgdScalar {
        /// The step size η for the next step.
        Eta = "eta",
        /// The averaging weight μ for the next step.
        Mu = "mu",
    }
}

/// ASGD's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Asgd {
    /// Learning rate (default 1e-2), coupled weight decay, maximize.
    pub common: SharedOptions,
    /// λ, the decay term (default 1e-4).
    pub lambd: f64,
    /// α, the power of the η decay (default 0.75).
    pub alpha: f64,
    /// t₀, the step at which averaging starts (default 1e6).
    pub t0: f64,
}

impl Default for Asgd {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl Asgd {
    crate::common_builders!();

    /// PyTorch's ASGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            lambd: 1e-4,
            alpha: 0.75,
            t0: 1e6,
        }
    }

    /// Builder: λ, torch's `lambd`.
    pub fn lambd(mut self, lambd: f64) -> Self {
        self.lambd = lambd;
        self
    }

    /// Builder: α, the power of the η decay.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Builder: t₀, the step at which averaging starts.
    pub fn t0(mut self, t0: f64) -> Self {
        self.t0 = t0;
        self
    }
}

/// The η and μ an ASGD step uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsgdStep {
    eta: f64,
    mu: f64,
}

impl Rule for Asgd {
    const NAME: &'static str = "ASGD";
    type Step = AsgdStep;
    type Slot = AsgdSlot;
    type Scalar = AsgdScalar;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        let n = "ASGD";
        check(
            n,
            "lambd",
            self.lambd,
            self.lambd >= 0.0 && self.lambd.is_finite(),
            "a finite lambd >= 0",
        )?;
        check(
            n,
            "alpha",
            self.alpha,
            self.alpha >= 0.0 && self.alpha.is_finite(),
            "a finite alpha >= 0",
        )?;
        check(
            n,
            "t0",
            self.t0,
            self.t0 >= 0.0 && self.t0.is_finite(),
            "a finite t0 >= 0",
        )
    }

    fn slots(&self) -> &'static [AsgdSlot] {
        AsgdSlot::ALL
    }

    fn initial_scalar(&self, slot: AsgdScalar) -> f64 {
        match slot {
            AsgdScalar::Eta => self.common.lr,
            AsgdScalar::Mu => 1.0,
        }
    }

    fn prepare(&self, step: u64, scalars: &mut Slots<'_, f64, AsgdScalar>) -> AsgdStep {
        use AsgdScalar::*;
        let s = AsgdStep {
            eta: scalars[Eta],
            mu: scalars[Mu],
        };
        let (t, lr) = (step as f64, self.common.lr);
        scalars[Eta] = lr / (1.0 + self.lambd * lr * t).powf(self.alpha);
        scalars[Mu] = 1.0 / (t - self.t0).max(1.0);
        s
    }

    /// The gradient step η·g (the shrink of θ and the average are in [`Rule::apply`]).
    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &AsgdStep,
        g: &L,
        _: &mut Slots<'_, L, AsgdSlot>,
    ) -> std::result::Result<L, L::Err> {
        g.scale(s.eta)
    }

    #[inline(always)]
    fn apply<L: Lane>(
        &self,
        s: &AsgdStep,
        p: &L,
        g: &L,
        state: &mut Slots<'_, L, AsgdSlot>,
    ) -> std::result::Result<L, L::Err> {
        let d = self.direction(s, g, state)?;
        let p = p.scale(1.0 - self.lambd * s.eta)?.sub(&d)?;
        state[AsgdSlot::Ax] = if s.mu == 1.0 {
            p.clone()
        } else {
            let ax = &state[AsgdSlot::Ax];
            ax.add(&p.sub(ax)?.scale(s.mu)?)?
        };
        Ok(p)
    }
}

impl Optimizer<Asgd> {
    /// The averaged parameters ā (torch's `state[p]["ax"]`), by name, for the parameters
    /// updated so far. Evaluate them by copying them into a model's variables (keep a copy
    /// of the trained weights first if training continues).
    ///
    /// ```
    /// use taper_optim::{Asgd, Optimizer};
    /// use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let w = store.parameter("w", 2, |_, _, d| Ok(Tensor::new(&[1f32, -1.], d)?))?;
    /// let mut opt = Optimizer::new(Asgd::new(0.1).t0(0.0), &store)?;
    /// for _ in 0..3 {
    ///     opt.step(&Gradients::compute(&w.sqr()?.sum_all()?, &store)?)?;
    /// }
    /// let avg = opt.averaged();
    /// assert_eq!(avg[0].0, "w");
    /// assert_eq!(avg[0].1.dims(), [2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn averaged(&self) -> Vec<(String, Tensor)> {
        self.params()
            .filter_map(|(name, _, _)| {
                let st = self.state(name)?;
                Some((name.to_string(), st.tensors[0].clone()))
            })
            .collect()
    }
}
