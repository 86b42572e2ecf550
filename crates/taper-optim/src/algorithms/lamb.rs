//! LAMB: layer-wise adaptive moments (You et al. 2020, "Large Batch Optimization for Deep
//! Learning: Training BERT in 76 minutes"), in optax's form: Adam's bias-corrected step,
//! plus decayed weights, scaled per tensor by the trust ratio ‖θ‖ / ‖u‖.
//!
//! m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ),
//! u = m̂ / (√(v̂ + ε_root) + ε) + λθ, r = ‖θ‖₂ / ‖u‖₂ (1 where either is 0),
//! θ ← θ − η·r·u.
//!
//! optax counterpart: `optax.lamb(learning_rate, b1=0.9, b2=0.999, eps=1e-6,
//! eps_root=0.0, weight_decay=0.0, mask=None)`. There is no torch.optim LAMB. optax's
//! `mask` excludes parameters (biases, norms) from the weight decay; in Taper a parameter
//! group does that by name, with [`Lamb::excluded`] as its configuration (which also turns
//! the trust ratio off there, as LARS implementations do; set `trust_ratio` back for
//! optax's exact masking). Taper's shared `WeightDecay` (coupled or decoupled) still
//! applies outside the trust ratio if set; LAMB's own decay is the `weight_decay` field.
//!
//! The trust ratio needs ‖u‖ before θ moves, so each step makes one read-only pass first
//! ([`Rule::needs_norms`]): the moments are computed into registers, reduced and dropped,
//! then the update pass recomputes them and writes. Both passes are element-wise and fused.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions, TensorNorms};
use crate::engine::slot::{NoSlot, Slots, StateSlot};
use crate::error::Result;
use crate::error::{check, check_betas, check_eps};

crate::slots! {
    /// The per-parameter state of [`Lamb`] (optax's `mu` and `nu`, named as torch names
    /// Adam's).
    pub enum LambSlot {
        /// First moment m.
        ExpAvg = "exp_avg",
        /// Second moment v.
        ExpAvgSq = "exp_avg_sq",
    }
}

/// LAMB's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lamb {
    /// Learning rate η (no default in optax; `Lamb::default()` uses 1e-3), maximize.
    pub common: SharedOptions,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε, added outside the root (default 1e-6, optax's; Adam's is 1e-8).
    pub eps: f64,
    /// ε_root, added inside the root (default 0).
    pub eps_root: f64,
    /// λ, the decayed weights added to the update inside the trust ratio (default 0).
    pub weight_decay: f64,
    /// Scale by the trust ratio (default true); false gives Adam with decayed weights.
    pub trust_ratio: bool,
}

impl Default for Lamb {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl Lamb {
    crate::common_builders!(no_weight_decay);

    /// optax's LAMB with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            eps_root: 0.0,
            weight_decay: 0.0,
            trust_ratio: true,
        }
    }

    crate::engine::rule::betas_builder!();
    crate::engine::rule::eps_builder!();

    /// Builder: ε_root, added inside the root.
    pub fn eps_root(mut self, eps_root: f64) -> Self {
        self.eps_root = eps_root;
        self
    }

    crate::engine::rule::trust_ratio_builders!();

    #[inline(always)]
    fn adam<L: Lane>(
        &self,
        s: &LambStep,
        g: &L,
        state: &mut Slots<'_, L, LambSlot>,
    ) -> std::result::Result<L, L::Err> {
        use LambSlot::*;
        state[ExpAvg] = state[ExpAvg].ema(g, self.beta1)?;
        state[ExpAvgSq] = state[ExpAvgSq].ema(&g.sqr()?, self.beta2)?;
        let denom = state[ExpAvgSq]
            .scale(1.0 / s.bc2)?
            .affine(1.0, self.eps_root)?
            .sqrt()?
            .affine(1.0, self.eps)?;
        state[ExpAvg].scale(1.0 / s.bc1)?.div(&denom)
    }
}

/// The scalars of one LAMB step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambStep {
    bc1: f64,
    bc2: f64,
    ratio: f64,
}

impl Rule for Lamb {
    const NAME: &'static str = "LAMB";
    type Step = LambStep;
    type Slot = LambSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_betas("LAMB", self.beta1, self.beta2)?;
        check_eps("LAMB", self.eps)?;
        check(
            "LAMB",
            "eps_root",
            self.eps_root,
            self.eps_root >= 0.0 && self.eps_root.is_finite(),
            "a finite eps_root >= 0",
        )?;
        check(
            "LAMB",
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "a finite weight_decay >= 0",
        )
    }

    fn slots(&self) -> &'static [LambSlot] {
        LambSlot::ALL
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> LambStep {
        LambStep {
            bc1: 1.0 - self.beta1.powi(step as i32),
            bc2: 1.0 - self.beta2.powi(step as i32),
            ratio: 1.0,
        }
    }

    /// Adam's bias-corrected step m̂ / (√(v̂ + ε_root) + ε), before decay and trust ratio.
    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &LambStep,
        g: &L,
        state: &mut Slots<'_, L, LambSlot>,
    ) -> std::result::Result<L, L::Err> {
        self.adam(s, g, state)
    }

    fn needs_norms(&self) -> bool {
        self.trust_ratio
    }

    /// u = Adam's step + λθ.
    #[inline(always)]
    fn normed<L: Lane>(
        &self,
        s: &LambStep,
        p: &L,
        g: &L,
        state: &mut Slots<'_, L, LambSlot>,
    ) -> std::result::Result<L, L::Err> {
        let u = self.adam(s, g, state)?;
        if self.weight_decay == 0.0 {
            return Ok(u);
        }
        u.add(&p.scale(self.weight_decay)?)
    }

    fn set_norms(&self, s: &mut LambStep, norms: TensorNorms) {
        s.ratio = norms.trust_ratio(1.0, 0.0);
    }

    #[inline(always)]
    fn apply<L: Lane>(
        &self,
        s: &LambStep,
        p: &L,
        g: &L,
        state: &mut Slots<'_, L, LambSlot>,
    ) -> std::result::Result<L, L::Err> {
        let u = self.normed(s, p, g, state)?;
        p.sub(&u.scale(self.common.lr * s.ratio)?)
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.beta1)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.beta1 = m;
        true
    }
}
