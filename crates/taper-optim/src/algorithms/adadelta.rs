//! Adadelta (Zeiler 2012).
//!
//! E[g²] ← ρE[g²] + (1 − ρ)g², Δ = √(E[Δ²] + ε)/√(E[g²] + ε)·g,
//! E[Δ²] ← ρE[Δ²] + (1 − ρ)Δ², θ ← θ − η·Δ.
//!
//! PyTorch counterpart: `torch.optim.Adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0,
//! maximize=False)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots};
use crate::error::check;
use crate::error::check_eps;
use crate::error::Result;

crate::slots! {
    /// The per-parameter state of [`Adadelta`], as torch.optim names it.
    pub enum AdadeltaSlot {
        /// Running average of g², E(g²).
        SquareAvg = "square_avg",
        /// Running average of the squared updates, E(Δx²).
        AccDelta = "acc_delta",
    }
}

/// Adadelta's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adadelta {
    /// Learning rate (default 1.0), weight decay, maximize.
    pub common: SharedOptions,
    /// ρ (default 0.9).
    pub rho: f64,
    /// ε (default 1e-6).
    pub eps: f64,
}

impl Default for Adadelta {
    fn default() -> Self {
        Self {
            common: SharedOptions::new(1.0),
            rho: 0.9,
            eps: 1e-6,
        }
    }
}

impl Adadelta {
    crate::common_builders!();

    /// PyTorch's Adadelta with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self::default().lr(lr)
    }

    /// Builder: ρ.
    pub fn rho(mut self, rho: f64) -> Self {
        self.rho = rho;
        self
    }

    /// Builder: ε.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
}

/// Per-step scalars of [`Adadelta`].
#[derive(Debug, Clone, Copy)]
pub struct AdadeltaStep {
    lr: f64,
}

impl Rule for Adadelta {
    const NAME: &'static str = "Adadelta";
    type Step = AdadeltaStep;
    type Slot = AdadeltaSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_eps("Adadelta", self.eps)?;
        check(
            "Adadelta",
            "rho",
            self.rho,
            (0.0..=1.0).contains(&self.rho),
            "rho in [0, 1]",
        )
    }

    fn slots(&self) -> &'static [AdadeltaSlot] {
        &[AdadeltaSlot::SquareAvg, AdadeltaSlot::AccDelta]
    }

    fn prepare(&self, _: u64, _: &mut Slots<'_, f64, NoSlot>) -> AdadeltaStep {
        AdadeltaStep { lr: self.common.lr }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &AdadeltaStep,
        g: &L,
        state: &mut Slots<'_, L, AdadeltaSlot>,
    ) -> std::result::Result<L, L::Err> {
        use AdadeltaSlot::*;
        state[SquareAvg] = state[SquareAvg]
            .scale(self.rho)?
            .add(&g.sqr()?.scale(1.0 - self.rho)?)?;
        let std = state[SquareAvg].affine(1.0, self.eps)?.sqrt()?;
        let delta = state[AccDelta]
            .affine(1.0, self.eps)?
            .sqrt()?
            .div(&std)?
            .mul(g)?;
        state[AccDelta] = state[AccDelta]
            .scale(self.rho)?
            .add(&delta.sqr()?.scale(1.0 - self.rho)?)?;
        delta.scale(s.lr)
    }
}
