//! `fit`: Keras's `model.fit(x, y, epochs=…, validation_data=…)` and `model.evaluate`,
//! built only from Taper's public pieces: `DataLoader` batches, `Gradients::compute`, any
//! optimizer ([`AnyOptimizer`]), an [`LrControl`], [`EarlyStopping`], [`StopRules`],
//! [`AveragedModel`], [`CsvLog`], [`JsonlLog`], [`SummaryWriter`], [`Progress`] and
//! [`Checkpoint`]. It is a convenience over the loop those pieces make, not a second engine:
//! the loop written by hand (README, `mnist` example) does the same steps, and stays the way
//! to do anything `fit` does not. [`Fit`] shows an example and what each epoch does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, ModuleT, Tensor};
use serde_json::{json, Value};
use taper_data::{Batch, Batching, DataLoader, Dataset, TensorDataset};
use taper_optim::{AnyOptimizer, AveragedModel, LrControl, LrDrive, Signal, StepReport};
use taper_tensor::{no_grad, Gradients, LoadMode, ParamStore, Stateful};

use crate::checkpoint::Checkpoint;
use crate::csv_log::CsvLog;
use crate::error::{Error, Result};
use crate::history::{EpochLog, History};
use crate::jsonl_log::JsonlLog;
use crate::metrics::Metric;
use crate::progress::Progress;
use crate::stopping::{EarlyStopping, Stop, StopRules};
use crate::tensorboard::SummaryWriter;
use crate::train_state::TrainState;

/// What `fit` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Nothing.
    Silent,
    /// A progress bar during each epoch (on a terminal), then the epoch's line.
    ProgressBar,
    /// Each epoch as Keras prints it (default):
    /// `Epoch 3/10` then `4/4 - 0.02s - loss: 0.0842 - val_loss: 0.0913` (steps taken of
    /// the epoch's steps, time, then the record).
    #[default]
    EpochLines,
}

/// When a time-driven rate controller (a schedule) steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LrEvery {
    /// After each epoch (PyTorch's and Keras's usual place; default).
    #[default]
    Epoch,
    /// After each optimizer step (OneCycleLR, CyclicLR).
    Step,
}

/// When [`Fit::weight_averaging`] averages the weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AverageEvery {
    /// After every optimizer step (an EMA of the weights).
    Step,
    /// After every epoch (PyTorch's SWA recipe: `swa_model.update_parameters(model)` once
    /// per epoch).
    Epoch,
}

/// The validation data: a loader (any dataset), or tensors batched here.
trait EvalBatches {
    fn batches(&self) -> Box<dyn Iterator<Item = taper_data::Result<Batch>> + '_>;
}

impl<D: Dataset> EvalBatches for DataLoader<D> {
    fn batches(&self) -> Box<dyn Iterator<Item = taper_data::Result<Batch>> + '_> {
        Box::new(self.epoch(0))
    }
}

enum Validation<'a> {
    Loader(&'a dyn EvalBatches),
    Tensors(DataLoader<TensorDataset>),
}

impl Validation<'_> {
    fn batches(&self) -> Box<dyn Iterator<Item = taper_data::Result<Batch>> + '_> {
        match self {
            Validation::Loader(l) => l.batches(),
            Validation::Tensors(l) => Box::new(l.epoch(0)),
        }
    }
}

type LossFn<'a> = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + 'a>;

/// Weight averaging inside `fit`: the average, when it averages, and from which epoch.
struct Averaging<'a> {
    model: &'a mut AveragedModel,
    every: AverageEvery,
    start_epoch: u64,
}

/// Where the loop stands when the learning rate may change: the one question
/// [`Fit::control_lr`] answers for every kind of controller.
enum LrMoment<'g> {
    /// Before an optimizer step, with its gradients (gradient-driven controllers).
    BeforeStep(&'g Gradients),
    /// After an optimizer step (schedules stepped per step).
    AfterStep,
    /// After an epoch, with the monitored metric (schedules stepped per epoch,
    /// metric-driven controllers).
    EpochEnd { epoch: u64, metric: f64 },
}

