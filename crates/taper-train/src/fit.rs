//! `fit`: Keras's `model.fit(x, y, epochs=…, validation_data=…)`, built only from Taper's
//! public pieces: `DataLoader` batches, `Gradients::compute`, `Optimizer::step`, an
//! [`LrControl`], [`EarlyStopping`], [`StopRules`], [`CsvLog`], [`Progress`] and
//! [`Checkpoint`]. It is a convenience over the loop those pieces make, not a second engine:
//! the loop written by hand (README, `mnist` example) does the same steps, and stays the way
//! to do anything `fit` does not. [`Fit`] shows an example and what each epoch does.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, ModuleT, Tensor};
use serde_json::{json, Value};
use taper_data::{Batch, Batching, DataLoader, Dataset, TensorDataset};
use taper_optim::{Drive, LrControl, Optimizer, Rule, Signal};
use taper_tensor::{no_grad, Gradients, ParamStore, Stateful};

use crate::{accuracy, Checkpoint, CsvLog, EarlyStopping, Error, Progress, Result, StopRules};
use crate::{Stop, TrainState};

/// A metric computed on every batch and averaged over the epoch (weighted by batch size),
/// for training and validation data alike, as Keras's `metrics=[...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Keras's `"accuracy"`: the fraction of rows whose largest logit is the target class.
    Accuracy,
    /// Keras's `"mae"`: the mean absolute difference between output and target.
    MeanAbsoluteError,
}

impl Metric {
    /// Its name in the history and logs (`accuracy`, `mae`; `val_` prefixed for validation).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::MeanAbsoluteError => "mae",
        }
    }

    fn value(self, output: &Tensor, targets: &Tensor) -> Result<f64> {
        match self {
            Metric::Accuracy => accuracy(output, targets),
            Metric::MeanAbsoluteError => Ok(output
                .to_dtype(DType::F64)?
                .sub(&targets.to_dtype(DType::F64)?.reshape(output.shape())?)?
                .abs()?
                .mean_all()?
                .to_scalar::<f64>()?),
        }
    }
}

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

/// One epoch's record: the training loss and metrics, the validation ones (`val_…`), the
/// learning rate at the end of the epoch and the time taken.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    /// The epoch, 1-based as Keras prints it.
    pub epoch: u64,
    /// `loss`, each metric, `val_loss` and `val_…` when there is validation data, `lr`.
    pub values: BTreeMap<String, f64>,
    /// Seconds the epoch took.
    pub seconds: f64,
}

/// What `fit` returns: every epoch's record, and why training stopped early, if it did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// One record per epoch trained (including epochs before a resume).
    pub epochs: Vec<EpochLog>,
    /// Why training ended before the last epoch (early stopping, a stopping rule).
    pub stopped: Option<String>,
}

impl History {
    /// The series `key` (`loss`, `val_loss`, `accuracy`, `lr`, …) over the epochs, as
    /// Keras's `history.history[key]`; empty when no epoch recorded it.
    pub fn get(&self, key: &str) -> Vec<f64> {
        self.epochs
            .iter()
            .filter_map(|e| e.values.get(key).copied())
            .collect()
    }

    fn to_json(&self) -> Value {
        json!({
            "epochs": self.epochs.iter().map(|e| json!({
                "epoch": e.epoch, "values": e.values, "seconds": e.seconds,
            })).collect::<Vec<_>>(),
            "stopped": self.stopped,
        })
    }

    fn from_json(v: &Value) -> Result<Self> {
        let bad = |what: &str| Error::Checkpoint {
            path: "metadata.fit_history".into(),
            reason: format!("{what} is missing or malformed"),
        };
        let mut h = History::default();
        for e in v["epochs"].as_array().ok_or_else(|| bad("epochs"))? {
            let values = e["values"]
                .as_object()
                .ok_or_else(|| bad("values"))?
                .iter()
                .map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)).ok_or_else(|| bad(k)))
                .collect::<Result<_>>()?;
            h.epochs.push(EpochLog {
                epoch: e["epoch"].as_u64().ok_or_else(|| bad("epoch"))?,
                values,
                seconds: e["seconds"].as_f64().ok_or_else(|| bad("seconds"))?,
            });
        }
        h.stopped = v["stopped"].as_str().map(String::from);
        Ok(h)
    }
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

type LossFn<'a> = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + 'a>;

