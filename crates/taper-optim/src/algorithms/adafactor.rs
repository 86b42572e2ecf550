//! Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear
//! Memory Cost"), in PyTorch's form: for a matrix (or any tensor of ≥ 2 axes) the second
//! moment is kept factored, as a row vector R and a column vector C whose outer product
//! estimates it; a vector keeps it in full. The step is relative to the parameter's RMS and
//! clipped by the update's own RMS.
//!
//! At step t: β̂ = t^c (c = `beta2_decay`, −0.8), ρ = min(η, 1/√t), α = max(ε₂, RMS(θ))·ρ;
//! θ ← θ(1 − ηλ) (decoupled decay). Matrix: R ← R + β̂(mean_row(g²) − R),
//! C ← C + β̂(mean_col(g²) − C), V = R·C / max(mean(R), ε₁); vector: V ← V + β̂(g² − V).
//! U = g / √max(V, ε₁²), θ ← θ − α / max(1, RMS(U)/d) · U.
//!
//! PyTorch counterpart: `torch.optim.Adafactor(lr=1e-2, beta2_decay=-0.8,
//! eps=(None, 1e-3), d=1.0, weight_decay=0.0, maximize=False)`; ε₁ = None is the
//! parameter dtype's machine epsilon, and `WeightDecay::Decoupled(λ)` is its
//! `weight_decay` (θ·(1 − ηλ), after α is taken from the undecayed θ, as in PyTorch).
//! State: `row_var` and `col_var` (shapes `dims` with the last axis 1, and with the
//! second-to-last axis 1) for ≥ 2 axes, `variance` for a vector.
//!
//! Each step needs reductions along axes and over the whole update, so every parameter is
//! stepped whole ([`Rule::whole_tensor`]) with candle tensor ops, on any device; θ's norm
//! comes from the optimizer's norm pass ([`Rule::needs_norms`]).

use candle_core::{DType, Tensor};

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions, TensorNorms};
use crate::engine::slot::{NoSlot, Slots, StateSlot};
use crate::error::check;
use crate::error::Result;

/// The per-parameter state of [`Adafactor`], as torch.optim names it. A matrix keeps
/// `[RowVar, ColVar]`, a vector `[Variance]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdafactorSlot {
    /// The row factor R: mean of g² over the last axis (shape `dims` with the last axis 1).
    RowVar,
    /// The column factor C: mean of g² over the second-to-last axis.
    ColVar,
    /// The full second moment of a vector.
    Variance,
}

impl StateSlot for AdafactorSlot {
    const ALL: &'static [Self] = &[Self::RowVar, Self::ColVar, Self::Variance];

    fn name(self) -> &'static str {
        match self {
            Self::RowVar => "row_var",
            Self::ColVar => "col_var",
            Self::Variance => "variance",
        }
    }

    #[inline(always)]
    fn position(self, _len: usize) -> usize {
        match self {
            Self::RowVar | Self::Variance => 0,
            Self::ColVar => 1,
        }
    }
}

/// Adafactor's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adafactor {
    /// Learning rate η (default 1e-2), decoupled weight decay, maximize.
    pub common: SharedOptions,
    /// c in β̂ = t^c, the second-moment decay's exponent, ≤ 0 (default −0.8).
    pub beta2_decay: f64,
    /// ε₁, the floor of the variance estimate; `None` (default) is the parameter dtype's
    /// machine epsilon.
    pub eps1: Option<f64>,
    /// ε₂, the floor of θ's RMS in the relative step (default 1e-3).
    pub eps2: f64,
    /// d, the update-clipping threshold on RMS(U) (default 1).
    pub d: f64,
}

impl Default for Adafactor {
    fn default() -> Self {
        Self::new(1e-2)
    }
}

impl Adafactor {
    crate::common_builders!();

    /// PyTorch's Adafactor with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            beta2_decay: -0.8,
            eps1: None,
            eps2: 1e-3,
            d: 1.0,
        }
    }

    /// Builder: c, torch's `beta2_decay`.
    pub fn beta2_decay(mut self, c: f64) -> Self {
        self.beta2_decay = c;
        self
    }

    /// Builder: (ε₁, ε₂), torch's `eps`.
    pub fn eps(mut self, eps1: Option<f64>, eps2: f64) -> Self {
        self.eps1 = eps1;
        self.eps2 = eps2;
        self
    }

    /// Builder: d, the clipping threshold.
    pub fn d(mut self, d: f64) -> Self {
        self.d = d;
        self
    }

    /// ε₁ for a parameter of `dtype`.
    fn eps1_for(&self, dtype: DType) -> f64 {
        self.eps1.unwrap_or(match dtype {
            DType::F64 => f64::EPSILON,
            DType::F16 => 9.765625e-4,
            DType::BF16 => 7.8125e-3,
            _ => f32::EPSILON as f64,
        })
    }
}

/// The scalars of one Adafactor step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdafactorStep {
    /// β̂ = t^c, the weight of the new g² in the moving averages.
    one_minus_beta2: f64,
    /// ρ = min(η, 1/√t).
    rho: f64,
    /// α = max(ε₂, RMS(θ))·ρ, set from the norm pass.
    alpha: f64,
}

/// x + w·(y − x), torch's `lerp`.
fn lerp(x: &Tensor, y: &Tensor, w: f64) -> candle_core::Result<Tensor> {
    x + (y - x)?.affine(w, 0.0)?
}

