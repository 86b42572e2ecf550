//! The MNIST example's training routine, shared with the end-to-end tests.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use taper::data::mnist::{self, MnistKind};
use taper::data::transforms::RandomTranslate;
use taper::data::{Batch, Batching, DataLoader, Dataset, Prefetcher, TensorDataset};
use taper::nn::{
    cross_entropy, Activation, Conv2dConfig, Dropout, Flatten, Linear, MaxPool2d, Sequential,
};
use taper::optim::*;
use taper::prelude::*;
use taper::train::plot::{confusion_heatmap, plot_panels, Panel, Series};
use taper::train::{
    accuracy, Checkpoint, CheckpointManager, ConfusionMatrix, CsvLog, Direction, Progress,
    RunningMean, SummaryWriter, TrainState,
};

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(about = "Train an MLP or CNN on MNIST-format data with Taper")]
pub struct Args {
    /// Directory holding the four IDX files (else TAPER_DATA, installed copies, built-in).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Which dataset to look for.
    #[arg(long, value_enum, default_value_t = DatasetArg::Mnist)]
    pub dataset: DatasetArg,
    /// Use only the first N training examples.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Model architecture.
    #[arg(long, value_enum, default_value_t = ModelArg::Mlp)]
    pub model: ModelArg,
    /// Hidden layer sizes of the MLP, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512,256")]
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer.
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    /// Optimizer: a configuration from taper-optim's registry (`visit_optimizers`).
    #[arg(long, default_value = "adam", value_parser = optimizer_names())]
    pub optimizer: String,
    /// Learning rate (when omitted: the registry's rate for the configuration, which
    /// trains this model).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum (SGD's momentum variants, centered RMSprop) or β₁ (Adam family, Lion).
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay λ (coupled L2, or decoupled with `--decoupled` and for AdamW).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Decoupled (AdamW-style) instead of L2 weight decay.
    #[arg(long)]
    pub decoupled: bool,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// Clip the gradients' global L2 norm to this.
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Clip every gradient element to ±this.
    #[arg(long)]
    pub clip_value: Option<f64>,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Examples per step (mini-batch strategy).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// The documents' batching strategies.
    #[arg(long, value_enum, default_value_t = BatchingArg::Mini)]
    pub batching: BatchingArg,
    /// Random translation (pixels) as augmentation; 0 disables.
    #[arg(long, default_value_t = 1)]
    pub augment_shift: usize,
    /// Seed of initialization, dropout, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory: checkpoints, metrics.csv, curves.png.
    #[arg(long, default_value = "runs/mnist")]
    pub out: PathBuf,
    /// Continue from the newest checkpoint in the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Build training batches this many ahead on a background thread (0: in the
    /// training thread). The batches are the same either way.
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
    /// Also write TensorBoard event files to this directory (view them with
    /// `tensorboard --logdir DIR`): losses, accuracies, each group's learning rate, the
    /// gradient norm, step time, weight and gradient histograms, and the hyperparameters.
    #[arg(long)]
    pub tensorboard: Option<PathBuf>,
    /// With `--tensorboard`: weight and gradient histograms every this many steps.
    #[arg(long, default_value_t = 100)]
    pub histogram_every: u64,
    /// Also write the trained model as ONNX (opset 17, dynamic batch) to this path, for ONNX
    /// Runtime, TensorRT or OpenVINO.
    #[arg(long)]
    pub export_onnx: Option<PathBuf>,
}

/// Datasets.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetArg {
    /// Handwritten digits.
    Mnist,
    /// Fashion-MNIST.
    Fashion,
}

/// Architectures.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelArg {
    /// Fully connected layers with ReLU.
    Mlp,
    /// Two convolutions and two linear layers.
    Cnn,
}