/// Keras-style training of `model` with `opt` and a loss, configured by builder methods and
/// started with [`Fit::run`] (a loader) or [`Fit::run_tensors`] (in-memory tensors).
///
/// What one epoch does: for each training batch, the model's output in training mode, the
/// loss, the gradients (scaled by 1/k and summed over k batches with `accumulate(k)`), a
/// gradient-driven rate controller, the optimizer step (clipping is the optimizer's own
/// option, [`Clip`](taper_optim::Clip)); then the validation pass in evaluation mode without
/// gradients; then the epoch's controller step, logs, early stopping, the stopping rules and
/// the checkpoint.
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
/// let history = Fit::new(&model, &store, &mut opt, mse)
///     .epochs(10)
///     .verbosity(Verbosity::Silent)
///     .run_tensors(&x, &y)?;
/// let loss = history.get("loss");
/// assert_eq!(loss.len(), 10);
/// assert!(loss[9] < loss[0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Fit<'a, M, R: Rule> {
    model: &'a M,
    store: &'a ParamStore,
    opt: &'a mut Optimizer<R>,
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
    early: Option<(EarlyStopping, String)>,
    lr: Option<(Box<dyn LrControl + 'a>, LrEvery)>,
    stop: Option<StopRules>,
    accumulate: usize,
    checkpoint: Option<(PathBuf, bool)>,
}

