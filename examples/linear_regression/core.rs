//! The linear-regression comparison, shared with the end-to-end tests.

use std::time::Instant;

use taper::data::{linear_regression, Batching, DataLoader, TensorDataset};
use taper::nn::{mse_loss, Linear, Reduction};
use taper::optim::*;
use taper::prelude::*;

/// Settings of the comparison.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data points.
    pub points: usize,
    /// Iterations (optimizer steps) per method.
    pub iterations: usize,
    /// Learning rate of the plain descents.
    pub lr: f64,
    /// MSE counted as "reached".
    pub threshold: f64,
    /// Data seed.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            points: 100,
            iterations: 1000,
            lr: 0.01,
            threshold: 0.02,
            seed: 42,
        }
    }
}

/// One method's outcome.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was run.
    pub method: String,
    /// Learned weight (true 2).
    pub weight: f64,
    /// Learned bias (true 1).
    pub bias: f64,
    /// MSE over all the data after the last iteration.
    pub final_mse: f64,
    /// First iteration after which the full-data MSE was at or below the threshold.
    pub iterations_to_threshold: Option<usize>,
    /// Wall time.
    pub millis: f64,
}

/// How the learning rate changes.
enum Rate {
    Fixed,
    Schedule(Box<dyn Schedule>),
    Plateau(ReduceLrOnPlateau),
    GradNorm(GradNormRatio),
}

fn fit<R: Rule>(
    cfg: &Config,
    data: &TensorDataset,
    method: &str,
    rule: R,
    batching: Batching,
    mut rate: Rate,
) -> anyhow::Result<Row> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Linear::new(1, 1, &store)?;
    // The documents start from w = b = 0 (PyTorch: `nn.init.zeros_`).
    for (_, var) in store.trainable() {
        var.set(&var.zeros_like()?)?;
    }
    let mut opt = Optimizer::new(rule, &store)?;
    let mut sched = match &mut rate {
        Rate::Schedule(s) => Some(LrScheduler::new(
            std::mem::replace(s, Box::new(ConstantLr::new().factor(1.0).total_iters(0))),
            &mut opt,
        )?),
        _ => None,
    };
    let loader = DataLoader::new(data.clone(), batching)?
        .shuffle(true)
        .seed(cfg.seed);
    let full_mse = || -> anyhow::Result<f64> {
        Ok(mse_loss(
            &model.forward(data.inputs())?,
            data.targets(),
            Reduction::Mean,
        )?
        .to_scalar::<f32>()? as f64)
    };
    let start = Instant::now();
    let (mut it, mut epoch, mut reached) = (0, 0u64, None);
    'outer: loop {
        for batch in loader.epoch(epoch) {
            let b = batch?;
            let loss = mse_loss(&model.forward(&b.inputs)?, &b.targets, Reduction::Mean)?;
            let grads = Gradients::compute(&loss, &store)?;
            if let Rate::GradNorm(g) = &mut rate {
                g.step(&grads, &mut opt)?;
            }
            opt.step(&grads)?;
            if let Some(s) = sched.as_mut() {
                s.step(&mut opt)?;
            }
            it += 1;
            let mse = full_mse()?;
            if let Rate::Plateau(p) = &mut rate {
                p.step(mse, &mut opt)?;
            }
            if reached.is_none() && mse <= cfg.threshold {
                reached = Some(it);
            }
            if it == cfg.iterations {
                break 'outer;
            }
        }
        epoch += 1;
    }
    let millis = start.elapsed().as_secs_f64() * 1e3;
    Ok(Row {
        method: method.to_string(),
        weight: store.var("weight")?.flatten_all()?.to_vec1::<f32>()?[0] as f64,
        bias: store.var("bias")?.to_vec1::<f32>()?[0] as f64,
        final_mse: full_mse()?,
        iterations_to_threshold: reached,
        millis,
    })
}

/// Runs every method of the comparison.
pub fn run(cfg: &Config) -> anyhow::Result<Vec<Row>> {
    let data = linear_regression(cfg.points, cfg.seed)?;
    let lr = cfg.lr;
    let full = Batching::FullBatch;
    let sched = |s: Box<dyn Schedule>| Rate::Schedule(s);
    let plateau = PlateauConfig {
        factor: 0.5,
        patience: 20,
        ..Default::default()
    };
    // One fit per row: the label, the rule, the batching and the learning-rate rule.
    macro_rules! row {
        ($label:expr, $rule:expr, $batching:expr, $rate:expr $(,)?) => {
            fit(cfg, &data, $label, $rule, $batching, $rate)?
        };
    }
    Ok(vec![
        row!("batch GD", Sgd::new(lr), full, Rate::Fixed),
        row!(
            "stochastic GD (1 sample/step)",
            Sgd::new(lr),
            Batching::Stochastic,
            Rate::Fixed,
        ),
        row!(
            "mini-batch GD (16/step)",
            Sgd::new(lr),
            Batching::MiniBatch(16),
            Rate::Fixed,
        ),
        row!("batch GD, lr 0.1", Sgd::new(0.1), full, Rate::Fixed),
        row!(
            "momentum (EMA, β 0.9), lr 0.1",
            Sgd::new(0.1).momentum(Momentum::Ema { beta: 0.9 }),
            full,
            Rate::Fixed,
        ),
        row!(
            "AdaGrad (ε in √), lr 0.5",
            Adagrad::documents(0.5, 1e-8),
            full,
            Rate::Fixed,
        ),
        row!(
            "RMSProp (ε in √), lr 0.01",
            RmsProp::documents(0.01, 0.9, 1e-8),
            full,
            Rate::Fixed,
        ),
        row!("Adam m̂/(√v̂+ε), lr 0.05", Adam::new(0.05), full, Rate::Fixed),
        row!(
            "Adam m̂/√(v̂+ε), lr 0.05",
            Adam::new(0.05).eps_placement(EpsPlacement::InsideRoot),
            full,
            Rate::Fixed,
        ),
        row!(
            "GD, inverse-time α/(1+βt), α 0.2",
            Sgd::new(0.2),
            full,
            sched(Box::new(InverseTime::new(0.01))),
        ),
        row!(
            "GD, inverse-sqrt α/√(1+βt), α 0.2",
            Sgd::new(0.2),
            full,
            sched(Box::new(InverseSqrt::new(0.01))),
        ),
        row!(
            "GD, loss-driven (plateau), α 0.2",
            Sgd::new(0.2),
            full,
            Rate::Plateau(ReduceLrOnPlateau::new(plateau)?),
        ),
        row!(
            "GD, gradient-norm ratio, η 0.2",
            Sgd::new(0.2),
            full,
            Rate::GradNorm(GradNormRatio::new(0.2, 1e-8)?),
        ),
    ])
}