/// Schedules.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleArg {
    /// Constant rate.
    None,
    /// Cosine annealing over the whole run.
    Cosine,
    /// ×0.5 every 2 epochs.
    Step,
    /// One cycle over the whole run.
    Onecycle,
    /// Triangular cycles between lr/10 and lr, one epoch up and one down (momentum cycled
    /// inversely where the optimizer has it).
    Cyclic,
    /// The documents' α/(1 + βt), β = 1e-3 per step.
    InverseTime,
    /// The documents' α/√(1 + βt), β = 1e-3 per step.
    InverseSqrt,
    /// Loss-driven: ×0.5 after 1 epoch without test-loss improvement.
    Plateau,
}

/// Batching strategies.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchingArg {
    /// Mini-batches of --batch-size.
    Mini,
    /// The whole training set per step.
    Full,
    /// One example per step.
    Stochastic,
}

/// What a run achieved.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Test accuracy after the last epoch.
    pub final_test_accuracy: f64,
    /// Best test accuracy over epochs.
    pub best_test_accuracy: f64,
    /// Epoch of the best accuracy (1-based).
    pub best_epoch: u64,
    /// Wall time of training and evaluation.
    pub seconds: f64,
    /// Fraction of training-step time spent producing batches.
    pub data_fraction: f64,
    /// Where outputs went.
    pub out_dir: PathBuf,
}

fn build_model(args: &Args, store: &ParamStore) -> anyhow::Result<Sequential> {
    let mut m = Sequential::new(store);
    match args.model {
        ModelArg::Mlp => {
            m = m.append(Flatten::default());
            let mut width = 784;
            for &h in &args.hidden {
                m = m
                    .append_with(|s| Linear::new(width, h, s))?
                    .append(Activation::Relu)
                    .append(Dropout::new(args.dropout)?);
                width = h;
            }
            m = m.append_with(|s| Linear::new(width, 10, s))?;
        }
        ModelArg::Cnn => {
            m = m
                .append_with(|s| Conv2dConfig::new(1, 16, (5, 5)).padding(2).build(s))?
                .append(Activation::Relu)
                .append(MaxPool2d::new(2))
                .append_with(|s| Conv2dConfig::new(16, 32, (5, 5)).padding(2).build(s))?
                .append(Activation::Relu)
                .append(MaxPool2d::new(2))
                .append(Flatten::default())
                .append_with(|s| Linear::new(32 * 7 * 7, 128, s))?
                .append(Activation::Relu)
                .append(Dropout::new(args.dropout)?)
                .append_with(|s| Linear::new(128, 10, s))?;
        }
    }
    Ok(m)
}

/// Loads the data, builds the model, and trains with the chosen optimizer.
pub fn run(args: &Args) -> anyhow::Result<Summary> {
    let dev = device(&args.device)?;
    let kind = match args.dataset {
        DatasetArg::Mnist => MnistKind::Mnist,
        DatasetArg::Fashion => MnistKind::Fashion,
    };
    let data = mnist::load(kind, args.data_dir.as_deref())?;
    println!(
        "data: {} ({} train, {} test)",
        data.source,
        data.train.len(),
        data.test.len()
    );
    let train = match args.limit_train {
        Some(n) => data.train.take(n)?,
        None => data.train,
    };
    let mut pick = Pick {
        args,
        dev: &dev,
        data: Some((train, data.test)),
        out: None,
    };
    visit_optimizers(&mut pick);
    pick.out
        .unwrap_or_else(|| bail!("unknown optimizer `{}`", args.optimizer))
}

/// The `--optimizer` values: the registry's keys, with their help lines.
fn optimizer_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        optimizer_entries()
            .into_iter()
            .map(|e| clap::builder::PossibleValue::new(e.key).help(e.help)),
    )
}

/// Trains with the registry entry named by `--optimizer`, adjusted by the flags.
struct Pick<'a> {
    args: &'a Args,
    dev: &'a Device,
    data: Option<(TensorDataset, TensorDataset)>,
    out: Option<anyhow::Result<Summary>>,
}

