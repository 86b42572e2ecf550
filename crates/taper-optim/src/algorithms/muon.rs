//! Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"), in
//! PyTorch's form: momentum SGD whose update matrix is orthogonalized by a quintic
//! Newton–Schulz iteration before it is applied, so every direction of a weight matrix
//! moves by about the same amount.
//!
//! m ← μm + (1 − μ)g; U = (1 − μ)g + μm with Nesterov (default), else m;
//! O = NS(U): X = U/max(‖U‖_F, ε) (transposed if tall), then `ns_steps` times
//! A = XXᵀ, X ← aX + (bA + cA²)X, with (a, b, c) = (3.4445, −4.7750, 2.0315);
//! θ ← θ(1 − ηλ) − η·s(A, B)·O, with s = √max(1, A/B) (`AdjustLr::Original`) or
//! 0.2·√max(A, B) (`AdjustLr::MatchRmsAdamW`, which matches AdamW's update RMS) for a
//! parameter of shape A × B.
//!
//! PyTorch counterpart: `torch.optim.Muon(lr=1e-3, weight_decay=0.1, momentum=0.95,
//! nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
//! adjust_lr_fn=None)`; its weight decay is decoupled (`WeightDecay::Decoupled(0.1)` here
//! by default). PyTorch runs the iteration in bfloat16 ([`NsPrecision::Bf16`], the default
//! here too); [`NsPrecision::F32`] runs it in float32.
//!
//! Muon updates matrices only ([`Rule::check_param`] refuses the rest when the optimizer is
//! built). Give biases, gains, embeddings and the output layer to AdamW in a second
//! optimizer, as the Muon authors and PyTorch's docs do:
//!
//! ```
//! use taper_optim::{Adam, Muon, Optimizer};
//! use taper_tensor::{DType, Device, ParamStore, Tensor};
//! let store = ParamStore::new(&Device::Cpu, DType::F32);
//! store.parameter("fc.weight", (4, 3), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
//! store.parameter("fc.bias", 4, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
//! let (matrices, rest): (Vec<_>, Vec<_>) =
//!     store.trainable().into_iter().partition(|(_, v)| v.rank() == 2);
//! let muon = Optimizer::from_vars(Muon::new(0.02), matrices)?;
//! let adamw = Optimizer::from_vars(Adam::adamw(3e-4), rest)?;
//! assert!(Optimizer::new(Muon::new(0.02), &store).is_err()); // the bias is not a matrix
//! # let _ = (muon, adamw);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The orthogonalization is matrix products on the whole tensor, so Muon takes candle
//! tensor ops ([`Rule::whole_tensor`]): the same gemm as `Linear`.

use candle_core::{DType, Tensor};

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions, WeightDecay};
use crate::engine::slot::{NoSlot, Slots, StateSlot};
use crate::error::check;
use crate::{error::Error, error::Result};

crate::slots! {
    /// The per-parameter state of [`Muon`], as torch.optim names it.
    pub enum MuonSlot {
        /// The momentum m.
        MomentumBuffer = "momentum_buffer",
    }
}

/// How Muon scales its learning rate by the parameter's shape A × B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdjustLr {
    /// √max(1, A/B): torch's `adjust_lr_fn=None` / `"original"` (default).
    #[default]
    Original,
    /// 0.2·√max(A, B): torch's `"match_rms_adamw"`, so AdamW's learning rate and weight
    /// decay carry over.
    MatchRmsAdamW,
    /// √(A/B): torch's `"spectral_unclamped"`.
    SpectralUnclamped,
}

impl AdjustLr {
    /// The factor for a parameter of shape `a` × `b`.
    pub fn factor(self, a: usize, b: usize) -> f64 {
        let (a, b) = (a as f64, b as f64);
        match self {
            AdjustLr::Original => (a / b).max(1.0).sqrt(),
            AdjustLr::MatchRmsAdamW => 0.2 * a.max(b).sqrt(),
            AdjustLr::SpectralUnclamped => (a / b).sqrt(),
        }
    }
}

/// The precision of the Newton–Schulz iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NsPrecision {
    /// bfloat16, as PyTorch runs it (default): the products round to 8 bits of mantissa.
    #[default]
    Bf16,
    /// float32 (or the parameter's dtype if wider).
    F32,
}

/// Muon's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Muon {
    /// Learning rate (default 1e-3), weight decay (default decoupled 0.1), maximize.
    pub common: SharedOptions,
    /// μ, the momentum (default 0.95).
    pub momentum: f64,
    /// Nesterov momentum (default true).
    pub nesterov: bool,
    /// (a, b, c) of the quintic iteration (default (3.4445, −4.7750, 2.0315)).
    pub ns_coefficients: (f64, f64, f64),
    /// Newton–Schulz steps, below 100 (default 5).
    pub ns_steps: usize,
    /// ε, the floor of ‖U‖ (default 1e-7).
    pub eps: f64,
    /// The learning-rate adjustment by shape.
    pub adjust_lr: AdjustLr,
    /// The iteration's precision.
    pub ns_precision: NsPrecision,
}

impl Default for Muon {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl Muon {
    crate::common_builders!();

