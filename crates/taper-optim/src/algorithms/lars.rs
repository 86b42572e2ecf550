//! LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, "Large Batch
//! Training of Convolutional Networks"), in optax's form: the gradient plus decayed
//! weights, scaled per tensor by the trust ratio φ‖θ‖ / (‖u‖ + ε), then by η, then heavy-ball
//! momentum.
//!
//! u = g + λθ, r = φ‖θ‖₂ / (‖u‖₂ + ε) (1 where either norm is 0), q = η·r·u,
//! m ← q + μm, θ ← θ − m (Nesterov: θ ← θ − (q + μm)).
//!
//! optax counterpart: `optax.lars(learning_rate, weight_decay=0.0, weight_decay_mask=True,
//! trust_coefficient=0.001, eps=0.0, trust_ratio_mask=True, momentum=0.9,
//! nesterov=False)`. There is no torch.optim LARS. optax's trace holds −m (it adds
//! updates); Taper's `momentum_buffer` holds m. optax's two masks exclude parameters by
//! name; in Taper a parameter group does that, with [`Lars::excluded`] as its
//! configuration (no decay, no trust ratio). Taper's shared `WeightDecay` still applies
//! outside the trust ratio if set; LARS's own decay is the `weight_decay` field.
//!
//! The ratio needs ‖g + λθ‖ before the update, so each step makes one read-only pass over
//! θ and g first ([`Rule::needs_norms`]); both passes are element-wise and fused.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions, TensorNorms};
use crate::engine::slot::{NoSlot, Slots, StateSlot};
use crate::error::check;
use crate::error::Result;

crate::slots! {
    /// The per-parameter state of [`Lars`].
    pub enum LarsSlot {
        /// The momentum m (optax's `trace`, negated).
        MomentumBuffer = "momentum_buffer",
    }
}

/// LARS's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lars {
    /// Learning rate η (no default in optax; `Lars::default()` uses 1.0), maximize.
    pub common: SharedOptions,
    /// λ, the decayed weights added to the gradient inside the trust ratio (default 0).
    pub weight_decay: f64,
    /// φ, the trust coefficient (default 1e-3).
    pub trust_coefficient: f64,
    /// ε, added to ‖u‖ in the ratio (default 0).
    pub eps: f64,
    /// μ, the momentum (default 0.9).
    pub momentum: f64,
    /// Nesterov momentum (default false).
    pub nesterov: bool,
    /// Scale by the trust ratio (default true).
    pub trust_ratio: bool,
}

impl Default for Lars {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl Lars {
    crate::common_builders!(no_weight_decay);

    /// optax's LARS with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            weight_decay: 0.0,
            trust_coefficient: 1e-3,
            eps: 0.0,
            momentum: 0.9,
            nesterov: false,
            trust_ratio: true,
        }
    }

    crate::engine::rule::trust_ratio_builders!();

    /// Builder: φ, the trust coefficient.
    pub fn trust_coefficient(mut self, phi: f64) -> Self {
        self.trust_coefficient = phi;
        self
    }

    /// Builder: ε in the ratio's denominator.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Builder: μ, the momentum.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Builder: Nesterov momentum.
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }
}

/// The trust ratio of one LARS step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LarsStep {
    ratio: f64,
}

impl Rule for Lars {
    const NAME: &'static str = "LARS";
    type Step = LarsStep;
    type Slot = LarsSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        let n = "LARS";
        for (field, v) in [
            ("weight_decay", self.weight_decay),
            ("trust_coefficient", self.trust_coefficient),
            ("eps", self.eps),
        ] {
            check(
                n,
                field,
                v,
                v >= 0.0 && v.is_finite(),
                "a finite value >= 0",
            )?;
        }
        check(
            n,
            "momentum",
            self.momentum,
            (0.0..1.0).contains(&self.momentum),
            "momentum in [0, 1)",
        )
    }

    fn slots(&self) -> &'static [LarsSlot] {
        LarsSlot::ALL
    }

    fn prepare(&self, _: u64, _: &mut Slots<'_, f64, NoSlot>) -> LarsStep {
        LarsStep { ratio: 1.0 }
    }

    /// Heavy-ball momentum of the already scaled gradient q (what [`Rule::apply`] passes):
    /// m ← q + μm; the step is m, or q + μm with Nesterov.
    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        _: &LarsStep,
        q: &L,
        state: &mut Slots<'_, L, LarsSlot>,
    ) -> std::result::Result<L, L::Err> {
        use LarsSlot::*;
        state[MomentumBuffer] = q.add(&state[MomentumBuffer].scale(self.momentum)?)?;
        if self.nesterov {
            q.add(&state[MomentumBuffer].scale(self.momentum)?)
        } else {
            Ok(state[MomentumBuffer].clone())
        }
    }

    fn needs_norms(&self) -> bool {
        self.trust_ratio
    }

    /// u = g + λθ.
    #[inline(always)]
    fn normed<L: Lane>(
        &self,
        _: &LarsStep,
        p: &L,
        g: &L,
        _: &mut Slots<'_, L, LarsSlot>,
    ) -> std::result::Result<L, L::Err> {
        if self.weight_decay == 0.0 {
            return Ok(g.clone());
        }
        g.add(&p.scale(self.weight_decay)?)
    }

    fn set_norms(&self, s: &mut LarsStep, norms: TensorNorms) {
        s.ratio = norms.trust_ratio(self.trust_coefficient, self.eps);
    }

    #[inline(always)]
    fn apply<L: Lane>(
        &self,
        s: &LarsStep,
        p: &L,
        g: &L,
        state: &mut Slots<'_, L, LarsSlot>,
    ) -> std::result::Result<L, L::Err> {
        let q = self
            .normed(s, p, g, state)?
            .scale(self.common.lr * s.ratio)?;
        let d = self.direction(s, &q, state)?;
        p.sub(&d)
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.momentum)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.momentum = m;
        true
    }
}