impl Visitor for Pick<'_> {
    fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
        if entry.key != self.args.optimizer {
            return;
        }
        let Some((train, test)) = self.data.take() else {
            return;
        };
        self.out = Some(
            configure(self.args, entry, rule)
                .and_then(|rule| train_with(self.args, rule, self.dev, train, test)),
        );
    }
}

/// The registered `rule` with `--lr`, `--momentum` and `--weight-decay` applied.
fn configure<R: Rule>(args: &Args, entry: &Entry, mut rule: R) -> anyhow::Result<R> {
    // Generic over the algorithm, so the shared options go through `common_mut`.
    if let Some(lr) = args.lr {
        rule.common_mut().lr = lr;
    }
    if let Some(m) = args.momentum {
        if !rule.set_momentum_coefficient(m) {
            bail!(
                "--momentum: `{}` has no momentum coefficient; choose momentum, nesterov, \
                 ema-momentum, rmsprop-centered, the Adam family (β₁) or lion",
                entry.key
            );
        }
    }
    if args.weight_decay != 0.0 {
        let decoupled =
            args.decoupled || matches!(rule.common().weight_decay, WeightDecay::Decoupled(_));
        rule.common_mut().weight_decay = if decoupled {
            WeightDecay::Decoupled(args.weight_decay)
        } else {
            WeightDecay::L2(args.weight_decay)
        };
    }
    Ok(rule)
}

fn evaluate(model: &Sequential, data: &TensorDataset, dev: &Device) -> anyhow::Result<(f64, f64)> {
    let loader = DataLoader::new(data.clone(), Batching::MiniBatch(1000))?.device(dev);
    let (mut loss, mut acc) = (RunningMean::default(), RunningMean::default());
    for b in loader.epoch(0) {
        let b = b?;
        let logits = no_grad(|| model.forward_t(&b.inputs, false))?;
        let n = b.indices.len();
        loss.add(
            cross_entropy(&logits, &b.targets)?.to_scalar::<f32>()? as f64,
            n,
        );
        acc.add(accuracy(&logits, &b.targets)?, n);
    }
    Ok((loss.mean(), acc.mean()))
}

