//! The training run every equivalence test repeats: an MNIST MLP on the built-in digits,
//! trained for a number of steps by data-parallel ranks or by one process.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::ModuleT;
use taper_data::transforms::Normalize;
use taper_data::{mnist, Batching, DataLoader, ShardTail, TensorDataset};
use taper_dist::{Communicator, DistributedDataParallel, ZeroOptimizer};
use taper_nn::{cross_entropy, Activation, Flatten, Linear, Sequential};
use taper_optim::{Adam, Optimizer, OptimizerState, Rule, Sgd};
use taper_tensor::{manual_seed, DType, Device, ParamStore, Tensor};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The algorithms the equivalence tests cover.
pub const ALGOS: [&str; 2] = ["sgd", "adam"];

/// Flatten → 784×32 → ReLU → 32×`hidden_out`.
pub fn model(store: &ParamStore, hidden: usize) -> Res<Sequential> {
    Ok(Sequential::new(store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, hidden, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(hidden, 10, s))?)
}

/// The training digits, shuffled with seed 5, normalized, rank `rank`'s shard of `world`.
pub fn loader(rank: usize, world: usize, batch: usize) -> Res<DataLoader<TensorDataset>> {
    let data = mnist::builtin()?;
    Ok(DataLoader::new(data.train, Batching::MiniBatch(batch))?
        .shuffle(true)
        .seed(5)
        .transform(Normalize::new(0.1307, 0.3081)?)
        .shard(rank, world, ShardTail::Pad)?)
}

/// One optimizer, sharded or not.
pub enum Opt<'c, R: Rule, C: Communicator> {
    Plain(Optimizer<R>),
    Zero(ZeroOptimizer<'c, R, C>),
}

impl<R: Rule, C: Communicator> Opt<'_, R, C> {
    pub fn step(&mut self, grads: &taper_tensor::Gradients) -> Res<()> {
        match self {
            Opt::Plain(o) => {
                o.step(grads)?;
            }
            Opt::Zero(o) => {
                o.step(grads)?;
            }
        }
        Ok(())
    }
    /// The whole optimizer state (rank 0's, for a sharded one).
    pub fn state(&self) -> Res<Option<OptimizerState>> {
        Ok(match self {
            Opt::Plain(o) => Some(o.state_dict()?),
            Opt::Zero(o) => o.consolidated_state()?,
        })
    }
}

/// The rule of `algo`.
pub fn with_rule<T>(algo: &str, f: impl FnOnce(RuleChoice) -> T) -> T {
    match algo {
        "sgd" => f(RuleChoice::Sgd(Sgd::new(0.05).momentum(0.9))),
        _ => f(RuleChoice::Adam(Adam::new(1e-3))),
    }
}

/// SGD with momentum 0.9 at 0.05, or Adam at 1e-3.
pub enum RuleChoice {
    Sgd(Sgd),
    Adam(Adam),
}

/// What a run yields: the model and, on rank 0, copies of the weights and the optimizer
/// state at `save_at`.
pub struct Run {
    pub store: ParamStore,
    pub saved: Option<(HashMap<String, Tensor>, OptimizerState)>,
    pub zero_memory: Option<(usize, usize)>,
}

/// Trains `steps` steps at per-rank batch `batch` from batch `start` of epoch 0, starting
/// from `init` (else from seed `seed`: ranks may differ, DDP broadcasts rank 0's), checking
/// after every step that the ranks hold bit-identical weights. At step `save_at` it keeps
/// a copy of the model and the (consolidated) optimizer state.
#[allow(clippy::too_many_arguments)]
pub fn train<C: Communicator, R: Rule>(
    comm: &C,
    rule: R,
    zero: bool,
    steps: usize,
    batch: usize,
    seed: u64,
    init: Option<(&Path, &OptimizerState)>,
    start: usize,
    save_at: Option<usize>,
) -> Res<Run> {
    manual_seed(seed);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = model(&store, 32)?;
    if let Some((weights, _)) = init {
        store.load(weights, taper_tensor::LoadMode::Strict)?;
    }
    let mut ddp = DistributedDataParallel::new(comm, &store)?;
    let mut opt = if zero {
        Opt::Zero(ZeroOptimizer::new(rule, &store, comm)?)
    } else {
        Opt::Plain(Optimizer::new(rule, &store)?)
    };
    if let Some((_, state)) = init {
        match &mut opt {
            Opt::Plain(o) => o.load_state_dict(state)?,
            Opt::Zero(o) => o.load_state_dict(state)?,
        }
    }
    let loader = loader(comm.rank(), comm.world_size(), batch)?;
    let mut saved = None;
    for (k, b) in loader.epoch_from(0, start).take(steps).enumerate() {
        let b = b?;
        let loss = cross_entropy(&model.forward_t(&b.inputs, true)?, &b.targets)?;
        let grads = ddp.backward(&loss)?;
        opt.step(&grads)?;
        ddp.check_in_sync()?;
        if save_at == Some(k + 1) {
            if let Some(mut state) = opt.state()? {
                // state_dict shares its tensors with the optimizer: copy them.
                for t in state.tensors.values_mut() {
                    *t = t.copy()?;
                }
                let weights = store
                    .state_dict()
                    .into_iter()
                    .map(|(n, t)| Ok((n, t.copy()?)))
                    .collect::<Res<_>>()?;
                saved = Some((weights, state));
            }
        }
    }
    // Optimizer state exists once every parameter has taken a step.
    let zero_memory = match &opt {
        Opt::Zero(o) => {
            let m = o.memory()?;
            Some((m.local_bytes, m.unsharded_bytes))
        }
        Opt::Plain(_) => None,
    };
    Ok(Run {
        store,
        saved,
        zero_memory,
    })
}

/// Runs `train` with the rule of `algo`.
#[allow(clippy::too_many_arguments)]
pub fn train_algo<C: Communicator>(
    comm: &C,
    algo: &str,
    zero: bool,
    steps: usize,
    batch: usize,
    seed: u64,
    init: Option<(&Path, &OptimizerState)>,
    start: usize,
    save_at: Option<usize>,
) -> Res<Run> {
    with_rule(algo, |r| match r {
        RuleChoice::Sgd(r) => train(comm, r, zero, steps, batch, seed, init, start, save_at),
        RuleChoice::Adam(r) => train(comm, r, zero, steps, batch, seed, init, start, save_at),
    })
}

/// The largest |a − b| over every entry of two stores.
pub fn max_diff(a: &ParamStore, b: &ParamStore) -> Res<f32> {
    let mut worst = 0f32;
    for (n, t) in a.state_dict() {
        let u = b.var(&n)?;
        let d = (t - u.as_tensor())?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        worst = worst.max(d);
    }
    Ok(worst)
}