/// Keras-style training of `model` with any optimizer and a loss, configured by builder
/// methods and started with [`Fit::run`] (a loader) or [`Fit::run_tensors`] (in-memory
/// tensors); [`Fit::evaluate`] is Keras's `model.evaluate`.
///
/// What one epoch does: for each training batch, the model's output in training mode, the
/// loss, the gradients (scaled by 1/k and summed over k batches with `accumulate(k)`), a
/// gradient-driven rate controller, the optimizer step (clipping is the optimizer's own
/// option, [`Clip`](taper_optim::Clip); L-BFGS re-evaluates the batch's loss through
/// [`AnyOptimizer::step_closure`]), a per-step schedule and weight average; then the
/// validation pass in evaluation mode without gradients (and of the averaged weights);
/// then the epoch's controller step, logs, early stopping, the stopping rules and the
/// checkpoint.
///
/// ```
/// use taper_nn::{mse_loss, Activation, Linear, Reduction, Sequential};
/// use taper_optim::{Adam, Optimizer};
/// use taper_tensor::{manual_seed, rand_uniform, DType, Device, ParamStore};
/// use taper_train::{Fit, Verbosity};
///
/// manual_seed(0);
/// let dev = Device::Cpu;
/// let store = ParamStore::new(&dev, DType::F32);
/// // Keras: Sequential([Dense(10, activation="relu"), Dense(1)])
/// let model = Sequential::new(&store)
///     .append_with(|s| Linear::new(10, 10, s))?
///     .append(Activation::Relu)
///     .append_with(|s| Linear::new(10, 1, s))?;
/// // Keras: model.compile(optimizer=Adam(0.001), loss="mse")
/// let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
/// let mse = |out: &_, y: &_| mse_loss(out, y, Reduction::Mean);
/// // Keras: model.fit(x_train, y_train, epochs=10)
/// let x = rand_uniform((100, 10), 0.0, 1.0, DType::F32, &dev)?;
/// let y = rand_uniform((100, 1), 0.0, 1.0, DType::F32, &dev)?;
/// let mut fit = Fit::new(&model, &store, &mut opt, mse)
///     .epochs(10)
///     .verbosity(Verbosity::Silent);
/// let history = fit.run_tensors(&x, &y)?;
/// let loss = history.get("loss");
/// assert_eq!(loss.len(), 10);
/// assert!(loss[9] < loss[0]);
/// // Keras: model.evaluate(x, y)
/// let scores = fit.evaluate_tensors(&x, &y)?;
/// assert!(scores["loss"] < loss[0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Fit<'a, M> {
    model: &'a M,
    store: &'a ParamStore,
    opt: &'a mut dyn AnyOptimizer,
    loss: LossFn<'a>,
    epochs: u64,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    metrics: Vec<Metric>,
    verbosity: Verbosity,
    validation: Option<Validation<'a>>,
    csv: Option<PathBuf>,
    jsonl: Option<PathBuf>,
    tensorboard: Option<PathBuf>,
    early: Option<(EarlyStopping, String)>,
    lr: Option<(Box<dyn LrControl + 'a>, LrEvery)>,
    stop: Option<StopRules>,
    accumulate: usize,
    checkpoint: Option<(PathBuf, bool)>,
    averaging: Option<Averaging<'a>>,
}

