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
pub mod onnx;

// The public API is flat (`taper_nn::Linear`) with three public modules of functions
// (`taper_nn::activation`, `taper_nn::loss`, `taper_nn::regularization`); inside the crate,
// files name the real module path (`crate::layers::linear::Linear`).
pub use layers::activation;
pub use losses::{loss, regularization};

pub use error::{Error, Result};
pub use layers::activation::Activation;
pub use layers::attention::scaled_dot_product_attention;
pub use layers::batch_norm::{BatchNorm, BatchNormConfig};
pub use layers::conv::{Conv2d, Conv2dConfig};
pub use layers::custom::{register_layer, CustomLayer};
pub use layers::dropout::{dropout, Dropout};
pub use layers::embedding::{Embedding, EmbeddingConfig};
pub use layers::flatten::Flatten;
pub use layers::layer_norm::{LayerNorm, LayerNormConfig};
pub use layers::linear::{Linear, LinearConfig};
pub use layers::model_file::MODEL_FORMAT;
pub use layers::multihead_attention::{
    AttentionArgs, MultiheadAttention, MultiheadAttentionConfig,
};
pub use layers::pool::{AvgPool2d, MaxPool2d};
pub use layers::positional::{apply_rotary, PositionalEmbedding, SinusoidalEncoding};
pub use layers::recurrent::{Gru, Lstm, RecurrentConfig, RecurrentKind, Rnn, RnnNonlinearity};
pub use layers::rms_norm::{RmsNorm, RmsNormConfig};
pub use layers::sequential::Sequential;
pub use layers::spec::{BoxedLayer, LayerSpec};
pub use layers::transformer::{
    DecoderArgs, EncoderArgs, FeedForwardActivation, TransformerConfig, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer,
};
pub use losses::cross_entropy::{
    binary_cross_entropy_with_logits, cross_entropy, CrossEntropyLoss, NllLoss, Target,
};
pub use losses::kl_div::{kl_div, KlReduction};
pub use losses::loss::{huber_loss, l1_loss, mse_loss, smooth_l1_loss, Reduction};
pub use onnx::export::ONNX_OPSET;