    /// PyTorch's Muon with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions {
                weight_decay: WeightDecay::Decoupled(0.1),
                ..SharedOptions::new(lr)
            },
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: (3.4445, -4.7750, 2.0315),
            ns_steps: 5,
            eps: 1e-7,
            adjust_lr: AdjustLr::Original,
            ns_precision: NsPrecision::Bf16,
        }
    }

    /// Builder: μ.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Builder: Nesterov on or off.
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }

    /// Builder: the iteration's (a, b, c) and step count.
    pub fn newton_schulz(mut self, coefficients: (f64, f64, f64), steps: usize) -> Self {
        self.ns_coefficients = coefficients;
        self.ns_steps = steps;
        self
    }

    /// Builder: ε.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Builder: the learning-rate adjustment (torch's `adjust_lr_fn`).
    pub fn adjust_lr(mut self, adjust: AdjustLr) -> Self {
        self.adjust_lr = adjust;
        self
    }

    /// Builder: the iteration's precision.
    pub fn ns_precision(mut self, precision: NsPrecision) -> Self {
        self.ns_precision = precision;
        self
    }

    /// The quintic Newton–Schulz iteration: an approximately orthogonal matrix with `u`'s
    /// singular vectors (singular values near 1), in `u`'s dtype.
    ///
    /// In bfloat16 it computes as PyTorch's bfloat16 `addmm` does: products of bfloat16
    /// values accumulated in float32, each of the three results per step rounded once to
    /// bfloat16.
    pub fn orthogonalize(&self, u: &Tensor) -> candle_core::Result<Tensor> {
        let (a, b, c) = self.ns_coefficients;
        let bf16 = self.ns_precision == NsPrecision::Bf16;
        let dtype = if u.dtype() == DType::F64 && !bf16 {
            DType::F64
        } else {
            DType::F32
        };
        let round = |t: Tensor| -> candle_core::Result<Tensor> {
            if bf16 {
                t.to_dtype(DType::BF16)?.to_dtype(DType::F32)
            } else {
                Ok(t)
            }
        };
        let (rows, cols) = u.dims2()?;
        let tall = rows > cols;
        let mut x = round(u.to_dtype(dtype)?)?;
        if tall {
            x = x.t()?.contiguous()?;
        }
        // ‖X‖ as PyTorch takes it: of X in the iteration's dtype, accumulated wide, rounded
        // to that dtype.
        let norm = crate::backends::fused::sum_squares(&x)
            .map_err(candle_core::Error::wrap)?
            .sqrt();
        let norm = round(Tensor::new(norm.max(self.eps), x.device())?.to_dtype(dtype)?)?;
        x = round(x.broadcast_div(&norm)?)?;
        for _ in 0..self.ns_steps {
            let gram = round(x.matmul(&x.t()?)?)?;
            let update = round((gram.affine(b, 0.0)? + gram.matmul(&gram)?.affine(c, 0.0)?)?)?;
            x = round((x.affine(a, 0.0)? + update.matmul(&x)?)?)?;
        }
        if tall {
            x = x.t()?.contiguous()?;
        }
        x.to_dtype(u.dtype())
    }
}

impl Rule for Muon {
    const NAME: &'static str = "Muon";
    type Step = ();
    type Slot = MuonSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        let n = "Muon";
        check(
            n,
            "momentum",
            self.momentum,
            (0.0..1.0).contains(&self.momentum),
            "momentum in [0, 1)",
        )?;
        check(
            n,
            "ns_steps",
            self.ns_steps as f64,
            self.ns_steps < 100,
            "ns_steps < 100",
        )?;
        check(
            n,
            "eps",
            self.eps,
            self.eps >= 0.0 && self.eps.is_finite(),
            "a finite eps >= 0",
        )?;
        let (a, b, c) = self.ns_coefficients;
        for (field, v) in [("ns_a", a), ("ns_b", b), ("ns_c", c)] {
            check(n, field, v, v.is_finite(), "a finite coefficient")?;
        }
        Ok(())
    }

    fn slots(&self) -> &'static [MuonSlot] {
        MuonSlot::ALL
    }

    fn check_param(&self, name: &str, dims: &[usize]) -> Result<()> {
        if dims.len() == 2 {
            return Ok(());
        }
        Err(Error::UnsupportedParameter {
            optimizer: "Muon",
            name: name.to_string(),
            dims: dims.to_vec(),
            expected: "Muon updates 2-D weight matrices; give biases, gains and other \
                       tensors to AdamW in a second optimizer",
        })
    }

    fn prepare(&self, _: u64, _: &mut Slots<'_, f64, NoSlot>) {}

    fn whole_tensor(&self, _dims: &[usize]) -> bool {
        true
    }

    /// The momentum part, before orthogonalization: m ← μm + (1 − μ)g, and
    /// (1 − μ)g + μm with Nesterov, else m.
    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        _: &(),
        g: &L,
        state: &mut Slots<'_, L, MuonSlot>,
    ) -> std::result::Result<L, L::Err> {
        let mu = self.momentum;
        let m = &state[MuonSlot::MomentumBuffer];
        let m = m.add(&g.sub(m)?.scale(1.0 - mu)?)?;
        state[MuonSlot::MomentumBuffer] = m.clone();
        if self.nesterov {
            g.add(&m.sub(g)?.scale(mu)?)
        } else {
            Ok(m)
        }
    }

    fn tensor_step(
        &self,
        s: &(),
        p: &Tensor,
        g: &Tensor,
        state: &mut Slots<'_, Tensor, MuonSlot>,
    ) -> candle_core::Result<Tensor> {
        let u = self.direction(s, g, state)?;
        let o = self.orthogonalize(&u)?;
        let (a, b) = p.dims2()?;
        p - o.affine(self.common.lr * self.adjust_lr.factor(a, b), 0.0)?
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.momentum)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.momentum = m;
        true
    }
}
