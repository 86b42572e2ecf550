//! SparseAdam: Adam for row-sparse gradients, in PyTorch's form. Only the rows a step's
//! gradient has are updated, moments included ("lazy" Adam): rows no batch looked up keep
//! their moments instead of decaying them. Step it with
//! [`Optimizer::step_rows`](crate::Optimizer::step_rows) and taper-nn's
//! `Embedding::sparse_grad`.
//!
//! For the present rows, at the parameter's step t: m ← m + (1 − β₁)(g − m),
//! v ← v + (1 − β₂)(g² − v), θ ← θ − η·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε). Note ε is not
//! scaled by the bias correction here, unlike Adam's (√v̂ + ε), as in PyTorch.
//!
//! PyTorch counterpart: `torch.optim.SparseAdam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
//! maximize=False)`. PyTorch refuses dense gradients; here a dense `step` updates every
//! row (every row present). It has no weight decay in PyTorch; Taper's shared
//! `WeightDecay` applies to the present rows if set.
//!
//! ```
//! use taper_nn::EmbeddingConfig;
//! use taper_optim::{Optimizer, SparseAdam};
//! use taper_tensor::{DType, Device, Gradients, Module, ParamStore, Tensor};
//! let store = ParamStore::new(&Device::Cpu, DType::F32);
//! let emb = EmbeddingConfig::new(1000, 16).sparse(true).build(&store.sub("emb"))?;
//! let mut opt = Optimizer::new(SparseAdam::new(1e-2), &store)?;
//! let ids = Tensor::new(&[3u32, 17, 3], &Device::Cpu)?;
//! let loss = emb.forward(&ids)?.sqr()?.sum_all()?;
//! let rows = emb.sparse_grad(&Gradients::compute(&loss, &store)?)?;
//! assert_eq!(rows.rows(), [3, 17]);
//! opt.step_rows(&[("emb.weight", rows)])?; // touches 2 of 1000 rows
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots, StateSlot};
use crate::error::Result;
use crate::error::{check_betas, check_eps};

crate::slots! {
    /// The per-parameter state of [`SparseAdam`], as torch.optim names it.
    pub enum SparseAdamSlot {
        /// First moment m.
        ExpAvg = "exp_avg",
        /// Second moment v.
        ExpAvgSq = "exp_avg_sq",
    }
}

/// SparseAdam's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseAdam {
    /// Learning rate (default 1e-3), maximize.
    pub common: SharedOptions,
    /// β₁ (default 0.9).
    pub beta1: f64,
    /// β₂ (default 0.999).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
}

impl Default for SparseAdam {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

impl SparseAdam {
    crate::common_builders!();

    /// PyTorch's SparseAdam with learning rate `lr`.
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

impl Rule for SparseAdam {
    const NAME: &'static str = "SparseAdam";
    /// The step size η·√(1 − β₂ᵗ)/(1 − β₁ᵗ).
    type Step = f64;
    type Slot = SparseAdamSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        check_betas("SparseAdam", self.beta1, self.beta2)?;
        check_eps("SparseAdam", self.eps)
    }

    fn slots(&self) -> &'static [SparseAdamSlot] {
        SparseAdamSlot::ALL
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> f64 {
        let t = step as i32;
        self.common.lr * (1.0 - self.beta2.powi(t)).sqrt() / (1.0 - self.beta1.powi(t))
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        step_size: &f64,
        g: &L,
        state: &mut Slots<'_, L, SparseAdamSlot>,
    ) -> std::result::Result<L, L::Err> {
        use SparseAdamSlot::*;
        let m = &state[ExpAvg];
        let m = m.add(&g.sub(m)?.scale(1.0 - self.beta1)?)?;
        let v = &state[ExpAvgSq];
        let v = v.add(&g.sqr()?.sub(v)?.scale(1.0 - self.beta2)?)?;
        let d = m
            .div(&v.sqrt()?.affine(1.0, self.eps)?)?
            .scale(*step_size)?;
        state[ExpAvg] = m;
        state[ExpAvgSq] = v;
        Ok(d)
    }

    fn momentum_coefficient(&self) -> Option<f64> {
        Some(self.beta1)
    }

    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        self.beta1 = m;
        true
    }
}
