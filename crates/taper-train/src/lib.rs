//! # taper-train
//!
//! Small pieces for explicit training loops: metrics ([`accuracy`], [`RunningMean`],
//! [`ConfusionMatrix`]), a [`Progress`] bar, [`CsvLog`], PNG [`plot`]s, stopping rules and
//! [`EarlyStopping`], checkpoints ([`Checkpoint`], [`CheckpointManager`]) and TensorBoard
//! event files ([`SummaryWriter`]), and [`Fit`], Keras's `model.fit` built from those
//! pieces. There is no mandatory trainer: a loop stays forward, loss, backward, step, all
//! visible, and `Fit` is a convenience over that loop.
//!
//! ```
//! use taper_data::{Batching, DataLoader, TensorDataset};
//! use taper_optim::{Optimizer, Sgd};
//! use taper_tensor::{rand_uniform, DType, Device, Gradients, ParamStore, Tensor};
//! use taper_train::{Checkpoint, EarlyStopping, Direction, RunningMean, TrainState};
//!
//! let dev = Device::Cpu;
//! let store = ParamStore::new(&dev, DType::F32);
//! let w = store.parameter("w", (3, 1), |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
//! let x = rand_uniform((64, 3), 0.0, 1.0, DType::F32, &dev)?;
//! let y = x.sum_keepdim(1)?;
//! let loader = DataLoader::new(TensorDataset::new(x, y)?, Batching::MiniBatch(16))?;
//! let mut opt = Optimizer::new(Sgd::new(0.2), &store)?;
//! let mut early = EarlyStopping::new(3, 0.0, Direction::Minimize, true)?;
//! let mut state = TrainState::for_loader(&loader);
//! while state.epoch < 50 {
//!     let mut loss_mean = RunningMean::default();
//!     for batch in state.batches(&loader)? {
//!         let b = batch?;
//!         let loss = b.inputs.matmul(&w)?.sub(&b.targets)?.sqr()?.mean_all()?;
//!         loss_mean.add(loss.to_scalar::<f32>()? as f64, b.indices.len());
//!         opt.step(&Gradients::compute(&loss, &store)?)?;
//!         state.finish_batch();
//!     }
//!     state.finish_epoch();
//!     if early.update(loss_mean.mean(), &store)? {
//!         break;
//!     }
//! }
//! // Everything needed to resume, in one value (`.save(dir)` writes it crash-safely).
//! let ckpt = Checkpoint::capture(&store, &opt, state)?.add_state("early", &early)?;
//! assert!(early.best().unwrap() < 0.05);
//! # let _ = ckpt;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
mod csv_log;
mod error;
mod fit;
mod history;
mod json_guard;
mod jsonl_log;
mod manager;
mod metrics;
pub mod plot;
mod progress;
mod stopping;
mod tensorboard;
mod train_state;

pub use checkpoint::{Checkpoint, CHECKPOINT_FORMAT};
pub use csv_log::CsvLog;
pub use error::{Error, Result};
pub use fit::{AverageEvery, Fit, LrEvery, Verbosity};
pub use history::{EpochLog, History};
pub use jsonl_log::JsonlLog;
pub use manager::CheckpointManager;
pub use metrics::{accuracy, predictions, ConfusionMatrix, Metric, RunningMean};
pub use progress::Progress;
pub use stopping::{Direction, EarlyStopping, Stop, StopRules};
pub use tensorboard::{HParam, SummaryWriter};
pub use train_state::TrainState;