impl<'a, M: ModuleT> Fit<'a, M> {
    /// Training of `model` (whose parameters are `store`'s) by `opt` (any optimizer: a
    /// rule's `Optimizer`, `Lookahead`, `LbfgsOptimizer`, an `OptimizerSet`, a
    /// `Box<dyn AnyOptimizer>`), minimizing `loss` (output, targets) → scalar. Defaults as
    /// Keras's `fit`: 1 epoch, batches of 32, shuffled (seed 0), one line per epoch.
    pub fn new<F, E>(
        model: &'a M,
        store: &'a ParamStore,
        opt: &'a mut dyn AnyOptimizer,
        loss: F,
    ) -> Self
    where
        F: Fn(&Tensor, &Tensor) -> std::result::Result<Tensor, E> + 'a,
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            model,
            store,
            opt,
            loss: Box::new(move |o, t| loss(o, t).map_err(|e| Error::Loss(Box::new(e)))),
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            seed: 0,
            metrics: Vec::new(),
            verbosity: Verbosity::EpochLines,
            validation: None,
            csv: None,
            jsonl: None,
            tensorboard: None,
            early: None,
            lr: None,
            stop: None,
            accumulate: 1,
            checkpoint: None,
            averaging: None,
        }
    }

    /// Builder: the number of epochs to train for (in all, counting any before a resume).
    pub fn epochs(mut self, n: u64) -> Self {
        self.epochs = n;
        self
    }

    /// Builder, for [`Fit::run_tensors`]: the batch size (default 32), shuffling (default
    /// on) and the shuffling seed (default 0).
    pub fn batching(mut self, batch_size: usize, shuffle: bool, seed: u64) -> Self {
        self.batch_size = batch_size;
        self.shuffle = shuffle;
        self.seed = seed;
        self
    }

    /// Builder: metrics to compute on training and validation batches.
    pub fn metrics(mut self, metrics: impl IntoIterator<Item = Metric>) -> Self {
        self.metrics = metrics.into_iter().collect();
        self
    }

    /// Builder: what to print.
    pub fn verbosity(mut self, v: Verbosity) -> Self {
        self.verbosity = v;
        self
    }

    /// Builder: validation batches from a loader, evaluated after every epoch.
    pub fn validation<D: Dataset>(mut self, loader: &'a DataLoader<D>) -> Self {
        self.validation = Some(Validation::Loader(loader));
        self
    }

    /// Builder: validation data as tensors (Keras's `validation_data=(x, y)`), batched by
    /// the training batch size.
    pub fn validation_tensors(mut self, x: &Tensor, y: &Tensor) -> Result<Self> {
        let ds = TensorDataset::new(x.clone(), y.clone())?;
        let loader = DataLoader::new(ds, Batching::MiniBatch(self.batch_size))?;
        self.validation = Some(Validation::Tensors(loader));
        Ok(self)
    }

    /// Builder: writes one CSV row per epoch to `path` (columns: epoch, then the history's
    /// keys).
    pub fn csv_log(mut self, path: impl AsRef<Path>) -> Self {
        self.csv = Some(path.as_ref().to_path_buf());
        self
    }

    /// Builder: writes one JSON object per epoch per line to `path`
    /// (`{"epoch": 1, "loss": …}`).
    pub fn jsonl_log(mut self, path: impl AsRef<Path>) -> Self {
        self.jsonl = Some(path.as_ref().to_path_buf());
        self
    }

    /// Builder: writes TensorBoard event files under `logdir`, with the tags the `mnist`
    /// example's `--tensorboard` writes: per optimizer step `loss/train`, `time/step_ms`,
    /// `lr/group{g}`, `momentum/group{g}` and, with norm clipping, `grad_norm`; per epoch
    /// `loss/train_epoch`, `{metric}/train`, `loss/test` and `{metric}/test` for the
    /// validation data, and `loss/test_avg` for the averaged weights.
    pub fn tensorboard(mut self, logdir: impl AsRef<Path>) -> Self {
        self.tensorboard = Some(logdir.as_ref().to_path_buf());
        self
    }

    /// Builder: stops when `monitor` (`val_loss`, `loss`, `val_accuracy`, …) stops
    /// improving, as `early` decides (its patience, direction and best-weight restore,
    /// which happens when training ends).
    pub fn early_stopping(mut self, early: EarlyStopping, monitor: &str) -> Self {
        self.early = Some((early, monitor.to_string()));
        self
    }

    /// Builder: a learning-rate controller: a schedule (stepped per epoch or per step), a
    /// metric-driven one (stepped per epoch with `val_loss`, or `loss` without validation),
    /// or a gradient-driven one (stepped before each optimizer step).
    pub fn lr_control(mut self, control: Box<dyn LrControl + 'a>, every: LrEvery) -> Self {
        self.lr = Some((control, every));
        self
    }

    /// Builder: the documents' stopping rules, checked after each epoch with the epoch's
    /// loss and the optimizer steps taken.
    pub fn stop_rules(mut self, rules: StopRules) -> Self {
        self.stop = Some(rules);
        self
    }

    /// Builder: sums the gradients of `k` batches (each scaled by 1/k) before each
    /// optimizer step. Step counts (`TrainState::step`, stopping rules, per-step schedules)
    /// count optimizer steps, one per k batches.
    pub fn accumulate(mut self, k: usize) -> Self {
        self.accumulate = k;
        self
    }

    /// Builder: saves a checkpoint to `dir` after every epoch (weights, optimizer,
    /// controller, early stopping, weight average, counters, data position and the
    /// history). With `resume`, a checkpoint already at `dir` is restored first and
    /// training continues from it, bit for bit.
    pub fn checkpoint(mut self, dir: impl AsRef<Path>, resume: bool) -> Self {
        self.checkpoint = Some((dir.as_ref().to_path_buf(), resume));
        self
    }

    /// Builder: keeps a running average of the weights in `averaged` (an EMA or SWA
    /// [`AveragedModel`] over this model's store), updated after every step or every epoch
    /// once `start_epoch` epochs are done (0: from the start), as PyTorch's `swa_utils`
    /// recipes do. With validation data each epoch also evaluates the averaged weights
    /// (`avg_val_loss`, `avg_val_{metric}`); the average is checkpointed with the run. The
    /// model keeps its own weights: evaluate or save `averaged.store()` after training.
    pub fn weight_averaging(
        mut self,
        averaged: &'a mut AveragedModel,
        every: AverageEvery,
        start_epoch: u64,
    ) -> Self {
        self.averaging = Some(Averaging {
            model: averaged,
            every,
            start_epoch,
        });
        self
    }

    /// Trains on in-memory tensors (Keras's `fit(x, y)`), batched as [`Fit::batching`] says.
    pub fn run_tensors(&mut self, x: &Tensor, y: &Tensor) -> Result<History> {
        let loader = self.tensor_loader(x, y)?;
        self.run(&loader)
    }

    /// Trains on a loader's batches. Calling it again continues training from where the
    /// last call ended (as Keras's `fit` does), with a fresh history.
    pub fn run<D: Dataset>(&mut self, train: &DataLoader<D>) -> Result<History> {
        self.check_setup()?;
        let (mut state, mut history) = self.resume(train)?;
        let mut logs = Logs::open(self, &history)?;
        while state.epoch < self.epochs && history.stopped.is_none() {
            let started = Instant::now();
            let (mut values, steps) = self.train_epoch(train, &mut state, &mut logs)?;
            state.finish_epoch();
            self.average_epoch(&state)?;
            values.extend(self.validate()?);
            let metric = values
                .get("val_loss")
                .or_else(|| values.get("loss"))
                .copied()
                .unwrap_or(f64::NAN);
            self.control_lr(LrMoment::EpochEnd {
                epoch: state.epoch,
                metric,
            })?;
            values.insert("lr".into(), self.opt.lr());
            let log = EpochLog {
                epoch: state.epoch,
                values,
                seconds: started.elapsed().as_secs_f64(),
            };
            logs.epoch(&log)?;
            if self.verbosity != Verbosity::Silent {
                println!("{}", epoch_line(&log, self.epochs, steps));
            }
            history.stopped = self.stopping(&log, &state)?;
            history.epochs.push(log);
            self.save_checkpoint(&mut state, &history)?;
        }
        self.finish(&history, &state)?;
        Ok(history)
    }

    /// The mean loss and metrics of the model over `loader`'s batches (its epoch 0), in
    /// evaluation mode without gradients: Keras's `model.evaluate`. Keys are `loss` and
    /// each metric's name.
    pub fn evaluate<D: Dataset>(&self, loader: &DataLoader<D>) -> Result<BTreeMap<String, f64>> {
        self.evaluate_batches(Box::new(loader.epoch(0)))
    }

    /// [`Fit::evaluate`] on in-memory tensors, batched by the training batch size.
    pub fn evaluate_tensors(&self, x: &Tensor, y: &Tensor) -> Result<BTreeMap<String, f64>> {
        let loader = self.tensor_loader(x, y)?.shuffle(false);
        self.evaluate(&loader)
    }

    fn tensor_loader(&self, x: &Tensor, y: &Tensor) -> Result<DataLoader<TensorDataset>> {
        let ds = TensorDataset::new(x.clone(), y.clone())?;
        Ok(DataLoader::new(ds, Batching::MiniBatch(self.batch_size))?
            .shuffle(self.shuffle)
            .seed(self.seed))
    }

    /// Refuses configurations that cannot run, before anything happens.
    fn check_setup(&self) -> Result<()> {
        if self.accumulate == 0 {
            return Err(Error::InvalidValue {
                field: "accumulate",
                value: "0".into(),
                expected: "accumulate >= 1",
            });
        }
        if self.opt.needs_closure() {
            let gradient_driven = self
                .lr
                .as_ref()
                .is_some_and(|(c, _)| c.drive() == LrDrive::Gradients);
            if self.accumulate > 1 || gradient_driven {
                return Err(Error::InvalidValue {
                    field: "accumulate / lr_control",
                    value: format!("{} with {}", self.accumulate, self.opt.name()),
                    expected: "no gradient accumulation and no gradient-driven rate with an \
                               optimizer that re-evaluates the loss (L-BFGS)",
                });
            }
        }
        Ok(())
    }

    /// The loop's starting position and history: fresh, or restored from the checkpoint
    /// directory when asked to resume and one is there.
    fn resume<D: Dataset>(&mut self, train: &DataLoader<D>) -> Result<(TrainState, History)> {
        let fresh = (TrainState::for_loader(train), History::default());
        let Some((dir, true)) = &self.checkpoint else {
            return Ok(fresh);
        };
        if !dir.join("trainer.json").exists() {
            return Ok(fresh);
        }
        let ckpt = Checkpoint::load(dir)?;
        let history = History::from_json(&ckpt.train.metadata["fit_history"])?;
        let mut parts: Vec<(&str, &mut dyn Stateful)> = Vec::new();
        if let Some((lr, _)) = &mut self.lr {
            parts.push(("lr", lr.as_mut() as &mut dyn Stateful));
        }
        if let Some((early, _)) = &mut self.early {
            parts.push(("early", early));
        }
        if let Some(avg) = &mut self.averaging {
            parts.push(("averaged", &mut *avg.model));
        }
        ckpt.restore(self.store, &mut *self.opt, &mut parts)?;
        ckpt.train.check_loader(train)?;
        Ok((ckpt.train, history))
    }

    /// One training epoch from `state`'s position: the epoch's mean loss and metrics, and
    /// the number of optimizer steps taken.
    fn train_epoch<D: Dataset>(
        &mut self,
        train: &DataLoader<D>,
        state: &mut TrainState,
        logs: &mut Logs,
    ) -> Result<(BTreeMap<String, f64>, u64)> {
        let total = train.batches_per_epoch();
        let mut progress = (self.verbosity == Verbosity::ProgressBar).then(|| {
            Progress::new(
                train.dataset().len() as u64,
                &format!("epoch {}/{}", state.epoch + 1, self.epochs),
            )
        });
        let mut sums = Sums::default();
        let mut pending: Option<Gradients> = None;
        let (mut in_group, mut steps) = (0usize, 0u64);
        let k = self.accumulate;
        for batch in state.batches(train)? {
            let batch = batch?;
            let started = Instant::now();
            let position = state.batch_in_epoch as usize + 1;
            let (l, n, report) = if self.opt.needs_closure() {
                state.finish_batch();
                self.closure_step(&batch, &mut sums)?
            } else {
                let (loss, l, n) = self.batch_loss(&batch, true, &mut sums)?;
                let mut grads = Gradients::compute(&loss, self.store)?;
                if k > 1 {
                    grads.scale(1.0 / k as f64)?;
                    match &mut pending {
                        Some(p) => p.accumulate(&grads)?,
                        None => pending = Some(grads),
                    }
                    in_group += 1;
                    if in_group < k && position < total {
                        state.accumulate_batch();
                        continue;
                    }
                    in_group = 0;
                    grads = pending.take().expect("at least one batch is pending");
                }
                state.finish_batch();
                self.control_lr(LrMoment::BeforeStep(&grads))?;
                (l, n, self.opt.step(&grads)?)
            };
            steps += 1;
            self.control_lr(LrMoment::AfterStep)?;
            self.average_step(state)?;
            logs.step(self.opt, l, &report, started, state.step)?;
            if let Some(p) = &mut progress {
                p.update(n as u64, l, sums.mean("accuracy").unwrap_or(f64::NAN));
            }
        }
        if let Some(p) = progress {
            p.finish();
        }
        Ok((sums.means(), steps))
    }

    /// One step of an optimizer that re-evaluates the loss (L-BFGS): the closure runs the
    /// batch forward; the first evaluation's loss and metrics are the batch's record.
    fn closure_step(&mut self, batch: &Batch, sums: &mut Sums) -> Result<(f64, usize, StepReport)> {
        let (model, loss_fn, metrics) = (self.model, &self.loss, &self.metrics);
        let mut first: Option<Result<BatchRecord>> = None;
        let mut closure = || -> taper_optim::Result<Tensor> {
            let out = model
                .forward_t(&batch.inputs, true)
                .map_err(taper_optim::Error::Candle)?;
            let loss = loss_fn(&out, &batch.targets)
                .map_err(|e| taper_optim::Error::Candle(candle_core::Error::wrap(e)))?;
            if first.is_none() {
                first = Some(record(&loss, &out, &batch.targets, metrics));
            }
            Ok(loss)
        };
        let report = self.opt.step_closure(&mut closure)?;
        let (l, values) = first.expect("the closure ran at least once")?;
        let n = batch.inputs.dim(0)?;
        sums.add("loss", l, n);
        for (name, v) in values {
            sums.add(name, v, n);
        }
        Ok((l, n, report))
    }

    /// The one place the learning rate changes: each controller steps at the moment its
    /// drive (and, for schedules, [`LrEvery`]) says, with the signal it needs.
    fn control_lr(&mut self, at: LrMoment<'_>) -> Result<()> {
        let Some((control, every)) = &mut self.lr else {
            return Ok(());
        };
        let steps = self.opt.steps();
        let signal = match (control.drive(), &at) {
            (LrDrive::Gradients, LrMoment::BeforeStep(grads)) => Signal::at(steps + 1).grads(grads),
            // The optimizer's own count: global across epochs and resumes.
            (LrDrive::Time, LrMoment::AfterStep) if *every == LrEvery::Step => Signal::at(steps),
            (LrDrive::Time, LrMoment::EpochEnd { epoch, .. }) if *every == LrEvery::Epoch => {
                Signal::at(*epoch)
            }
            (LrDrive::Metric, LrMoment::EpochEnd { epoch, metric }) => {
                Signal::at(*epoch).metric(*metric)
            }
            _ => return Ok(()),
        };
        control.step_with(signal, &mut *self.opt)?;
        Ok(())
    }

    /// Averages the weights in after a step, when averaging per step and past its start.
    fn average_step(&mut self, state: &TrainState) -> Result<()> {
        match &mut self.averaging {
            Some(a) if a.every == AverageEvery::Step && state.epoch >= a.start_epoch => {
                Ok(a.model.update_parameters(self.store)?)
            }
            _ => Ok(()),
        }
    }

    /// Averages the weights in after an epoch, when averaging per epoch and past its start.
    fn average_epoch(&mut self, state: &TrainState) -> Result<()> {
        match &mut self.averaging {
            Some(a) if a.every == AverageEvery::Epoch && state.epoch > a.start_epoch => {
                Ok(a.model.update_parameters(self.store)?)
            }
            _ => Ok(()),
        }
    }

    /// The validation record: `val_…` of the model and, once the weights have been
    /// averaged, `avg_val_…` of the averaged weights (swapped into the model for the pass,
    /// then swapped back).
    fn validate(&self) -> Result<BTreeMap<String, f64>> {
        let Some(val) = &self.validation else {
            return Ok(BTreeMap::new());
        };
        let mut out: BTreeMap<String, f64> = self
            .evaluate_batches(val.batches())?
            .into_iter()
            .map(|(k, v)| (format!("val_{k}"), v))
            .collect();
        if let Some(avg) = self.averaging.as_ref().filter(|a| a.model.n_averaged() > 0) {
            let own = copies(self.store)?;
            self.store
                .load_state_dict(&copies(avg.model.store())?, LoadMode::Strict)?;
            let averaged = self.evaluate_batches(val.batches());
            self.store.load_state_dict(&own, LoadMode::Strict)?;
            for (k, v) in averaged? {
                out.insert(format!("avg_val_{k}"), v);
            }
        }
        Ok(out)
    }

    /// Why training stops after this epoch, if it does: early stopping on its monitored
    /// value, then the stopping rules.
    fn stopping(&mut self, log: &EpochLog, state: &TrainState) -> Result<Option<String>> {
        if let Some((early, monitor)) = &mut self.early {
            let Some(&m) = log.values.get(monitor.as_str()) else {
                return Err(Error::InvalidValue {
                    field: "monitor",
                    value: monitor.clone(),
                    expected: "a key of the epoch's record (loss, val_loss, a metric)",
                });
            };
            if early.update(m, self.store)? {
                return Ok(Some(format!(
                    "early stopping: `{monitor}` did not improve on {:?}",
                    early.best()
                )));
            }
        }
        if let Some(rules) = &mut self.stop {
            if let Some(stop) = rules.check(state.step, state.epoch, log.values["loss"]) {
                if stop != Stop::MaxEpochs || state.epoch < self.epochs {
                    return Ok(Some(format!("stopping rule: {stop:?}")));
                }
            }
        }
        Ok(None)
    }

    /// Saves the checkpoint, when asked for one: everything a resume needs.
    fn save_checkpoint(&self, state: &mut TrainState, history: &History) -> Result<()> {
        let Some((dir, _)) = &self.checkpoint else {
            return Ok(());
        };
        state.metadata = json!({ "fit_history": history.to_json() });
        let mut ckpt = Checkpoint::capture(self.store, &*self.opt, state.clone())?;
        if let Some((lr, _)) = &self.lr {
            ckpt = ckpt.add_state("lr", lr.as_ref())?;
        }
        if let Some((early, _)) = &self.early {
            ckpt = ckpt.add_state("early", early)?;
        }
        if let Some(avg) = &self.averaging {
            ckpt = ckpt.add_state("averaged", &*avg.model)?;
        }
        ckpt.save(dir)
    }

    /// After the last epoch: early stopping puts the best weights back.
    fn finish(&self, history: &History, state: &TrainState) -> Result<()> {
        if let Some((early, _)) = &self.early {
            if history.stopped.is_some() || state.epoch >= self.epochs {
                early.restore(self.store)?;
            }
        }
        Ok(())
    }

    /// The mean loss and metrics over `batches`, in evaluation mode, without gradients.
    fn evaluate_batches(
        &self,
        batches: Box<dyn Iterator<Item = taper_data::Result<Batch>> + '_>,
    ) -> Result<BTreeMap<String, f64>> {
        no_grad(|| {
            let mut sums = Sums::default();
            for batch in batches {
                self.batch_loss(&batch?, false, &mut sums)?;
            }
            Ok(sums.means())
        })
    }

    /// The loss of `batch` (in training or evaluation mode), with its value and the batch
    /// size; the loss and each metric are added to `sums`.
    fn batch_loss(
        &self,
        batch: &Batch,
        train: bool,
        sums: &mut Sums,
    ) -> Result<(Tensor, f64, usize)> {
        let output = self.model.forward_t(&batch.inputs, train)?;
        let loss = (self.loss)(&output, &batch.targets)?;
        let n = batch.inputs.dim(0)?;
        let (l, values) = record(&loss, &output, &batch.targets, &self.metrics)?;
        sums.add("loss", l, n);
        for (name, v) in values {
            sums.add(name, v, n);
        }
        Ok((loss, l, n))
    }
}

