//! # taper-nn
//!
//! Layers, activations, initializers, losses and regularizers for Taper. Every layer is a
//! candle `Module` (or `ModuleT` where training and evaluation differ: [`Dropout`],
//! [`BatchNorm`], [`Sequential`]) and registers its parameters in a
//! [`taper_tensor::ParamStore`] under PyTorch's state_dict names and layouts, so a Taper
//! model's parameters map one to one onto the equivalent PyTorch module's.
//!
//! On the CPU, `Linear`, ReLU and cross-entropy (f32), and `Conv2d`, `MaxPool2d`,
//! `AvgPool2d` and `BatchNorm` (f32 and f64) run on Taper's own kernels, each one node of
//! the autograd graph with a hand-written backward that computes no gradient for the data
//! batch. Everything else, CUDA included, runs on candle's generic ops, which compute the
//! same function; [`taper_tensor::with_generic_kernels`] forces them (tests compare the two).
//!
//! ```
//! use taper_nn::{loss::Reduction, cross_entropy, Activation, Linear, Sequential};
//! use taper_tensor::{Gradients, ModuleT, ParamStore, Tensor, DType, Device};
//! let store = ParamStore::new(&Device::Cpu, DType::F32);
//! let model = Sequential::new(&store)
//!     .append_with(|s| Linear::new(4, 8, s))?
//!     .append(Activation::Relu)
//!     .append_with(|s| Linear::new(8, 3, s))?;
//! let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu)?;
//! let y = Tensor::new(&[0u32, 2], &Device::Cpu)?;
//! let loss = cross_entropy(&model.forward_t(&x, true)?, &y)?;
//! let grads = Gradients::compute(&loss, &store)?;
//! assert_eq!(grads.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cpu;
mod error;
pub mod init;
mod layers;
mod losses;

// Flat paths inside the crate (`crate::linear`, …) and the public modules
// (`taper_nn::activation`, `taper_nn::loss`, `taper_nn::regularization`), whatever the folder.
pub use layers::activation;
use layers::{
    batch_norm, conv, dropout, embedding, flatten, layer_norm, linear, pool, sequential, spec,
};
use losses::{cross_entropy, kl_div};
pub use losses::{loss, regularization};

pub use activation::Activation;
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv::{Conv2d, Conv2dConfig};
pub use cross_entropy::{
    binary_cross_entropy_with_logits, cross_entropy, CrossEntropyLoss, NllLoss, Target,
};
pub use dropout::{dropout, Dropout};
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use flatten::Flatten;
pub use kl_div::{kl_div, KlReduction};
pub use layer_norm::LayerNorm;
pub use layers::model_file::MODEL_FORMAT;
pub use linear::Linear;
pub use loss::{huber_loss, l1_loss, mse_loss, smooth_l1_loss, Reduction};
pub use pool::{AvgPool2d, MaxPool2d};
pub use sequential::Sequential;
pub use spec::{BoxedLayer, LayerSpec};
