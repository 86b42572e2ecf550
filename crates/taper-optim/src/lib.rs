//! # taper-optim
//!
//! Every optimizer of the source documents, exactly as they write it, and torch.optim's,
//! with PyTorch's update rules and defaults, so trajectories match step for step.
//!
//! ```
//! use taper_optim::{Adam, CosineAnnealingLr, LrScheduler, Optimizer};
//! use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};
//!
//! let store = ParamStore::new(&Device::Cpu, DType::F32);
//! let w = store.parameter("w", 2, |_, _, d| Ok(Tensor::new(&[3f32, -2.], d)?))?;
//! let mut opt = Optimizer::new(Adam::new(0.1), &store)?;
//! let mut schedule = LrScheduler::new(CosineAnnealingLr::new(200), &mut opt)?;
//! for _ in 0..200 {
//!     let loss = w.sqr()?.sum_all()?;
//!     opt.step(&Gradients::compute(&loss, &store)?)?; // or opt.backward_step(&loss)?
//!     schedule.step(&mut opt)?;
//! }
//! assert!(w.abs()?.max_all()?.to_scalar::<f32>()? < 0.05);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! | algorithm | type | documents' form | PyTorch form |
//! | --- | --- | --- | --- |
//! | gradient descent (batch, stochastic, mini-batch) | [`Sgd`] | `Sgd::new(lr)` | `SGD(lr)` |
//! | momentum as an exponential average | [`Sgd`] + [`Momentum::Ema`] | v ← βv + (1−β)g, v₀ = 0 | — |
//! | heavy-ball / Nesterov momentum | [`Sgd`] + [`Momentum::Classic`] / [`Momentum::Nesterov`] | — | `SGD(momentum, dampening, nesterov)` |
//! | AdaGrad | [`Adagrad`] | `Adagrad::documents(lr, eps)`: ε inside √ | `Adagrad(...)`: ε outside |
//! | RMSProp | [`RmsProp`] | `RmsProp::documents(lr, beta, eps)`: ε inside √ | `RMSprop(...)`, centered, momentum |
//! | Adam | [`Adam`] | m̂/(√v̂+ε) and m̂/√(v̂+ε) ([`EpsPlacement`]) | `Adam(...)`, amsgrad |
//! | AdamW | [`Adam::adamw`] | — | `AdamW(...)` |
//! | Adamax, NAdam, RAdam, Adadelta, Rprop | [`Adamax`], [`NAdam`], [`RAdam`], [`Adadelta`], [`Rprop`] | — | same names |
//! | ASGD (averaged SGD) | [`Asgd`] (averages: [`Optimizer::averaged`]) | — | `ASGD(...)` |
//! | Adafactor (factored second moments) | [`Adafactor`] | — | `Adafactor(...)` |
//! | Muon (orthogonalized momentum, matrices) | [`Muon`] | — | `Muon(...)` |
//! | SparseAdam (lazy rows) | [`SparseAdam`] with [`Optimizer::step_rows`] | — | `SparseAdam(...)` |
//! | L-BFGS (closure, strong-Wolfe) | [`LbfgsOptimizer`] with [`Lbfgs`] | — | `LBFGS(...)` |
//! | LAMB, LARS (per-tensor trust ratios) | [`Lamb`], [`Lars`] | — | (optax's `lamb`, `lars`) |
//! | Lookahead around any optimizer | [`Lookahead`] | — | (optax's `lookahead`) |
//! | SWA / EMA of the weights, SWALR | [`AveragedModel`], [`SwaLr`] | — | `swa_utils` |
//! | Lion | [`Lion`] | — | (not in torch.optim) |
//!
//! Every algorithm is a [`Rule`] run by one [`Optimizer`]: parameter groups, per-parameter
//! state keyed by name, [`WeightDecay`] coupled or decoupled, `maximize`, a NaN-skipping
//! mode ([`NonFiniteGrads::Skip`]), and state saved through safetensors. Each rule's math
//! is written once over [`Lane`] and runs on two paths: candle tensor ops (any device) and a
//! fused in-place CPU loop (no allocation per step). The same formula also generates the C
//! source of a fused kernel ([`KernelSource`]); with feature `cuda` it is compiled by NVRTC
//! at run time, once per configuration, and launched in place on the GPU.
//!
//! Learning rates: the documents' [`InverseTime`] and [`InverseSqrt`] decays, the
//! loss-driven [`ReduceLrOnPlateau`] and the gradient-norm-ratio [`GradNormRatio`];
//! torch.optim.lr_scheduler's [`StepLr`], [`MultiStepLr`], [`ExponentialLr`], [`ConstantLr`],
//! [`LinearLr`], [`PolynomialLr`], [`CosineAnnealingLr`], [`CosineAnnealingWarmRestarts`],
//! [`OneCycleLr`], [`CyclicLr`], [`LambdaLr`], [`MultiplicativeLr`], and their compositions
//! [`SequentialLr`] and [`ChainedLr`].
//! A [`Schedule`] is a pure function of the step; an [`LrScheduler`] applies it to an
//! optimizer (or one group) and saves its position with the optimizer state. Every
//! controller, time-, metric- or gradient-driven, is one [`LrControl`] stepped with a
//! [`Signal`]. Gradient clipping is an optimizer option ([`Clip`]).
//!
//! A rule declares its per-parameter state as named slots ([`slots!`], [`Slots`]) and reads
//! it by slot. The configurations Taper ships are one list, [`visit_optimizers`], which the
//! tests, the `mnist` example's `--optimizer` flag and the benchmarks all walk.
//!
//! ## The rule contract, and how it grows past element-wise updates
//!
//! A [`Rule`] is written once and every execution path runs it. Its required part is
//! element-wise: [`Rule::prepare`] (per-step scalars) and [`Rule::direction`] (the amount to
//! subtract, over [`Lane`]). Algorithms that are not purely element-wise override one of a
//! few provided methods instead of adding a flag to [`Optimizer`]; each method is the small
//! transform optax would chain:
//!
//! | need | provided method | used by |
//! | --- | --- | --- |
//! | the step sees θ beyond weight decay | [`Rule::apply`] (default θ − direction) | ASGD (shrink and average), LAMB, LARS |
//! | per-tensor norms before the update | [`Rule::needs_norms`], [`Rule::normed`], [`Rule::set_norms`]: one read-only pass, fused on the CPU, [`TensorNorms`] in | LAMB, LARS (trust ratios), Adafactor (RMS(θ)) |
//! | state of another shape, or per parameter | [`Rule::slots_for`], [`Rule::state_shape`] | Adafactor (row and column factors for matrices) |
//! | reductions along axes, matrix products | [`Rule::whole_tensor`], [`Rule::tensor_step`] (candle tensor ops, any device) | Adafactor, Muon (Newton–Schulz) |
//! | parameters a rule cannot take | [`Rule::check_param`] | Muon (matrices only) |
//! | sparse row updates | none: [`Optimizer::step_rows`] runs any element-wise rule on the present rows of a [`RowSparse`](taper_tensor::RowSparse) gradient | SparseAdam |
//!
//! Two kinds of algorithm are not a rule, as in PyTorch and optax: L-BFGS re-evaluates the
//! loss inside a step through a closure and keeps one state for all parameters
//! ([`LbfgsOptimizer::step_with`]); Lookahead wraps any [`Optimizer`] ([`Lookahead`]).
//! Weight averaging ([`AveragedModel`]) sits beside the optimizer, as `swa_utils` does.