/// One batch's loss value, and each metric by name.
type BatchRecord = (f64, Vec<(&'static str, f64)>);

/// One batch's loss value and metrics.
fn record(
    loss: &Tensor,
    output: &Tensor,
    targets: &Tensor,
    metrics: &[Metric],
) -> Result<BatchRecord> {
    let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let values = metrics
        .iter()
        .map(|m| Ok((m.name(), m.value(output, targets)?)))
        .collect::<Result<_>>()?;
    Ok((l, values))
}

/// Copies of every entry of `store`, by name.
fn copies(store: &ParamStore) -> Result<std::collections::HashMap<String, Tensor>> {
    store
        .state_dict()
        .into_iter()
        .map(|(n, t)| Ok((n, t.copy()?)))
        .collect()
}

/// Batch-size-weighted sums of named values.
#[derive(Default)]
struct Sums(BTreeMap<String, (f64, usize)>);

impl Sums {
    fn add(&mut self, key: &str, value: f64, n: usize) {
        let e = self.0.entry(key.to_string()).or_insert((0.0, 0));
        e.0 += value * n as f64;
        e.1 += n;
    }

    fn mean(&self, key: &str) -> Option<f64> {
        self.0.get(key).map(|(s, n)| s / (*n).max(1) as f64)
    }

    fn means(&self) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(k, (s, n))| (k.clone(), s / (*n).max(1) as f64))
            .collect()
    }
}

