//! RAdam: Adam with a rectified adaptive learning rate (Liu et al. 2020).
//!
//! ρ∞ = 2/(1 − β₂) − 1, ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ). While ρ_t ≤ 5 the step is
//! η·m̂ (SGD with momentum); after, η·m̂·r_t·√(1 − β₂ᵗ)/(√v + ε) with the rectification
//! r_t = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t)).
//! `WeightDecay::Decoupled` is PyTorch's `decoupled_weight_decay=True`.
//!
//! PyTorch counterpart: `torch.optim.RAdam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
//! weight_decay=0, decoupled_weight_decay=False, maximize=False)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots};
use crate::error::Result;
use crate::error::{check_betas, check_eps};

crate::slots! {
    /// The per-parameter state of [`RAdam`], as torch.optim names it.
    pub enum RAdamSlot {
        /// First moment m.
        ExpAvg = "exp_avg",
        /// Second moment v.
        ExpAvgSq = "exp_avg_sq",
    }
}

/// RAdam's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RAdam {
    /// Learning rate (default 1e-3), weight decay, maximize.
    pub common: SharedOptions,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
}

impl Default for RAdam {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl RAdam {
    crate::common_builders!();

    /// PyTorch's RAdam with learning rate `lr`.
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

/// Per-step scalars of [`RAdam`].
#[derive(Debug, Clone, Copy)]
pub struct RAdamStep {
    lr_bc1: f64,
    /// r_t·√(1 − β₂ᵗ) once the variance is tractable.
    adaptive: Option<f64>,
}

impl Rule for RAdam {
    const NAME: &'static str = "RAdam";
    type Step = RAdamStep;
    type Slot = RAdamSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_betas("RAdam", self.beta1, self.beta2)?;
        check_eps("RAdam", self.eps)
    }

    fn slots(&self) -> &'static [RAdamSlot] {
        &[RAdamSlot::ExpAvg, RAdamSlot::ExpAvgSq]
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> RAdamStep {
        let t = step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc2 = 1.0 - b2.powi(t);
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        let rho_t = rho_inf - 2.0 * step as f64 * b2.powi(t) / bc2;
        let adaptive = (rho_t > 5.0).then(|| {
            let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt();
            rect * bc2.sqrt()
        });
        RAdamStep {
            lr_bc1: self.common.lr / (1.0 - b1.powi(t)),
            adaptive,
        }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &RAdamStep,
        g: &L,
        state: &mut Slots<'_, L, RAdamSlot>,
    ) -> std::result::Result<L, L::Err> {
        use RAdamSlot::*;
        state[ExpAvg] = state[ExpAvg].ema(g, self.beta1)?;
        state[ExpAvgSq] = state[ExpAvgSq]
            .scale(self.beta2)?
            .add(&g.sqr()?.scale(1.0 - self.beta2)?)?;
        match s.adaptive {
            Some(a) => state[ExpAvg]
                .div(&state[ExpAvgSq].sqrt()?.affine(1.0, self.eps)?)?
                .scale(s.lr_bc1 * a),
            None => state[ExpAvg].scale(s.lr_bc1),
        }
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.beta1)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.beta1 = m;
        true
    }
}
