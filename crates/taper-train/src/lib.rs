//! # taper-train
//!
//! Small pieces for explicit training loops: stopping rules and early stopping (and, as
//! their issues land, metrics, progress, checkpoints and plots). There is no mandatory
//! trainer: a loop stays forward, loss, backward, step, all visible.

mod checkpoint;
mod error;
mod manager;
mod stopping;

pub use checkpoint::{Checkpoint, TrainState, CHECKPOINT_FORMAT};
pub use error::{Error, Result};
pub use manager::CheckpointManager;
pub use stopping::{Direction, EarlyStopping, Stop, StopRules};
