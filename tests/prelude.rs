//! `use taper::prelude::*;` beside `use taper::tensor::candle::*;` (candle-core's root)
//! leaves no name ambiguous: every prelude name is imported here by name through a module
//! that glob-imports both, which fails to compile on any clash. The list is the prelude's.

#![allow(unused_imports)]
#![deny(ambiguous_glob_imports)]

mod both {
    pub use taper::prelude::*;
    pub use taper::tensor::candle::*;
}

use both::{
    accuracy, best_device, binary_cross_entropy_with_logits, cross_entropy, device, dropout,
    gradcheck, huber_loss, kl_div, l1_loss, l1_penalty, l2_penalty, manual_seed, mnist, mse_loss,
    no_grad, on_thread_pool, one_hot, park_idle_candle_workers, rand_uniform, randn, random_split,
    smooth_l1_loss, Activation, Adadelta, Adafactor, Adagrad, Adam, Adamax, AnyOptimizer, Asgd,
    AveragedModel, Averaging, AvgPool2d, Batch, BatchNorm, BatchNormConfig, Batching, ChainedLr,
    Checkpoint, CheckpointManager, Clip, Compose, ConfusionMatrix, ConstantLr, Conv2d,
    Conv2dConfig, CosineAnnealingLr, CosineAnnealingWarmRestarts, CrossEntropyLoss, CsvLog,
    CyclicLr, CyclicMode, DType, DataLoader, Dataset, Device, Direction, Dropout, EarlyStopping,
    Embedding, EpsPlacement, ExponentialLr, Fit, Flatten, GradNormRatio, Gradients, History,
    InverseSqrt, InverseTime, KlReduction, Lamb, LambdaLr, Lars, LayerNorm, Lbfgs, LbfgsOptimizer,
    LineSearch, Linear, LinearLr, Lion, LoadMode, Lookahead, LrControl, LrEvery, LrScheduler,
    MaxPool2d, Metric, Module, ModuleT, Momentum, MultiStepLr, MultiplicativeLr, Muon, NAdam,
    NllLoss, NonFinite, NonFiniteGrads, Norm, Normalize, OneCycleLr, OneHot, Optimizer,
    OptimizerState, ParamStore, PlateauConfig, PolynomialLr, Progress, RAdam, RandomErasing,
    RandomRotation, RandomTranslate, ReduceLrOnPlateau, Reduction, RmsProp, RowSparse, Rprop, Rule,
    RunningMean, Schedule, Sequential, SequentialLr, Sgd, ShardTail, Signal, SparseAdam, StateDict,
    Stateful, StepLr, Stop, StopRules, Subset, SummaryWriter, SwaLr, Tensor, TensorDataset, Var,
    Verbosity, WeightDecay, D,
};

#[test]
fn every_prelude_name_resolves_beside_candle() {
    // The check is the `use` above; this names one of each kind so the test does something.
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _layer = Linear::new(2, 1, &store).unwrap();
    let _opt = Optimizer::new(Adam::new(1e-3), &store).unwrap();
    assert_eq!(store.names(), ["weight", "bias"]);
}
