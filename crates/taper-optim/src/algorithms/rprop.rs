//! Rprop (Riedmiller & Braun 1993), in PyTorch's form: each element keeps its own step
//! size, grown by η₊ while its gradient keeps its sign and shrunk by η₋ when the sign flips,
//! and moves by that step against the sign of its gradient; the gradient's magnitude is
//! never used.
//!
//! With s = sign(g·g_prev): step ← clamp(step·η₊, step_min, step_max) if s > 0,
//! clamp(step·η₋, …) if s < 0 (and g is taken as 0 for this step), unchanged if s = 0;
//! θ ← θ − sign(g)·step; g_prev ← g. Steps start at `lr`.
//!
//! PyTorch counterpart: `torch.optim.Rprop(lr=1e-2, etas=(0.5, 1.2),
//! step_sizes=(1e-6, 50), maximize=False)`. torch's Rprop has no weight decay; Taper's
//! shared `WeightDecay` still applies if set. Written with `Lane`'s arithmetic (indicators
//! from `sign`), so it runs on the fused path and in generated kernels.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots, StateSlot};
use crate::error::check;
use crate::error::Result;

crate::slots! {
    /// The per-parameter state of [`Rprop`], as torch.optim names it.
    pub enum RpropSlot {
        /// The previous step's gradient (0 where its sign flipped).
        Prev = "prev",
        /// Each element's step size.
        StepSize = "step_size",
    }
}

/// Rprop's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rprop {
    /// Learning rate: the initial step size (default 1e-2), weight decay, maximize.
    pub common: SharedOptions,
    /// η₋, the shrink factor on a sign flip, in (0, 1) (default 0.5).
    pub eta_minus: f64,
    /// η₊, the growth factor while the sign holds, > 1 (default 1.2).
    pub eta_plus: f64,
    /// The smallest step size (default 1e-6).
    pub step_min: f64,
    /// The largest step size (default 50).
    pub step_max: f64,
}

impl Default for Rprop {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl Rprop {
    crate::common_builders!();

    /// Rprop with PyTorch's defaults and initial step size `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            eta_minus: 0.5,
            eta_plus: 1.2,
            step_min: 1e-6,
            step_max: 50.0,
        }
    }

    /// Builder: (η₋, η₊), torch's `etas`.
    pub fn etas(mut self, eta_minus: f64, eta_plus: f64) -> Self {
        self.eta_minus = eta_minus;
        self.eta_plus = eta_plus;
        self
    }

    /// Builder: (smallest, largest) step size, torch's `step_sizes`.
    pub fn step_sizes(mut self, min: f64, max: f64) -> Self {
        self.step_min = min;
        self.step_max = max;
        self
    }
}

impl Rule for Rprop {
    const NAME: &'static str = "Rprop";
    type Step = ();
    type Slot = RpropSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        let n = "Rprop";
        check(
            n,
            "eta_minus",
            self.eta_minus,
            self.eta_minus > 0.0 && self.eta_minus < 1.0,
            "eta_minus in (0, 1)",
        )?;
        check(
            n,
            "eta_plus",
            self.eta_plus,
            self.eta_plus > 1.0 && self.eta_plus.is_finite(),
            "a finite eta_plus > 1",
        )?;
        check(
            n,
            "step_min",
            self.step_min,
            self.step_min >= 0.0 && self.step_min.is_finite(),
            "a finite step_min >= 0",
        )?;
        check(
            n,
            "step_max",
            self.step_max,
            self.step_max >= self.step_min && self.step_max.is_finite(),
            "a finite step_max >= step_min",
        )
    }

    fn slots(&self) -> &'static [RpropSlot] {
        RpropSlot::ALL
    }

    fn initial_state(&self, slot: RpropSlot) -> f64 {
        match slot {
            RpropSlot::Prev => 0.0,
            RpropSlot::StepSize => self.common.lr,
        }
    }

    fn prepare(&self, _: u64, _: &mut Slots<'_, f64, NoSlot>) {}

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        _: &(),
        g: &L,
        state: &mut Slots<'_, L, RpropSlot>,
    ) -> std::result::Result<L, L::Err> {
        use RpropSlot::*;
        let s = g.mul(&state[Prev])?.sign()?;
        let mag = s.abs()?;
        // Indicators of s > 0 and s < 0 (each 0 or 1, exactly).
        let grow = s.add(&mag)?.scale(0.5)?;
        let shrink = mag.sub(&s)?.scale(0.5)?;
        let factor = grow
            .scale(self.eta_plus)?
            .add(&shrink.scale(self.eta_minus)?)?
            .add(&mag.affine(-1.0, 1.0)?)?;
        let step = state[StepSize].mul(&factor)?;
        // clamp(step, min, max) = −max(−max(step, min), −max)
        let step = step
            .maximum(&step.affine(0.0, self.step_min)?)?
            .scale(-1.0)?;
        let step = step
            .maximum(&step.affine(0.0, -self.step_max)?)?
            .scale(-1.0)?;
        state[StepSize] = step;
        let g = g.mul(&shrink.affine(-1.0, 1.0)?)?;
        let d = g.sign()?.mul(&state[StepSize])?;
        state[Prev] = g;
        Ok(d)
    }
}
