//! Losses and regularizers, with PyTorch's reductions and defaults.

pub(crate) mod cross_entropy;
pub(crate) mod kl_div;
pub mod loss;
pub mod regularization;
