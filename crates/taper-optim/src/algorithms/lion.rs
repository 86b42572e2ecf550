//! Lion: evolved sign momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
//! Algorithms"). Not in torch.optim.
//!
//! c = β₁m + (1 − β₁)g, θ ← θ − η·sign(c), m ← β₂m + (1 − β₂)g. Weight decay, as in the
//! paper, is decoupled: use `WeightDecay::Decoupled(λ)` (θ ← θ(1 − ηλ) first). The paper
//! recommends a learning rate 3–10× smaller than AdamW's.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots};
use crate::error::check_betas;
use crate::error::Result;

crate::slots! {
    /// The per-parameter state of [`Lion`], as torch.optim names it.
    pub enum LionSlot {
        /// Momentum m.
        ExpAvg = "exp_avg",
    }
}

/// Lion's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lion {
    /// Learning rate (default 1e-4), weight decay, maximize.
    pub common: SharedOptions,
    /// β₁, the interpolation for the update (default 0.9).
    pub beta1: f64,
    /// β₂, the momentum's decay (default 0.99).
    pub beta2: f64,
}

impl Default for Lion {
    fn default() -> Self {
        Self::new(1e-4)
    }
}

impl Lion {
    crate::common_builders!();

    /// Lion with the paper's defaults and learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            beta1: 0.9,
            beta2: 0.99,
        }
    }

    crate::engine::rule::betas_builder!();
}

/// Per-step scalars of [`Lion`].
#[derive(Debug, Clone, Copy)]
pub struct LionStep {
    lr: f64,
}

impl Rule for Lion {
    const NAME: &'static str = "Lion";
    type Step = LionStep;
    type Slot = LionSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_betas("Lion", self.beta1, self.beta2)
    }

    fn slots(&self) -> &'static [LionSlot] {
        &[LionSlot::ExpAvg]
    }

    fn prepare(&self, _: u64, _: &mut Slots<'_, f64, NoSlot>) -> LionStep {
        LionStep { lr: self.common.lr }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &LionStep,
        g: &L,
        state: &mut Slots<'_, L, LionSlot>,
    ) -> std::result::Result<L, L::Err> {
        use LionSlot::*;
        let c = state[ExpAvg].ema(g, self.beta1)?;
        state[ExpAvg] = state[ExpAvg].ema(g, self.beta2)?;
        c.sign()?.scale(s.lr)
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.beta1)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.beta1 = m;
        true
    }
}