/// Keras's epoch lines: `Epoch 3/10`, then `4/4 - 0.02s - loss: 0.0842 - val_loss: 0.0913`.
fn epoch_line(log: &EpochLog, epochs: u64, steps: u64) -> String {
    let mut line = format!(
        "Epoch {}/{epochs}\n{steps}/{steps} - {:.2}s",
        log.epoch, log.seconds
    );
    let order = |k: &String| {
        (
            k.starts_with("val_"),
            k != "loss" && k != "val_loss",
            k.clone(),
        )
    };
    let mut keys: Vec<&String> = log.values.keys().filter(|k| *k != "lr").collect();
    keys.sort_by_key(|k| order(k));
    for k in keys {
        line += &format!(" - {k}: {:.4}", log.values[k]);
    }
    line
}

/// The CSV, JSON-lines and TensorBoard logs. On a resume the CSV and JSON lines are
/// rewritten with the restored history first, so they match the run as if it had not
/// stopped.
struct Logs {
    csv: Option<(CsvLog, Vec<String>)>,
    jsonl: Option<JsonlLog>,
    tensorboard: Option<SummaryWriter>,
}

impl Logs {
    fn open<M>(fit: &Fit<'_, M>, history: &History) -> Result<Self> {
        let mut logs = Logs {
            csv: None,
            jsonl: fit.jsonl.as_ref().map(JsonlLog::create).transpose()?,
            tensorboard: fit
                .tensorboard
                .as_ref()
                .map(SummaryWriter::new)
                .transpose()?,
        };
        if let Some(path) = &fit.csv {
            let mut keys = vec!["loss".to_string()];
            keys.extend(fit.metrics.iter().map(|m| m.name().to_string()));
            if fit.validation.is_some() {
                keys.push("val_loss".into());
                keys.extend(fit.metrics.iter().map(|m| format!("val_{}", m.name())));
                if fit.averaging.is_some() {
                    keys.push("avg_val_loss".into());
                    keys.extend(fit.metrics.iter().map(|m| format!("avg_val_{}", m.name())));
                }
            }
            keys.push("lr".into());
            let header: Vec<&str> = std::iter::once("epoch")
                .chain(keys.iter().map(String::as_str))
                .collect();
            logs.csv = Some((CsvLog::create(path, &header)?, keys));
        }
        for e in &history.epochs {
            logs.write_files(e)?;
        }
        Ok(logs)
    }

