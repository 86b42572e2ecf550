//! # taper-data
//!
//! Datasets, the three batching strategies (full batch, stochastic, mini-batch), IDX/MNIST
//! loading and transforms for Taper. (Being built: see the project's taper-data issue.)

pub use taper_tensor;