fn train_with<R: Rule>(
    args: &Args,
    rule: R,
    dev: &Device,
    train: TensorDataset,
    test: TensorDataset,
) -> anyhow::Result<Summary> {
    manual_seed(args.seed);
    let store = ParamStore::new(dev, DType::F32);
    let model = build_model(args, &store)?;
    println!(
        "model: {:?}, {} parameters; optimizer: {} (lr {})",
        args.model,
        store.num_parameters(),
        R::NAME,
        rule.common().lr
    );
    let mut opt = Optimizer::new(rule, &store)?;
    if let Some(c) = args.clip_norm {
        opt = opt.clip(Clip::Norm {
            max_norm: c,
            norm: Norm::L2,
        })?;
    } else if let Some(c) = args.clip_value {
        opt = opt.clip(Clip::Value(c))?;
    }
    let batching = match args.batching {
        BatchingArg::Mini => Batching::MiniBatch(args.batch_size),
        BatchingArg::Full => Batching::FullBatch,
        BatchingArg::Stochastic => Batching::Stochastic,
    };
    let mut loader = DataLoader::new(train, batching)?
        .shuffle(true)
        .seed(args.seed)
        .device(dev);
    if args.augment_shift > 0 {
        loader = loader.transform(RandomTranslate {
            max_shift: args.augment_shift,
        });
    }
    let steps_per_epoch = loader.batches_per_epoch() as u64;
    let (ahead, direct) = if args.prefetch > 0 {
        (Some(Prefetcher::new(loader, args.prefetch)?), None)
    } else {
        (None, Some(loader))
    };
    let loader = match (&ahead, &direct) {
        (Some(p), _) => p.loader(),
        (None, Some(l)) => l,
        (None, None) => unreachable!("one of the two is set just above"),
    };
    let total = steps_per_epoch * args.epochs;
    let mut tb = args
        .tensorboard
        .as_ref()
        .map(SummaryWriter::new)
        .transpose()?;
    if let Some(tb) = tb.as_mut() {
        tb.add_hparams(
            &[
                ("optimizer", args.optimizer.as_str().into()),
                ("lr", opt.lr().into()),
                ("batch_size", (args.batch_size as f64).into()),
                ("epochs", (args.epochs as f64).into()),
                ("model", format!("{:?}", args.model).as_str().into()),
                ("schedule", format!("{:?}", args.schedule).as_str().into()),
                ("weight_decay", args.weight_decay.into()),
                ("seed", (args.seed as f64).into()),
            ],
            &["accuracy/test", "loss/test"],
        )?;
    }
    // Every way of setting the rate is one `LrControl`: schedules step after each batch,
    // the plateau after each evaluation.
    let mut lr_control: Option<Box<dyn LrControl>> = match args.schedule {
        ScheduleArg::None => None,
        ScheduleArg::Plateau => Some(Box::new(ReduceLrOnPlateau::new(PlateauConfig {
            factor: 0.5,
            patience: 0,
            ..Default::default()
        })?)),
        ScheduleArg::Cosine => Some(scheduler(CosineAnnealingLr::new(total.max(1)), &mut opt)?),
        ScheduleArg::Step => Some(scheduler(
            StepLr::new(2 * steps_per_epoch.max(1)).gamma(0.5),
            &mut opt,
        )?),
        ScheduleArg::Onecycle => {
            let max_lr = opt.lr() * 10.0;
            Some(scheduler(OneCycleLr::new(max_lr, total.max(2)), &mut opt)?)
        }
        ScheduleArg::Cyclic => {
            let lr = opt.lr();
            let cyclic = CyclicLr::new(lr / 10.0, lr).step_size_up(steps_per_epoch.max(1));
            Some(scheduler(cyclic, &mut opt)?)
        }
        ScheduleArg::InverseTime => Some(scheduler(InverseTime::new(1e-3), &mut opt)?),
        ScheduleArg::InverseSqrt => Some(scheduler(InverseSqrt::new(1e-3), &mut opt)?),
    };

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut manager =
        CheckpointManager::new(args.out.join("checkpoints"), 1)?.track_best(Direction::Maximize)?;
    let mut state = TrainState::for_loader(loader);
    let mut history: Vec<[f64; 5]> = Vec::new();
    // (step, learning rate, momentum or NaN) after each step, for the curves' rate panel.
    let mut lr_trace: Vec<[f64; 3]> = Vec::new();
    if args.resume {
        let Some(latest) = manager.latest()? else {
            bail!(
                "--resume: no checkpoint in {}",
                args.out.join("checkpoints").display()
            )
        };
        let ckpt = Checkpoint::load(&latest)?;
        match lr_control.as_mut() {
            Some(c) => {
                let name = c.state_name();
                ckpt.restore(&store, &mut opt, &mut [(name.as_str(), &mut **c)])?
            }
            None => ckpt.restore(&store, &mut opt, &mut [])?,
        }
        state = ckpt.train.clone();
        if let Some(h) = state
            .metadata
            .get("history")
            .and_then(|h| serde_json::from_value(h.clone()).ok())
        {
            history = h;
        }
        if let Some(t) = state
            .metadata
            .get("lr_trace")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
        {
            lr_trace = t;
        }
        println!("resumed from {} at epoch {}", latest.display(), state.epoch);
    }
    let mut csv = CsvLog::create(
        args.out.join("metrics.csv"),
        &[
            "epoch",
            "train_loss",
            "train_accuracy",
            "test_loss",
            "test_accuracy",
        ],
    )?;
    for row in &history {
        csv.row(row)?;
    }
    let start = Instant::now();
    let (mut data_time, mut step_time) = (0.0f64, 0.0f64);
    while state.epoch < args.epochs {
        let mut bar = Progress::new(steps_per_epoch, &format!("epoch {}", state.epoch + 1));
        let (mut loss_m, mut acc_m) = (RunningMean::default(), RunningMean::default());
        let mut batches: Box<dyn Iterator<Item = taper::data::Result<Batch>>> = match &ahead {
            Some(p) => {
                state.check_loader(loader)?;
                Box::new(p.epoch_from(state.epoch, state.batch_in_epoch as usize))
            }
            None => Box::new(state.batches(loader)?),
        };
        loop {
            let t0 = Instant::now();
            let Some(b) = batches.next() else { break };
            let b = b?;
            let t1 = Instant::now();
            let logits = model.forward_t(&b.inputs, true)?;
            let loss = cross_entropy(&logits, &b.targets)?;
            let grads = Gradients::compute(&loss, &store)?;
            let grad_norm = tb.is_some().then(|| grads.norm(Norm::L2)).transpose()?;
            opt.step(&grads)?;
            state.finish_batch();
            if let Some(c) = lr_control.as_mut().filter(|c| c.drive() == LrDrive::Time) {
                c.step_with(Signal::at(state.step), &mut opt)?;
            }
            let n = b.indices.len();
            let (l, a) = (
                loss.to_scalar::<f32>()? as f64,
                accuracy(&logits, &b.targets)?,
            );
            loss_m.add(l, n);
            acc_m.add(a, n);
            bar.update(n as u64, loss_m.mean(), acc_m.mean());
            data_time += (t1 - t0).as_secs_f64();
            step_time += t1.elapsed().as_secs_f64();
            lr_trace.push([
                state.step as f64,
                opt.lr(),
                opt.group_momentum(0).unwrap_or(f64::NAN),
            ]);
            if let Some(tb) = tb.as_mut() {
                let step = state.step;
                let step_ms = 1e3 * t1.elapsed().as_secs_f64();
                tb.add_step_scalars(&opt, l, step_ms, grad_norm, step)?;
                if args.histogram_every > 0 && step % args.histogram_every == 0 {
                    for (name, var) in store.trainable() {
                        let w: Vec<f64> = var.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
                        tb.add_histogram(&format!("weights/{name}"), &w, step)?;
                        if let Some(g) = grads.get(&name) {
                            let g: Vec<f64> = g.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
                            tb.add_histogram(&format!("grads/{name}"), &g, step)?;
                        }
                    }
                }
            }
        }
        bar.finish();
        state.finish_epoch();
        let (test_loss, test_acc) = evaluate(&model, &test, dev)?;
        if let Some(c) = lr_control.as_mut().filter(|c| c.drive() == LrDrive::Metric) {
            c.step_with(Signal::at(state.epoch).metric(test_loss), &mut opt)?;
        }
        println!(
            "epoch {:>3}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | lr {:.2e} | {:.0} samples/s",
            state.epoch,
            loss_m.mean(),
            100.0 * acc_m.mean(),
            test_loss,
            100.0 * test_acc,
            opt.lr(),
            bar.samples_per_sec()
        );
        let row = [
            state.epoch as f64,
            loss_m.mean(),
            acc_m.mean(),
            test_loss,
            test_acc,
        ];
        csv.row(&row)?;
        if let Some(tb) = tb.as_mut() {
            let e = state.epoch;
            tb.add_scalar("loss/train_epoch", loss_m.mean(), e)?;
            tb.add_scalar("accuracy/train", acc_m.mean(), e)?;
            tb.add_scalar("loss/test", test_loss, e)?;
            tb.add_scalar("accuracy/test", test_acc, e)?;
            tb.flush()?;
        }
        history.push(row);
        state.metadata = serde_json::json!({
            "history": history,
            "lr_trace": lr_trace,
            "args": format!("{args:?}"),
        });
        let mut ckpt = Checkpoint::capture(&store, &opt, state.clone())?;
        if let Some(c) = &lr_control {
            ckpt = ckpt.add_state(&c.state_name(), &**c)?;
        }
        manager.save(&ckpt, Some(test_acc))?;
    }
    // The trained model as a whole-model file: `predict` rebuilds it with no code.
    model.save_model(args.out.join("model.safetensors"))?;
    if let Some(path) = &args.export_onnx {
        model.export_onnx(path, &[1, 28, 28])?;
        println!("ONNX model: {}", path.display());
    }
    let seconds = start.elapsed().as_secs_f64();
    let (best_epoch, best) = history
        .iter()
        .map(|r| (r[0] as u64, r[4]))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let series = |i: usize, name: &str| Series {
        name: name.into(),
        points: history.iter().map(|r| (r[0], r[i])).collect(),
    };
    let best_label = format!("best epoch ({best_epoch})");
    let panel = |title: &str, y: &str, a: Series, b: Series| Panel {
        series: vec![a, b],
        ..Panel::new(title, "epoch", y)
            .integer_x()
            .mark_x(best_epoch as f64, &best_label)
    };
    let mut panels = vec![
        panel(
            "Loss",
            "cross-entropy",
            series(1, "train"),
            series(3, "test"),
        ),
        panel(
            "Accuracy",
            "accuracy",
            series(2, "train"),
            series(4, "test"),
        ),
    ];
    let trace = |i: usize| lr_trace.iter().map(|r| (r[0], r[i])).collect();
    panels.push(
        Panel::new("Learning rate", "step", "learning rate")
            .integer_x()
            .with(Series {
                name: "lr (group 0)".into(),
                points: trace(1),
            }),
    );
    // Momentum gets a panel when a schedule moves it (OneCycle).
    let momenta: Vec<f64> = lr_trace
        .iter()
        .map(|r| r[2])
        .filter(|m| m.is_finite())
        .collect();
    if momenta.windows(2).any(|w| w[0] != w[1]) {
        panels.push(
            Panel::new("Momentum", "step", "momentum / beta1")
                .integer_x()
                .with(Series {
                    name: "momentum (group 0)".into(),
                    points: trace(2),
                }),
        );
    }
    let width = 560 * panels.len() as u32;
    plot_panels(args.out.join("curves.png"), width, 420, &panels)?;
    let mut confusion = ConfusionMatrix::new(10);
    let test_loader = DataLoader::new(test.clone(), Batching::MiniBatch(1000))?.device(dev);
    for b in test_loader.epoch(0) {
        let b = b?;
        let logits = no_grad(|| model.forward_t(&b.inputs, false))?;
        confusion.update(&logits, &b.targets)?;
    }
    confusion_heatmap(
        args.out.join("confusion.png"),
        &format!(
            "Test set confusion matrix (accuracy {:.2}%)",
            100.0 * confusion.accuracy()
        ),
        &confusion,
        10,
    )?;
    let data_fraction = if step_time > 0.0 {
        data_time / (data_time + step_time)
    } else {
        0.0
    };
    println!(
        "data loading took {:.1}% of training time ({:.2} s of {:.2} s)",
        100.0 * data_fraction,
        data_time,
        data_time + step_time
    );
    Ok(Summary {
        final_test_accuracy: history.last().map_or(0.0, |r| r[4]),
        best_test_accuracy: best,
        best_epoch,
        seconds,
        data_fraction,
        out_dir: args.out.clone(),
    })
}

/// A schedule attached to every group of `opt`, as a learning-rate controller.
fn scheduler<S: Schedule + 'static, R: Rule>(
    schedule: S,
    opt: &mut Optimizer<R>,
) -> taper::Result<Box<dyn LrControl>> {
    Ok(Box::new(LrScheduler::new(schedule, opt)?))
}