    /// One optimizer step, to TensorBoard.
    fn step(
        &mut self,
        opt: &dyn AnyOptimizer,
        loss: f64,
        report: &StepReport,
        started: Instant,
        step: u64,
    ) -> Result<()> {
        let Some(tb) = &mut self.tensorboard else {
            return Ok(());
        };
        let step_ms = 1e3 * started.elapsed().as_secs_f64();
        tb.add_step_scalars(opt, loss, step_ms, report.grad_norm, step)?;
        Ok(())
    }

    /// One epoch, to every log.
    fn epoch(&mut self, log: &EpochLog) -> Result<()> {
        self.write_files(log)?;
        if let Some(tb) = &mut self.tensorboard {
            for (k, &v) in &log.values {
                let tag = match k.as_str() {
                    "loss" => "loss/train_epoch".to_string(),
                    "lr" => continue,
                    k => match k.strip_prefix("avg_val_") {
                        Some(m) => format!("{m}/test_avg"),
                        None => match k.strip_prefix("val_") {
                            Some(m) => format!("{m}/test"),
                            None => format!("{k}/train"),
                        },
                    },
                };
                tb.add_scalar(&tag, v, log.epoch)?;
            }
            tb.flush()?;
        }
        Ok(())
    }

    /// One epoch, to the CSV and JSON-lines files.
    fn write_files(&mut self, log: &EpochLog) -> Result<()> {
        if let Some((csv, keys)) = &mut self.csv {
            let row: Vec<f64> = std::iter::once(log.epoch as f64)
                .chain(
                    keys.iter()
                        .map(|k| log.values.get(k).copied().unwrap_or(f64::NAN)),
                )
                .collect();
            csv.row(&row)?;
        }
        if let Some(jsonl) = &mut self.jsonl {
            let values = log
                .values
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .chain([("seconds", log.seconds)]);
            jsonl.write_values(&[("epoch", Value::from(log.epoch))], values)?;
        }
        Ok(())
    }
}
