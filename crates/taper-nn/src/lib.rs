//! # taper-nn
//!
//! Layers, activations, initializers, losses and regularizers for Taper, each a candle
//! `Module` that registers its parameters in a [`taper_tensor::ParamStore`] under
//! PyTorch's state_dict names. (Being built: see the project's taper-nn issue.)

pub use taper_tensor;