impl<'a, M: ModuleT, R: Rule> Fit<'a, M, R> {
    /// Training of `model` (whose parameters are `store`'s) by `opt`, minimizing `loss`
    /// (output, targets) → scalar. Defaults as Keras's `fit`: 1 epoch, batches of 32,
    /// shuffled (seed 0), one line per epoch.
    pub fn new<F, E>(
        model: &'a M,
        store: &'a ParamStore,
        opt: &'a mut Optimizer<R>,
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
            early: None,
            lr: None,
            stop: None,
            accumulate: 1,
            checkpoint: None,
        }
    }

    /// The number of epochs to train for (in all, counting any before a resume).
    pub fn epochs(mut self, n: u64) -> Self {
        self.epochs = n;
        self
    }

    /// For [`Fit::run_tensors`]: the batch size (default 32), shuffling (default on) and the
    /// shuffling seed (default 0).
    pub fn batching(mut self, batch_size: usize, shuffle: bool, seed: u64) -> Self {
        self.batch_size = batch_size;
        self.shuffle = shuffle;
        self.seed = seed;
        self
    }

    /// Metrics to compute on training and validation batches.
    pub fn metrics(mut self, metrics: impl IntoIterator<Item = Metric>) -> Self {
        self.metrics = metrics.into_iter().collect();
        self
    }

    /// What to print.
    pub fn verbosity(mut self, v: Verbosity) -> Self {
        self.verbosity = v;
        self
    }

    /// Validation batches from a loader, evaluated after every epoch.
    pub fn validation<D: Dataset>(mut self, loader: &'a DataLoader<D>) -> Self {
        self.validation = Some(Validation::Loader(loader));
        self
    }

    /// Validation data as tensors (Keras's `validation_data=(x, y)`), batched by the
    /// training batch size.
    pub fn validation_tensors(mut self, x: &Tensor, y: &Tensor) -> Result<Self> {
        let ds = TensorDataset::new(x.clone(), y.clone())?;
        let loader = DataLoader::new(ds, Batching::MiniBatch(self.batch_size))?;
        self.validation = Some(Validation::Tensors(loader));
        Ok(self)
    }

    /// Writes one CSV row per epoch to `path` (columns: epoch, then the history's keys).
    pub fn csv_log(mut self, path: impl AsRef<Path>) -> Self {
        self.csv = Some(path.as_ref().to_path_buf());
        self
    }

    /// Writes one JSON object per epoch per line to `path` (`{"epoch": 1, "loss": …}`).
    pub fn jsonl_log(mut self, path: impl AsRef<Path>) -> Self {
        self.jsonl = Some(path.as_ref().to_path_buf());
        self
    }

    /// Stops when `monitor` (`val_loss`, `loss`, `val_accuracy`, …) stops improving, as
    /// `early` decides (its patience, direction and best-weight restore, which happens when
    /// training ends).
    pub fn early_stopping(mut self, early: EarlyStopping, monitor: &str) -> Self {
        self.early = Some((early, monitor.to_string()));
        self
    }

    /// A learning-rate controller: a schedule (stepped per epoch or per step), a
    /// metric-driven one (stepped per epoch with `val_loss`, or `loss` without validation),
    /// or a gradient-driven one (stepped before each optimizer step).
    pub fn lr_control(mut self, control: Box<dyn LrControl + 'a>, every: LrEvery) -> Self {
        self.lr = Some((control, every));
        self
    }

    /// The documents' stopping rules, checked after each epoch with the epoch's loss.
    pub fn stop_rules(mut self, rules: StopRules) -> Self {
        self.stop = Some(rules);
        self
    }

    /// Sums the gradients of `k` batches (each scaled by 1/k) before each optimizer step.
    pub fn accumulate(mut self, k: usize) -> Self {
        self.accumulate = k;
        self
    }

    /// Saves a checkpoint to `dir` after every epoch (weights, optimizer, controller, early
    /// stopping, counters, data position and the history). With `resume`, a checkpoint
    /// already at `dir` is restored first and training continues from it, bit for bit.
    pub fn checkpoint(mut self, dir: impl AsRef<Path>, resume: bool) -> Self {
        self.checkpoint = Some((dir.as_ref().to_path_buf(), resume));
        self
    }

    /// Trains on in-memory tensors (Keras's `fit(x, y)`), batched as [`Fit::batching`] says.
    pub fn run_tensors(self, x: &Tensor, y: &Tensor) -> Result<History> {
        let ds = TensorDataset::new(x.clone(), y.clone())?;
        let loader = DataLoader::new(ds, Batching::MiniBatch(self.batch_size))?
            .shuffle(self.shuffle)
            .seed(self.seed);
        self.run(&loader)
    }

    /// Trains on a loader's batches.
    pub fn run<D: Dataset>(mut self, train: &DataLoader<D>) -> Result<History> {
        if self.accumulate == 0 {
            return Err(Error::InvalidValue {
                field: "accumulate",
                value: "0".into(),
                expected: "accumulate >= 1",
            });
        }
        let mut state = TrainState::for_loader(train);
        let mut history = History::default();
        if let Some((dir, true)) = &self.checkpoint {
            if dir.join("trainer.json").exists() {
                let ckpt = Checkpoint::load(dir)?;
                history = History::from_json(&ckpt.train.metadata["fit_history"])?;
                let mut parts: Vec<(&str, &mut dyn Stateful)> = Vec::new();
                if let Some((lr, _)) = &mut self.lr {
                    parts.push(("lr", lr.as_mut() as &mut dyn Stateful));
                }
                if let Some((early, _)) = &mut self.early {
                    parts.push(("early", early));
                }
                ckpt.restore(self.store, self.opt, &mut parts)?;
                state = ckpt.train;
            }
        }
        let mut logs = Logs::open(&self, &history)?;
        while state.epoch < self.epochs && history.stopped.is_none() {
            let started = Instant::now();
            let (train_values, steps) = self.train_epoch(train, &mut state)?;
            let mut values = train_values;
            if let Some(val) = &self.validation {
                let batches = match val {
                    Validation::Loader(l) => l.batches(),
                    Validation::Tensors(l) => Box::new(l.epoch(0)),
                };
                for (k, v) in self.evaluate(batches)? {
                    values.insert(format!("val_{k}"), v);
                }
            }
            state.finish_epoch();
            let monitored = values
                .get("val_loss")
                .or_else(|| values.get("loss"))
                .copied()
                .unwrap_or(f64::NAN);
            if let Some((lr, every)) = &mut self.lr {
                match lr.drive() {
                    Drive::Time if *every == LrEvery::Epoch => {
                        lr.step(Signal::at(state.epoch), &mut *self.opt)?
                    }
                    Drive::Metric => lr.step(
                        Signal::at(state.epoch).with_metric(monitored),
                        &mut *self.opt,
                    )?,
                    _ => {}
                }
            }
            values.insert("lr".into(), self.opt.lr());
            let log = EpochLog {
                epoch: state.epoch,
                values,
                seconds: started.elapsed().as_secs_f64(),
            };
            logs.write(&log)?;
            if self.verbosity != Verbosity::Silent {
                println!("{}", epoch_line(&log, self.epochs, steps));
            }
            if let Some((early, monitor)) = &mut self.early {
                let Some(&m) = log.values.get(monitor.as_str()) else {
                    return Err(Error::InvalidValue {
                        field: "monitor",
                        value: monitor.clone(),
                        expected: "a key of the epoch's record (loss, val_loss, a metric)",
                    });
                };
                if early.update(m, self.store)? {
                    history.stopped = Some(format!(
                        "early stopping: `{monitor}` did not improve on {:?}",
                        early.best()
                    ));
                }
            }
            let loss = log.values["loss"];
            if let Some(rules) = &mut self.stop {
                if let Some(stop) = rules.check(state.step, state.epoch, loss) {
                    if stop != Stop::MaxEpochs || state.epoch < self.epochs {
                        history.stopped = Some(format!("stopping rule: {stop:?}"));
                    }
                }
            }
            history.epochs.push(log);
            if let Some((dir, _)) = &self.checkpoint {
                state.metadata = json!({ "fit_history": history.to_json() });
                let mut ckpt = Checkpoint::capture(self.store, self.opt, state.clone())?;
                if let Some((lr, _)) = &self.lr {
                    ckpt = ckpt.with_state("lr", lr.as_ref())?;
                }
                if let Some((early, _)) = &self.early {
                    ckpt = ckpt.with_state("early", early)?;
                }
                ckpt.save(dir)?;
            }
        }
        if let Some((early, _)) = &self.early {
            if history.stopped.is_some() || state.epoch >= self.epochs {
                early.restore(self.store)?;
            }
        }
        Ok(history)
    }

    /// One training epoch from `state`'s position: the epoch's mean loss and metrics, and
    /// the number of optimizer steps taken.
    fn train_epoch<D: Dataset>(
        &mut self,
        train: &DataLoader<D>,
        state: &mut TrainState,
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
            let position = state.batch_in_epoch as usize + 1;
            let (loss, l, n) = self.batch_loss(&batch, true, &mut sums)?;
            let mut grads = Gradients::compute(&loss, self.store)?;
            if k > 1 {
                grads.scale(1.0 / k as f64)?;
                match &mut pending {
                    Some(p) => p.accumulate(&grads)?,
                    None => pending = Some(grads),
                }
                in_group += 1;
                state.finish_batch();
                if in_group < k && position < total {
                    continue;
                }
                in_group = 0;
                grads = pending.take().expect("at least one batch is pending");
            } else {
                state.finish_batch();
            }
            if let Some((lr, _)) = &mut self.lr {
                if lr.drive() == Drive::Gradients {
                    let signal = Signal::at(self.opt.steps() + 1).with_grads(&grads);
                    lr.step(signal, &mut *self.opt)?;
                }
            }
            self.opt.step(&grads)?;
            steps += 1;
            if let Some((lr, LrEvery::Step)) = &mut self.lr {
                if lr.drive() == Drive::Time {
                    // The optimizer's own count: global across epochs and resumes.
                    lr.step(Signal::at(self.opt.steps()), &mut *self.opt)?;
                }
            }
            if let Some(p) = &mut progress {
                p.update(n as u64, l, sums.mean("accuracy").unwrap_or(f64::NAN));
            }
        }
        if let Some(p) = progress {
            p.finish();
        }
        Ok((sums.means(), steps))
    }

    /// The mean loss and metrics over `batches`, in evaluation mode, without gradients.
    fn evaluate(
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
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        sums.add("loss", l, n);
        for m in &self.metrics {
            sums.add(m.name(), m.value(&output, &batch.targets)?, n);
        }
        Ok((loss, l, n))
    }
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