impl Rule for Adafactor {
    const NAME: &'static str = "Adafactor";
    type Step = AdafactorStep;
    type Slot = AdafactorSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        let n = "Adafactor";
        check(
            n,
            "beta2_decay",
            self.beta2_decay,
            self.beta2_decay <= 0.0 && self.beta2_decay.is_finite(),
            "a finite beta2_decay <= 0",
        )?;
        if let Some(e) = self.eps1 {
            check(
                n,
                "eps1",
                e,
                e >= 0.0 && e.is_finite(),
                "a finite eps1 >= 0",
            )?;
        }
        check(
            n,
            "eps2",
            self.eps2,
            self.eps2 >= 0.0 && self.eps2.is_finite(),
            "a finite eps2 >= 0",
        )?;
        check(
            n,
            "d",
            self.d,
            self.d >= 1.0 && self.d.is_finite(),
            "a finite d >= 1",
        )
    }

    /// The matrix layout; [`Rule::slots_for`] gives each parameter's.
    fn slots(&self) -> &'static [AdafactorSlot] {
        &[AdafactorSlot::RowVar, AdafactorSlot::ColVar]
    }

    fn slots_for(&self, dims: &[usize]) -> &'static [AdafactorSlot] {
        if dims.len() >= 2 {
            self.slots()
        } else {
            &[AdafactorSlot::Variance]
        }
    }

    fn state_shape(&self, slot: AdafactorSlot, dims: &[usize]) -> Vec<usize> {
        let mut shape = dims.to_vec();
        let n = shape.len();
        match slot {
            AdafactorSlot::RowVar => shape[n - 1] = 1,
            AdafactorSlot::ColVar => shape[n - 2] = 1,
            AdafactorSlot::Variance => {}
        }
        shape
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> AdafactorStep {
        let t = step as f64;
        AdafactorStep {
            one_minus_beta2: t.powf(self.beta2_decay),
            rho: self.common.lr.min(1.0 / t.sqrt()),
            alpha: self.eps2 * self.common.lr.min(1.0 / t.sqrt()),
        }
    }

    fn needs_norms(&self) -> bool {
        true
    }

    /// Only ‖θ‖ is used (for α); u is the gradient.
    fn normed<L: Lane>(
        &self,
        _: &AdafactorStep,
        _: &L,
        g: &L,
        _: &mut Slots<'_, L, AdafactorSlot>,
    ) -> std::result::Result<L, L::Err> {
        Ok(g.clone())
    }

    fn set_norms(&self, s: &mut AdafactorStep, norms: TensorNorms) {
        let rms = norms.param / (norms.len.max(1) as f64).sqrt();
        s.alpha = self.eps2.max(rms) * s.rho;
    }

    fn whole_tensor(&self, _dims: &[usize]) -> bool {
        true
    }

    /// The vector form's element-wise part, g / √max(v, ε₁²) with v's moving average
    /// updated and ε₁ as set (or f32's machine epsilon), without the RMS clip and α, which
    /// need the whole tensor: every parameter goes through [`Rule::tensor_step`], so the
    /// optimizer never calls this.
    fn direction<L: Lane>(
        &self,
        s: &AdafactorStep,
        g: &L,
        state: &mut Slots<'_, L, AdafactorSlot>,
    ) -> std::result::Result<L, L::Err> {
        let v = &state[AdafactorSlot::Variance];
        let v = v.add(&g.sqr()?.sub(v)?.scale(s.one_minus_beta2)?)?;
        state[AdafactorSlot::Variance] = v.clone();
        let eps1 = self.eps1_for(DType::F32);
        g.div(&v.maximum(&v.affine(0.0, eps1 * eps1)?)?.sqrt()?)
    }

    fn tensor_step(
        &self,
        s: &AdafactorStep,
        p: &Tensor,
        g: &Tensor,
        state: &mut Slots<'_, Tensor, AdafactorSlot>,
    ) -> candle_core::Result<Tensor> {
        use AdafactorSlot::*;
        let eps1 = self.eps1_for(p.dtype());
        let w = s.one_minus_beta2;
        let g2 = g.sqr()?;
        let var = if g.rank() >= 2 {
            let n = g.rank();
            let (rows, cols) = (g.dim(n - 2)?, g.dim(n - 1)?);
            let row_mean = g2.sum_keepdim(n - 1)?.affine(1.0 / cols as f64, 0.0)?;
            let col_mean = g2.sum_keepdim(n - 2)?.affine(1.0 / rows as f64, 0.0)?;
            state[RowVar] = lerp(&state[RowVar], &row_mean, w)?;
            state[ColVar] = lerp(&state[ColVar], &col_mean, w)?;
            let outer = state[RowVar].matmul(&state[ColVar])?;
            let scale = state[RowVar].mean_keepdim(n - 2)?.maximum(eps1)?;
            outer.broadcast_div(&scale)?
        } else {
            state[Variance] = lerp(&state[Variance], &g2, w)?;
            state[Variance].clone()
        };
        let update = (g / var.maximum(eps1 * eps1)?.sqrt()?)?;
        let sum_sq =
            crate::backends::fused::sum_squares(&update).map_err(candle_core::Error::wrap)?;
        let rms = sum_sq.sqrt() / ((update.elem_count().max(1) as f64).sqrt() * self.d);
        let denom = rms.max(1.0);
        p - update.affine(s.alpha / denom, 0.0)?
    }
}
