//! # Taper
//!
//! PyTorch-style training in Rust, built on [candle](https://github.com/huggingface/candle).
//! This facade re-exports the workspace so a training script depends on `taper` alone:
//!
//! | module | crate | holds |
//! | --- | --- | --- |
//! | [`tensor`] | taper-tensor | candle re-exports, `ParamStore`, `Gradients`, gradcheck, devices, seeding |
//! | [`nn`] | taper-nn | layers, activations, initializers, losses, regularizers |
//! | [`optim`] | taper-optim | optimizers, learning-rate schedules, optimizer state |
//! | [`data`] | taper-data | datasets, batching, IDX/MNIST loading, transforms |
//! | [`train`] | taper-train | metrics, progress, early stopping, checkpoints, plots |
//! | [`dist`] | taper-dist | data-parallel training: DDP, ZeRO-1, MPI (feature `mpi`) |
//!
//! A training step, written out in full (forward, loss, backward, update):
//!
//! ```
//! use taper::prelude::*;
//!
//! manual_seed(0);
//! let dev = device("cpu")?;
//! let store = ParamStore::new(&dev, DType::F32);
//! let w = store.parameter("weight", (1, 1), |s, dt, d| randn(s, 0.0, 1.0, dt, d))?;
//! let b = store.parameter("bias", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
//! // y = 2x + 1
//! let x = rand_uniform((64, 1), 0.0, 1.0, DType::F32, &dev)?;
//! let y = x.affine(2.0, 1.0)?;
//! for _ in 0..500 {
//!     let pred = x.matmul(&w.t()?)?.broadcast_add(&b)?;
//!     let loss = pred.sub(&y)?.sqr()?.mean_all()?;
//!     let mut grads = Gradients::compute(&loss, &store)?;
//!     grads.clip_norm(10.0, Norm::L2, NonFinite::Error)?;
//!     for (name, var) in store.trainable() {
//!         let g = grads.get(&name).unwrap();
//!         var.set(&var.as_tensor().sub(&g.affine(0.5, 0.0)?)?)?; // plain gradient descent
//!     }
//! }
//! let w = store.var("weight")?.as_tensor().flatten_all()?.to_vec1::<f32>()?[0];
//! assert!((w - 2.0).abs() < 0.05, "{w}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod error;

pub use error::{Error, Result};

// Inlined, so `cargo doc -p taper` documents every crate's items under the facade's
// modules (`taper::optim::Adam`), not bare re-export lines.
#[doc(inline)]
pub use taper_data as data;
#[doc(inline)]
pub use taper_dist as dist;
#[doc(inline)]
pub use taper_nn as nn;
#[doc(inline)]
pub use taper_optim as optim;
#[doc(inline)]
pub use taper_tensor as tensor;
#[doc(inline)]
pub use taper_train as train;

/// The names a training script needs, in one `use taper::prelude::*;`: [`Result`] and
/// [`Error`] (every Taper error converts into it, so `?` works across crates); tensors,
/// seeding and devices; every layer and its configuration, the activation functions with
/// PyTorch's gradients (`relu`, `gelu`, `softmax`, …) and every loss; custom layers
/// ([`CustomLayer`](crate::nn::CustomLayer)); every optimizer, [`OptimizerSet`](crate::optim::OptimizerSet),
/// schedule and learning-rate controller; datasets, loaders, splits and transforms;
/// metrics, stopping rules, checkpoints and logs; and [`Fit`](crate::train::Fit), Keras's
/// `model.fit`.
///
/// Use the prelude's `relu` (and the other activations) in your own layers rather than
/// candle's `x.relu()`: candle's ReLU has gradient 1 at x = 0, PyTorch's and Taper's 0, so a
/// custom layer written with candle's would silently train differently from PyTorch.
///
/// Apart from `Result` and `Error`, which are Taper's, it exports nothing under a name
/// candle's crate root uses for another item (the candle names it has, `Tensor`, `Device`,
/// `DType`, `Var`, `Module`, `ModuleT`, `D`, are candle's own items), so
/// `use taper::tensor::candle::*;` beside it causes no ambiguity elsewhere; name candle's
/// `candle::Result` by path. candle-nn has layers and an `Optimizer` trait under the same
/// names as Taper's: import candle-nn by path (`candle_nn::linear`) rather than with a glob.
///
/// ```
/// use taper::prelude::*;
///
/// manual_seed(0);
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let model = Sequential::new(&store)
///     .append_with(|s| Linear::new(10, 10, s))?
///     .append(Activation::Relu)
///     .append_with(|s| Linear::new(10, 1, s))?;
/// let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
/// let x = rand_uniform((100, 10), 0.0, 1.0, DType::F32, &Device::Cpu)?;
/// let y = rand_uniform((100, 1), 0.0, 1.0, DType::F32, &Device::Cpu)?;
/// let loader = DataLoader::new(TensorDataset::new(x, y)?, Batching::MiniBatch(32))?;
/// for epoch in 0..2 {
///     for batch in loader.epoch(epoch) {
///         let batch = batch?;
///         let loss = mse_loss(&model.forward_t(&batch.inputs, true)?, &batch.targets, Reduction::Mean)?;
///         opt.backward_step(&loss)?;
///     }
/// }
/// # Ok::<(), taper::Error>(())
/// ```
pub mod prelude {
    pub use crate::error::{Error, Result};

