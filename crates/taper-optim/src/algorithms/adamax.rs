//! Adamax, Adam's infinity-norm variant (Kingma & Ba 2015, section 7.1).
//!
//! m ← β₁m + (1 − β₁)g, u ← max(β₂u, |g| + ε), θ ← θ − (η/(1 − β₁ᵗ))·m/u.
//! (ε inside the max, as PyTorch.)
//!
//! PyTorch counterpart: `torch.optim.Adamax(lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
//! weight_decay=0, maximize=False)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots};
use crate::error::Result;
use crate::error::{check_betas, check_eps};

crate::slots! {
    /// The per-parameter state of [`Adamax`], as torch.optim names it.
    pub enum AdamaxSlot {
        /// First moment m.
        ExpAvg = "exp_avg",
        /// Exponentially weighted infinity norm u.
        ExpInf = "exp_inf",
    }
}

/// Adamax's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adamax {
    /// Learning rate (default 2e-3), weight decay, maximize.
    pub common: SharedOptions,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
}

impl Default for Adamax {
    fn default() -> Self {
        Self::new(2e-3)
    }
}

impl Adamax {
    crate::common_builders!();

    /// PyTorch's Adamax with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    crate::engine::rule::betas_builder!();
    crate::engine::rule::eps_builder!();
}

/// Per-step scalars of [`Adamax`].
#[derive(Debug, Clone, Copy)]
pub struct AdamaxStep {
    clr: f64,
}

impl Rule for Adamax {
    const NAME: &'static str = "Adamax";
    type Step = AdamaxStep;
    type Slot = AdamaxSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_betas("Adamax", self.beta1, self.beta2)?;
        check_eps("Adamax", self.eps)
    }

    fn slots(&self) -> &'static [AdamaxSlot] {
        &[AdamaxSlot::ExpAvg, AdamaxSlot::ExpInf]
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> AdamaxStep {
        AdamaxStep {
            clr: self.common.lr / (1.0 - self.beta1.powi(step as i32)),
        }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &AdamaxStep,
        g: &L,
        state: &mut Slots<'_, L, AdamaxSlot>,
    ) -> std::result::Result<L, L::Err> {
        use AdamaxSlot::*;
        state[ExpAvg] = state[ExpAvg].ema(g, self.beta1)?;
        state[ExpInf] = state[ExpInf]
            .scale(self.beta2)?
            .maximum(&g.abs()?.affine(1.0, self.eps)?)?;
        state[ExpAvg].div(&state[ExpInf])?.scale(s.clr)
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.beta1)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.beta1 = m;
        true
    }
}
