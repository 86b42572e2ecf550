//! `use taper::prelude::*;` beside `use taper::tensor::candle::*;` (candle-core's root)
//! leaves no name ambiguous but `Result` and `Error` (Taper's, on purpose): every other
//! prelude name is imported here by name through a module that glob-imports both, which
//! fails to compile on any clash. The list is the prelude's.

#![allow(unused_imports)]
#![deny(ambiguous_glob_imports)]

mod both {
    pub use taper::prelude::*;
    pub use taper::tensor::candle::*;
}

use both::{
    accuracy, best_device, binary_cross_entropy_with_logits, cross_entropy, device, dropout, elu,
    gelu, gelu_tanh, gradcheck, huber_loss, kl_div, l1_loss, l1_penalty, l2_penalty, leaky_relu,
    log_softmax, manual_seed, mnist, mse_loss, no_grad, on_thread_pool, one_hot,
    park_idle_candle_workers, rand_uniform, randn, random_split, register_layer, relu, sigmoid,
    silu, smooth_l1_loss, softmax, tanh, tracked, Activation, Adadelta, Adafactor, Adagrad, Adam,
    Adamax, AnyOptimizer, Asgd, AverageEvery, AveragedModel, Averaging, AvgPool2d, Batch,
    BatchNorm, BatchNormConfig, Batching, ChainedLr, Checkpoint, CheckpointManager, Clip, Compose,
    ConfusionMatrix, ConstantLr, Conv2d, Conv2dConfig, CosineAnnealingLr,
    CosineAnnealingWarmRestarts, CrossEntropyLoss, CsvLog, CustomLayer, CyclicLr, CyclicMode,
    DType, DataLoader, Dataset, Device, Direction, Dropout, EarlyStopping, Embedding,
    EmbeddingConfig, EpsPlacement, ExponentialLr, Fit, Flatten, GradNormRatio, Gradients, History,
    InverseSqrt, InverseTime, JsonlLog, KlReduction, Lamb, LambdaLr, Lars, LayerNorm,
    LayerNormConfig, Lbfgs, LbfgsOptimizer, LineSearch, Linear, LinearConfig, LinearLr, Lion,
    LoadMode, Lookahead, LrControl, LrEvery, LrGroups, LrScheduler, LrTarget, MaxPool2d, Metric,
    Module, ModuleT, Momentum, MultiStepLr, MultiplicativeLr, Muon, NAdam, NllLoss, NonFinite,
    NonFiniteGrads, Norm, Normalize, OneCycleLr, OneHot, Optimizer, OptimizerSet, OptimizerState,
    ParamStore, PlateauConfig, PolynomialLr, Progress, RAdam, RandomErasing, RandomRotation,
    RandomTranslate, ReduceLrOnPlateau, Reduction, RmsProp, RowSparse, Rprop, Rule, RunningMean,
    Schedule, Sequential, SequentialLr, Sgd, ShardTail, Signal, SparseAdam, StateDict, Stateful,
    StepLr, Stop, StopRules, Subset, SummaryWriter, SwaLr, Tensor, TensorDataset, TrainState,
    UpdatePath, Var, Verbosity, WeightDecay, D,
};

#[test]
fn every_prelude_name_resolves_beside_candle() {
    // The check is the `use` above; this names one of each kind so the test does something.
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _layer = Linear::new(2, 1, &store).unwrap();
    let _opt = Optimizer::new(Adam::new(1e-3), &store).unwrap();
    assert_eq!(store.names(), ["weight", "bias"]);
}

/// One `Result` for user code: `?` on taper-tensor, taper-nn, taper-optim, taper-data and
/// taper-train calls in one function returning `taper::Result` (before, `?` on a taper-nn
/// call in a function returning `taper::tensor::Result` failed with E0277).
#[test]
fn one_result_type_takes_every_crates_errors() {
    fn script() -> taper::prelude::Result<f64> {
        use taper::prelude::*;
        let store = ParamStore::new(&Device::Cpu, DType::F32); // taper-tensor
        let model = Linear::new(3, 1, &store)?; // taper-nn
        let mut opt = Optimizer::new(Sgd::new(0.1), &store)?; // taper-optim
        let x = Tensor::ones((4, 3), DType::F32, &Device::Cpu)?; // candle
        let loader = DataLoader::new(
            TensorDataset::new(x.clone(), x.clone())?,
            Batching::FullBatch,
        )?; // taper-data
        let mut fit = Fit::new(&model, &store, &mut opt, |o: &Tensor, _y: &Tensor| {
            o.sqr()?.mean_all()
        })
        .verbosity(Verbosity::Silent);
        let history = fit.run(&loader)?; // taper-train
        store.var("nope")?; // an error from taper-tensor, as taper::Error
        Ok(history.get("loss")[0])
    }
    let e = script().unwrap_err();
    assert!(matches!(e, taper::Error::Tensor(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("no parameter or buffer named `nope`"),
        "{e}"
    );
}

/// The ReLU trap: candle's `Tensor::relu` has gradient 1 at x = 0, PyTorch's has 0. The
/// prelude's `relu` (what custom layers should call) has PyTorch's.
#[test]
fn the_preludes_relu_has_pytorchs_gradient_at_zero() {
    use taper::prelude::*;
    let x = Var::new(&[-1.0f32, 0.0, 2.0], &Device::Cpu).unwrap();
    let grad = |y: Tensor| {
        let g = y.sum_all().unwrap().backward().unwrap();
        g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(grad(relu(x.as_tensor()).unwrap()), [0.0, 0.0, 1.0]);
    assert_eq!(
        grad(x.as_tensor().relu().unwrap()),
        [0.0, 1.0, 1.0],
        "candle's, for contrast"
    );
}
