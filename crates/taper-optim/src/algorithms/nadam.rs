//! NAdam: Adam with Nesterov momentum (Dozat 2016), with PyTorch's momentum-decay schedule.
//!
//! μ_t = β₁(1 − ½·0.96^(tψ)), Π_t = Π_{i≤t} μ_i,
//! θ ← θ − η(1 − μ_t)/(1 − Π_t) · g/D − η·μ_{t+1}/(1 − Π_t·μ_{t+1}) · m/D,
//! D = √(v/(1 − β₂ᵗ)) + ε. The running product Π is per-parameter scalar state `mu_product`.
//! `WeightDecay::Decoupled` is PyTorch's `decoupled_weight_decay=True` (NAdamW).
//!
//! PyTorch counterpart: `torch.optim.NAdam(lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
//! weight_decay=0, momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::Slots;
use crate::error::check;
use crate::error::Result;
use crate::error::{check_betas, check_eps};

crate::slots! {
    /// The per-parameter scalar state of [`NAdam`], as torch.optim names it.
    pub enum NAdamScalar {
        /// The running product Π of the momentum coefficients μ.
        MuProduct = "mu_product",
    }
}

crate::slots! {
    /// The per-parameter state of [`NAdam`], as torch.optim names it.
    pub enum NAdamSlot {
        /// First moment m.
        ExpAvg = "exp_avg",
        /// Second moment v.
        ExpAvgSq = "exp_avg_sq",
    }
}

/// NAdam's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NAdam {
    /// Learning rate (default 2e-3), weight decay, maximize.
    pub common: SharedOptions,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// ψ, the momentum decay (default 4e-3).
    pub momentum_decay: f64,
}

impl Default for NAdam {
    fn default() -> Self {
        Self::new(2e-3)
    }
}

impl NAdam {
    crate::common_builders!();

    /// PyTorch's NAdam with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            momentum_decay: 4e-3,
        }
    }

    crate::engine::rule::betas_builder!();
    crate::engine::rule::eps_builder!();

    /// Builder: ψ.
    pub fn momentum_decay(mut self, psi: f64) -> Self {
        self.momentum_decay = psi;
        self
    }
}

/// Per-step scalars of [`NAdam`].
#[derive(Debug, Clone, Copy)]
pub struct NAdamStep {
    bc2: f64,
    coef_g: f64,
    coef_m: f64,
}

impl Rule for NAdam {
    const NAME: &'static str = "NAdam";
    type Step = NAdamStep;
    type Slot = NAdamSlot;
    type Scalar = NAdamScalar;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_betas("NAdam", self.beta1, self.beta2)?;
        check_eps("NAdam", self.eps)?;
        check(
            "NAdam",
            "momentum_decay",
            self.momentum_decay,
            self.momentum_decay >= 0.0 && self.momentum_decay.is_finite(),
            "a finite momentum_decay >= 0",
        )
    }

    fn slots(&self) -> &'static [NAdamSlot] {
        &[NAdamSlot::ExpAvg, NAdamSlot::ExpAvgSq]
    }

    fn initial_scalar(&self, _: NAdamScalar) -> f64 {
        1.0
    }

    fn prepare(&self, step: u64, scalars: &mut Slots<'_, f64, NAdamScalar>) -> NAdamStep {
        let t = step as f64;
        let mu = self.beta1 * (1.0 - 0.5 * 0.96f64.powf(t * self.momentum_decay));
        let mu_next = self.beta1 * (1.0 - 0.5 * 0.96f64.powf((t + 1.0) * self.momentum_decay));
        scalars[NAdamScalar::MuProduct] *= mu;
        let prod = scalars[NAdamScalar::MuProduct];
        let lr = self.common.lr;
        NAdamStep {
            bc2: 1.0 - self.beta2.powi(step as i32),
            coef_g: lr * (1.0 - mu) / (1.0 - prod),
            coef_m: lr * mu_next / (1.0 - prod * mu_next),
        }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &NAdamStep,
        g: &L,
        state: &mut Slots<'_, L, NAdamSlot>,
    ) -> std::result::Result<L, L::Err> {
        use NAdamSlot::*;
        state[ExpAvg] = state[ExpAvg].ema(g, self.beta1)?;
        state[ExpAvgSq] = state[ExpAvgSq]
            .scale(self.beta2)?
            .add(&g.sqr()?.scale(1.0 - self.beta2)?)?;
        let denom = state[ExpAvgSq]
            .scale(1.0 / s.bc2)?
            .sqrt()?
            .affine(1.0, self.eps)?;
        g.scale(s.coef_g)?
            .add(&state[ExpAvg].scale(s.coef_m)?)?
            .div(&denom)
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.beta1)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.beta1 = m;
        true
    }
}