/// The CSV and JSON-lines logs. On a resume they are rewritten with the restored history
/// first, so they match the run as if it had not stopped.
struct Logs {
    csv: Option<(CsvLog, Vec<String>)>,
    jsonl: Option<(std::fs::File, String)>,
}

impl Logs {
    fn open<M, R: Rule>(fit: &Fit<'_, M, R>, history: &History) -> Result<Self> {
        let mut logs = Logs {
            csv: None,
            jsonl: None,
        };
        if let Some(path) = &fit.csv {
            let mut keys = vec!["loss".to_string()];
            keys.extend(fit.metrics.iter().map(|m| m.name().to_string()));
            if fit.validation.is_some() {
                keys.push("val_loss".into());
                keys.extend(fit.metrics.iter().map(|m| format!("val_{}", m.name())));
            }
            keys.push("lr".into());
            let header: Vec<&str> = std::iter::once("epoch")
                .chain(keys.iter().map(String::as_str))
                .collect();
            logs.csv = Some((CsvLog::create(path, &header)?, keys));
        }
        if let Some(path) = &fit.jsonl {
            let file = std::fs::File::create(path).map_err(|e| Error::Log {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            logs.jsonl = Some((file, path.display().to_string()));
        }
        for e in &history.epochs {
            logs.write(e)?;
        }
        Ok(logs)
    }

    fn write(&mut self, log: &EpochLog) -> Result<()> {
        if let Some((csv, keys)) = &mut self.csv {
            let row: Vec<f64> = std::iter::once(log.epoch as f64)
                .chain(
                    keys.iter()
                        .map(|k| log.values.get(k).copied().unwrap_or(f64::NAN)),
                )
                .collect();
            csv.row(&row)?;
        }
        if let Some((file, path)) = &mut self.jsonl {
            let mut obj = serde_json::Map::new();
            obj.insert("epoch".into(), json!(log.epoch));
            for (k, v) in &log.values {
                obj.insert(k.clone(), json!(v));
            }
            obj.insert("seconds".into(), json!(log.seconds));
            writeln!(file, "{}", Value::Object(obj))
                .and_then(|()| file.flush())
                .map_err(|e| Error::Log {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }
}
