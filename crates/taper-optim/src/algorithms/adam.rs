//! Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019), with AMSGrad
//! (Reddi et al. 2018) and both of the source documents' ε placements.
//!
//! m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ), and
//! - `EpsPlacement::OutsideRoot`: θ ← θ − η·m̂/(√v̂ + ε) — the documents' first form and
//!   PyTorch's (computed in PyTorch's order: (η/(1 − β₁ᵗ))·m / (√v/√(1 − β₂ᵗ) + ε));
//! - `EpsPlacement::InsideRoot`: θ ← θ − η·m̂/√(v̂ + ε) — the documents' second form.
//!
//! AdamW is Adam with `WeightDecay::Decoupled` (PyTorch's default λ = 0.01).
//!
//! PyTorch counterparts: `torch.optim.Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
//! weight_decay=0, amsgrad=False, maximize=False)` and `torch.optim.AdamW(..., weight_decay=1e-2)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{EpsPlacement, Rule, SharedOptions, WeightDecay};
use crate::engine::slot::{NoSlot, Slots};
use crate::error::Result;
use crate::error::{check_betas, check_eps};

crate::slots! {
    /// The per-parameter state of [`Adam`], as torch.optim names it.
    pub enum AdamSlot {
        /// First moment m.
        ExpAvg = "exp_avg",
        /// Second moment v.
        ExpAvgSq = "exp_avg_sq",
        /// Running maximum of v (AMSGrad only).
        MaxExpAvgSq = "max_exp_avg_sq",
    }
}

/// Adam's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    /// Learning rate (default 1e-3), weight decay (default none), maximize.
    pub common: SharedOptions,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Use the running maximum of v (AMSGrad; default false).
    pub amsgrad: bool,
    /// Where ε goes (default outside the root, as PyTorch).
    pub eps_placement: EpsPlacement,
    /// Built as AdamW ([`Adam::adamw`]): weight decay must stay decoupled, so that
    /// `.weight_decay(WeightDecay::L2(..))` cannot silently turn it into Adam with L2
    /// (validation rejects it, naming both ways to say what was meant).
    pub adamw: bool,
}

impl Default for Adam {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl Adam {
    crate::common_builders!();

    /// Adam with PyTorch's defaults and learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: false,
            eps_placement: EpsPlacement::OutsideRoot,
            adamw: false,
        }
    }

    /// AdamW: PyTorch's defaults, decoupled weight decay 0.01. Its weight decay can be
    /// changed (`.weight_decay(WeightDecay::Decoupled(λ))`, or `None`) but not made
    /// coupled: `WeightDecay::L2` is rejected when the optimizer is built.
    ///
    /// ```
    /// use taper_optim::{Adam, Optimizer, Rule, WeightDecay};
    /// use taper_tensor::{DType, Device, ParamStore, Tensor};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// store.parameter("w", 2, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
    /// let wrong = Adam::adamw(1e-3).weight_decay(WeightDecay::L2(0.1));
    /// let err = Optimizer::new(wrong, &store).unwrap_err().to_string();
    /// assert!(err.starts_with("AdamW: invalid value for `weight_decay`: L2(0.1)"), "{err}");
    /// // Adam with L2, if that is what was meant:
    /// Optimizer::new(Adam::new(1e-3).weight_decay(WeightDecay::L2(0.1)), &store)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adamw(lr: f64) -> Self {
        Self {
            adamw: true,
            ..Self::new(lr).weight_decay(WeightDecay::Decoupled(0.01))
        }
    }

    crate::engine::rule::betas_builder!();
    crate::engine::rule::eps_builder!();

    /// Builder: AMSGrad.
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    /// Builder: ε placement.
    pub fn eps_placement(mut self, placement: EpsPlacement) -> Self {
        self.eps_placement = placement;
        self
    }
}

/// Per-step scalars of [`Adam`].
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    step_size: f64,
    bc2: f64,
    bc2_sqrt: f64,
}

impl Rule for Adam {
    const NAME: &'static str = "Adam";
    type Step = AdamStep;
    type Slot = AdamSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_betas("Adam", self.beta1, self.beta2)?;
        check_eps("Adam", self.eps)?;
        if let (true, WeightDecay::L2(wd)) = (self.adamw, self.common.weight_decay) {
            return Err(crate::error::Error::InvalidHyperparameter {
                owner: "AdamW",
                field: "weight_decay",
                value: format!("L2({wd})"),
                expected: "decoupled weight decay (WeightDecay::Decoupled); for Adam with L2 \
                           use Adam::new(lr).weight_decay(WeightDecay::L2(..))",
            });
        }
        Ok(())
    }

    fn slots(&self) -> &'static [AdamSlot] {
        if self.amsgrad {
            &[AdamSlot::ExpAvg, AdamSlot::ExpAvgSq, AdamSlot::MaxExpAvgSq]
        } else {
            &[AdamSlot::ExpAvg, AdamSlot::ExpAvgSq]
        }
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> AdamStep {
        let t = step as i32;
        let bc2 = 1.0 - self.beta2.powi(t);
        AdamStep {
            step_size: self.common.lr / (1.0 - self.beta1.powi(t)),
            bc2,
            bc2_sqrt: bc2.sqrt(),
        }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &AdamStep,
        g: &L,
        state: &mut Slots<'_, L, AdamSlot>,
    ) -> std::result::Result<L, L::Err> {
        use AdamSlot::*;
        state[ExpAvg] = state[ExpAvg].ema(g, self.beta1)?;
        state[ExpAvgSq] = state[ExpAvgSq]
            .scale(self.beta2)?
            .add(&g.sqr()?.scale(1.0 - self.beta2)?)?;
        let denom = |v: &L| match self.eps_placement {
            EpsPlacement::OutsideRoot => v.sqrt()?.affine(1.0 / s.bc2_sqrt, self.eps),
            EpsPlacement::InsideRoot => v.affine(1.0 / s.bc2, self.eps)?.sqrt(),
        };
        // Each branch names its state slot directly: a reference chosen at run time would
        // force the fused loop's state out of registers (measured 5× slower for AMSGrad).
        let denom = if self.amsgrad {
            state[MaxExpAvgSq] = state[MaxExpAvgSq].maximum(&state[ExpAvgSq])?;
            denom(&state[MaxExpAvgSq])?
        } else {
            denom(&state[ExpAvgSq])?
        };
        state[ExpAvg].div(&denom)?.scale(s.step_size)
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.beta1)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.beta1 = m;
        true
    }
}
