//! # taper-train
//!
//! Small pieces for explicit training loops: metrics ([`accuracy`], [`RunningMean`],
//! [`ConfusionMatrix`]), a [`Progress`] bar, [`CsvLog`], PNG [`plot`]s, stopping rules and
//! [`EarlyStopping`], checkpoints ([`Checkpoint`], [`CheckpointManager`]) and TensorBoard
//! event files ([`SummaryWriter`]), and [`Fit`], Keras's `model.fit` built from those
//! pieces. There is no mandatory trainer: a loop stays forward, loss, backward, step, all
//! visible, and `Fit` is a convenience over that loop.

mod checkpoint;
mod csv_log;
mod error;
mod fit;
mod manager;
mod metrics;
pub mod plot;
mod progress;
mod stopping;
mod tensorboard;

pub use checkpoint::{Checkpoint, TrainState, CHECKPOINT_FORMAT};
pub use csv_log::CsvLog;
pub use error::{Error, Result};
pub use fit::{EpochLog, Fit, History, LrEvery, Metric, Verbosity};
pub use manager::CheckpointManager;
pub use metrics::{accuracy, predictions, ConfusionMatrix, RunningMean};
pub use progress::Progress;
pub use stopping::{Direction, EarlyStopping, Stop, StopRules};
pub use tensorboard::{HParam, SummaryWriter};