#[cfg(all(feature = "nvrtc", feature = "cuda"))]
compile_error!(
    "taper-optim: features `nvrtc` and `cuda` exclude each other (cudarc either loads or \
     links the CUDA libraries); `cuda` already includes NVRTC"
);

mod algorithms;
mod backends;
mod engine;
mod error;
mod lr;
mod registry;
mod swa;

// The public API is flat (`taper_optim::Adam`); inside the crate, files name the real
// module path (`crate::engine::rule::Rule`), so a file's imports show which folders it uses.
pub use algorithms::adadelta::{Adadelta, AdadeltaSlot};
pub use algorithms::adafactor::{Adafactor, AdafactorSlot, AdafactorStep};
pub use algorithms::adagrad::{Adagrad, AdagradSlot};
pub use algorithms::adam::{Adam, AdamSlot};
pub use algorithms::adamax::{Adamax, AdamaxSlot};
pub use algorithms::asgd::{Asgd, AsgdScalar, AsgdSlot, AsgdStep};
pub use algorithms::lamb::{Lamb, LambSlot, LambStep};
pub use algorithms::lars::{Lars, LarsSlot, LarsStep};
pub use algorithms::lbfgs::{Lbfgs, LbfgsOptimizer, LineSearch};
pub use algorithms::lion::{Lion, LionSlot};
pub use algorithms::lookahead::Lookahead;
pub use algorithms::muon::{AdjustLr, Muon, MuonSlot, NsPrecision};
pub use algorithms::nadam::{NAdam, NAdamScalar, NAdamSlot};
pub use algorithms::radam::{RAdam, RAdamSlot};
pub use algorithms::rmsprop::{RmsProp, RmsPropSlot};
pub use algorithms::rprop::{Rprop, RpropSlot};
pub use algorithms::sgd::{Momentum, Sgd, SgdSlot};
pub use algorithms::sparse_adam::{SparseAdam, SparseAdamSlot};
pub use backends::fused::MAX_FUSED_STATE;
pub use backends::kernel_source::{Expr, KernelSource, MAX_KERNEL_CONSTANTS};
#[cfg(any(feature = "nvrtc", feature = "cuda"))]
pub use backends::nvrtc::compiled_kernels;
pub use engine::any::AnyOptimizer;
pub use engine::execution::{Execution, TensorOpsReason, UpdatePath};
pub use engine::lane::Lane;
pub use engine::optimizer::{Clip, Group, NonFiniteGrads, Optimizer, ParamState, StepReport};
pub use engine::optimizer_set::OptimizerSet;
pub use engine::rule::{update, EpsPlacement, Rule, SharedOptions, TensorNorms, WeightDecay};
pub use engine::slot::{NoSlot, Slots, StateSlot};
pub use engine::state::{OptimizerState, StagedState, STATE_FORMAT};
pub use error::{Error, Result};
pub use lr::compose::{ChainedLr, SequentialLr};
pub use lr::control::{LrControl, LrDrive, LrGroups, LrTarget, Signal};
pub use lr::cosine::{CosineAnnealingLr, CosineAnnealingWarmRestarts};
pub use lr::cyclic::{CyclicLr, CyclicMode};
pub use lr::grad_norm_rate::GradNormRatio;
pub use lr::multiplicative::MultiplicativeLr;
pub use lr::one_cycle::{Anneal, OneCycleLr};
pub use lr::plateau::{PlateauConfig, PlateauMode, ReduceLrOnPlateau, ThresholdMode};
pub use lr::schedule::{
    ConstantLr, ExponentialLr, InverseSqrt, InverseTime, LambdaLr, LinearLr, MultiStepLr,
    PolynomialLr, Schedule, StepLr,
};
pub use lr::scheduler::LrScheduler;
pub use registry::{optimizer_entries, visit_optimizers, Entry, Family, Visitor};
pub use swa::averaged_model::{AveragedModel, Averaging};
pub use swa::swalr::SwaLr;