    pub use taper_tensor::{
        best_device, device, gradcheck, manual_seed, no_grad, on_thread_pool,
        park_idle_candle_workers, rand_uniform, randn, tracked, DType, Device, Gradients, LoadMode,
        Module, ModuleT, NonFinite, Norm, ParamStore, RowSparse, StateDict, Stateful, Tensor, Var,
        D,
    };

    pub use taper_nn::activation::{
        elu, gelu, gelu_tanh, leaky_relu, log_softmax, relu, sigmoid, silu, softmax, tanh,
    };
    pub use taper_nn::regularization::{l1_penalty, l2_penalty};
    pub use taper_nn::{
        binary_cross_entropy_with_logits, cross_entropy, dropout, huber_loss, kl_div, l1_loss,
        mse_loss, register_layer, smooth_l1_loss, Activation, AvgPool2d, BatchNorm,
        BatchNormConfig, Conv2d, Conv2dConfig, CrossEntropyLoss, CustomLayer, Dropout, Embedding,
        EmbeddingConfig, Flatten, KlReduction, LayerNorm, LayerNormConfig, Linear, LinearConfig,
        MaxPool2d, NllLoss, Reduction, Sequential,
    };

    pub use taper_optim::{
        Adadelta, Adafactor, Adagrad, Adam, Adamax, AnyOptimizer, Asgd, AveragedModel, Averaging,
        ChainedLr, Clip, ConstantLr, CosineAnnealingLr, CosineAnnealingWarmRestarts, CyclicLr,
        CyclicMode, EpsPlacement, ExponentialLr, GradNormRatio, InverseSqrt, InverseTime, Lamb,
        LambdaLr, Lars, Lbfgs, LbfgsOptimizer, LineSearch, LinearLr, Lion, Lookahead, LrControl,
        LrGroups, LrScheduler, LrTarget, Momentum, MultiStepLr, MultiplicativeLr, Muon, NAdam,
        NonFiniteGrads, OneCycleLr, Optimizer, OptimizerSet, OptimizerState, PlateauConfig,
        PolynomialLr, RAdam, ReduceLrOnPlateau, RmsProp, Rprop, Rule, Schedule, SequentialLr, Sgd,
        Signal, SparseAdam, StepLr, SwaLr, UpdatePath, WeightDecay,
    };

    pub use taper_data::transforms::{
        one_hot, Compose, Normalize, OneHot, RandomErasing, RandomRotation, RandomTranslate,
    };
    pub use taper_data::{
        mnist, random_split, Batch, Batching, DataLoader, Dataset, ShardTail, Subset, TensorDataset,
    };

    pub use taper_train::{
        accuracy, AverageEvery, Checkpoint, CheckpointManager, ConfusionMatrix, CsvLog, Direction,
        EarlyStopping, Fit, History, JsonlLog, LrEvery, Metric, Progress, RunningMean, Stop,
        StopRules, SummaryWriter, TrainState, Verbosity,
    };
}
