//! # taper-train
//!
//! Training-loop pieces for Taper: metrics, progress, early stopping, checkpoints and plots.
//! (Being built: see the project's examples and checkpoints issues.)

pub use taper_tensor;
