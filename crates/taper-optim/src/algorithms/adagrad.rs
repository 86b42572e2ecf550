//! AdaGrad (Duchi, Hazan & Singer 2011), in the source documents' form and PyTorch's.
//!
//! G ← G + g², θ ← θ − η_t·g / D with
//! - `EpsPlacement::InsideRoot`: D = √(G + ε) — the documents' form;
//! - `EpsPlacement::OutsideRoot`: D = √G + ε — PyTorch's form (the default here).
//!
//! η_t = η / (1 + (t − 1)·lr_decay), and G starts at `initial_accumulator_value`.
//!
//! PyTorch counterpart: `torch.optim.Adagrad(lr=1e-2, lr_decay=0, weight_decay=0,
//! initial_accumulator_value=0, eps=1e-10, maximize=False)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{EpsPlacement, Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots};
use crate::error::check;
use crate::error::check_eps;
use crate::error::Result;

crate::slots! {
    /// The per-parameter state of [`Adagrad`], as torch.optim names it.
    pub enum AdagradSlot {
        /// Running sum of g².
        Sum = "sum",
    }
}

/// AdaGrad's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adagrad {
    /// Learning rate (default 1e-2), weight decay, maximize.
    pub common: SharedOptions,
    /// Learning-rate decay (default 0).
    pub lr_decay: f64,
    /// Initial value of the accumulator G (default 0).
    pub initial_accumulator_value: f64,
    /// ε (default 1e-10, PyTorch's).
    pub eps: f64,
    /// Where ε goes (default outside the root, as PyTorch).
    pub eps_placement: EpsPlacement,
}

impl Default for Adagrad {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl Adagrad {
    crate::common_builders!();

    /// PyTorch's Adagrad with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            eps_placement: EpsPlacement::OutsideRoot,
        }
    }

    /// The documents' AdaGrad: θ ← θ − η·g/√(G + ε).
    pub fn documents(lr: f64, eps: f64) -> Self {
        Self::new(lr)
            .eps(eps)
            .eps_placement(EpsPlacement::InsideRoot)
    }

    /// Builder: ε.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Builder: ε placement.
    pub fn eps_placement(mut self, placement: EpsPlacement) -> Self {
        self.eps_placement = placement;
        self
    }

    /// Builder: learning-rate decay.
    pub fn lr_decay(mut self, lr_decay: f64) -> Self {
        self.lr_decay = lr_decay;
        self
    }

    /// Builder: initial accumulator value.
    pub fn initial_accumulator_value(mut self, v: f64) -> Self {
        self.initial_accumulator_value = v;
        self
    }
}

/// Per-step scalars of [`Adagrad`].
#[derive(Debug, Clone, Copy)]
pub struct AdagradStep {
    clr: f64,
}

impl Rule for Adagrad {
    const NAME: &'static str = "Adagrad";
    type Step = AdagradStep;
    type Slot = AdagradSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_eps("Adagrad", self.eps)?;
        check(
            "Adagrad",
            "lr_decay",
            self.lr_decay,
            self.lr_decay >= 0.0 && self.lr_decay.is_finite(),
            "a finite lr_decay >= 0",
        )?;
        let v = self.initial_accumulator_value;
        check(
            "Adagrad",
            "initial_accumulator_value",
            v,
            v >= 0.0 && v.is_finite(),
            "a finite initial_accumulator_value >= 0",
        )
    }

    fn slots(&self) -> &'static [AdagradSlot] {
        &[AdagradSlot::Sum]
    }

    fn initial_state(&self, _: AdagradSlot) -> f64 {
        self.initial_accumulator_value
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> AdagradStep {
        AdagradStep {
            clr: self.common.lr / (1.0 + (step - 1) as f64 * self.lr_decay),
        }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &AdagradStep,
        g: &L,
        state: &mut Slots<'_, L, AdagradSlot>,
    ) -> std::result::Result<L, L::Err> {
        use AdagradSlot::*;
        state[Sum] = state[Sum].add(&g.sqr()?)?;
        g.div(&self.eps_placement.denom(&state[Sum], self.eps)?)?
            .scale(s.clr)
    }
}
