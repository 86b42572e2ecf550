//! RMSProp (Tieleman & Hinton 2012, lecture 6.5), in the source documents' form and PyTorch's.
//!
//! E ← αE + (1 − α)g², θ ← θ − η·g / D with
//! - `EpsPlacement::InsideRoot`: D = √(E + ε) — the documents' form (their β is α here);
//! - `EpsPlacement::OutsideRoot`: D = √E + ε — PyTorch's form (the default here).
//!
//! `centered` subtracts the squared running mean of g from E (Graves 2013); `momentum`
//! accumulates b ← μb + g/D and steps θ ← θ − η·b.
//!
//! PyTorch counterpart: `torch.optim.RMSprop(lr=1e-2, alpha=0.99, eps=1e-8,
//! weight_decay=0, momentum=0, centered=False, maximize=False)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{EpsPlacement, Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots, StateSlot};
use crate::error::check;
use crate::error::check_eps;
use crate::error::Result;

/// The per-parameter state of [`RmsProp`], as torch.optim names it. Each of `grad_avg` and
/// `momentum_buffer` is optional, so their positions cannot both be fixed: `square_avg` is
/// first, `grad_avg` second, and `momentum_buffer` always last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmsPropSlot {
    /// Running average of g² (E).
    SquareAvg,
    /// Running average of g (centered only).
    GradAvg,
    /// The momentum buffer b (momentum > 0 only).
    MomentumBuffer,
}

impl StateSlot for RmsPropSlot {
    const ALL: &'static [Self] = &[Self::SquareAvg, Self::GradAvg, Self::MomentumBuffer];

    fn name(self) -> &'static str {
        match self {
            Self::SquareAvg => "square_avg",
            Self::GradAvg => "grad_avg",
            Self::MomentumBuffer => "momentum_buffer",
        }
    }

    #[inline(always)]
    fn position(self, len: usize) -> usize {
        match self {
            Self::SquareAvg => 0,
            Self::GradAvg => 1,
            Self::MomentumBuffer => len - 1,
        }
    }
}

/// RMSProp's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsProp {
    /// Learning rate (default 1e-2), weight decay, maximize.
    pub common: SharedOptions,
    /// Smoothing constant α (default 0.99).
    pub alpha: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Normalize by the estimated variance instead of the second moment (default false).
    pub centered: bool,
    /// Momentum μ (default 0: none).
    pub momentum: f64,
    /// Where ε goes (default outside the root, as PyTorch).
    pub eps_placement: EpsPlacement,
}

impl Default for RmsProp {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl RmsProp {
    crate::common_builders!();

    /// PyTorch's RMSprop with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            alpha: 0.99,
            eps: 1e-8,
            centered: false,
            momentum: 0.0,
            eps_placement: EpsPlacement::OutsideRoot,
        }
    }

    /// The documents' RMSProp: E ← βE + (1 − β)g², θ ← θ − η·g/√(E + ε).
    pub fn documents(lr: f64, beta: f64, eps: f64) -> Self {
        Self::new(lr)
            .alpha(beta)
            .eps(eps)
            .eps_placement(EpsPlacement::InsideRoot)
    }

    /// Builder: α.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Builder: ε.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Builder: centered.
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    /// Builder: momentum μ (0: none), spelled as [`Sgd::momentum`](crate::Sgd::momentum)
    /// is for SGD's heavy-ball momentum.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Builder: ε placement.
    pub fn eps_placement(mut self, placement: EpsPlacement) -> Self {
        self.eps_placement = placement;
        self
    }
}

/// Per-step scalars of [`RmsProp`].
#[derive(Debug, Clone, Copy)]
pub struct RmsPropStep {
    lr: f64,
}

impl Rule for RmsProp {
    const NAME: &'static str = "RMSprop";
    type Step = RmsPropStep;
    type Slot = RmsPropSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_eps("RMSprop", self.eps)?;
        check(
            "RMSprop",
            "alpha",
            self.alpha,
            (0.0..1.0).contains(&self.alpha),
            "alpha in [0, 1)",
        )?;
        check(
            "RMSprop",
            "momentum",
            self.momentum,
            (0.0..=1.0).contains(&self.momentum),
            "momentum in [0, 1]",
        )
    }

    fn slots(&self) -> &'static [RmsPropSlot] {
        use RmsPropSlot::*;
        match (self.centered, self.momentum > 0.0) {
            (false, false) => &[SquareAvg],
            (true, false) => &[SquareAvg, GradAvg],
            (false, true) => &[SquareAvg, MomentumBuffer],
            (true, true) => &[SquareAvg, GradAvg, MomentumBuffer],
        }
    }

    fn prepare(&self, _: u64, _: &mut Slots<'_, f64, NoSlot>) -> RmsPropStep {
        RmsPropStep { lr: self.common.lr }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &RmsPropStep,
        g: &L,
        state: &mut Slots<'_, L, RmsPropSlot>,
    ) -> std::result::Result<L, L::Err> {
        use RmsPropSlot::*;
        state[SquareAvg] = state[SquareAvg]
            .scale(self.alpha)?
            .add(&g.sqr()?.scale(1.0 - self.alpha)?)?;
        let avg = if self.centered {
            state[GradAvg] = state[GradAvg].ema(g, self.alpha)?;
            state[SquareAvg].sub(&state[GradAvg].sqr()?)?
        } else {
            state[SquareAvg].clone()
        };
        let step = g.div(&self.eps_placement.denom(&avg, self.eps)?)?;
        if self.momentum > 0.0 {
            state[MomentumBuffer] = state[MomentumBuffer].scale(self.momentum)?.add(&step)?;
            state[MomentumBuffer].scale(s.lr)
        } else {
            step.scale(s.lr)
        }
    }

    /// μ, 0 when off (PyTorch's RMSprop group always holds `momentum`).
    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.momentum)
    }

    /// Sets μ, as PyTorch's schedulers write `group['momentum']`; turning it on from 0
    /// adds the momentum buffer (zeros, as PyTorch creates it).
    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.momentum = m;
        true
    }
}
