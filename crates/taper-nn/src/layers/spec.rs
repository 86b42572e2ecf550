//! `LayerSpec`: a layer's architecture as data (its kind and constructor arguments), so a
//! `Sequential` of Taper's layers can be written to JSON and rebuilt with no code
//! (`Sequential::save_model` / `load_model`).
//!
//! The kinds are a closed list, read with serde's `tag = "kind"`: a file naming any other
//! kind, or a field of the wrong type, is an error that names it, and nothing but these
//! constructors ever runs (unlike unpickling a Python model).

use std::any::Any;

use serde::{Deserialize, Serialize};
use taper_tensor::{ModuleT, ParamStore};

use crate::layers::activation::Activation;
use crate::layers::batch_norm::{BatchNorm, BatchNormConfig};
use crate::layers::conv::{Conv2d, Conv2dConfig};
use crate::layers::custom::{build_registered, describe_registered};
use crate::layers::dropout::Dropout;
use crate::layers::embedding::Embedding;
use crate::layers::flatten::Flatten;
use crate::layers::layer_norm::{LayerNorm, LayerNormConfig};
use crate::layers::linear::{Linear, LinearConfig};
use crate::layers::multihead_attention::{MultiheadAttention, MultiheadAttentionConfig};
use crate::layers::pool::{AvgPool2d, MaxPool2d};
use crate::layers::positional::{PositionalEmbedding, SinusoidalEncoding};
use crate::layers::recurrent::{Gru, Lstm, RecurrentConfig, RecurrentKind, Rnn};
use crate::layers::rms_norm::{RmsNorm, RmsNormConfig};
use crate::layers::sequential::Sequential;
use crate::layers::transformer::{
    TransformerConfig, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
};

/// One layer's kind and constructor arguments, as PyTorch names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum LayerSpec {
    /// `Linear(in_features, out_features, bias)`.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Whether it has a bias.
        bias: bool,
    },
    /// `Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias)`.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel (height, width).
        kernel: (usize, usize),
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Dilation.
        dilation: usize,
        /// Groups.
        groups: usize,
        /// Whether it has a bias.
        bias: bool,
    },
    /// `BatchNorm1d` (`rank` 1) or `BatchNorm2d` (`rank` 2).
    BatchNorm {
        /// 1 for BatchNorm1d, 2 for BatchNorm2d.
        rank: u8,
        /// Features (channels).
        num_features: usize,
        /// ε.
        eps: f64,
        /// Running-statistics momentum.
        momentum: f64,
        /// Learned scale and shift.
        affine: bool,
    },
    /// `LayerNorm(normalized_shape, eps, elementwise_affine)`.
    LayerNorm {
        /// The normalized trailing shape.
        normalized_shape: Vec<usize>,
        /// ε.
        eps: f64,
        /// Learned scale and shift.
        elementwise_affine: bool,
        /// With `elementwise_affine`, the shift too (absent in older files: true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// `Dropout(p)`.
    Dropout {
        /// Drop probability.
        p: f64,
    },
    /// `Flatten(start_dim, end_dim)`.
    Flatten {
        /// First flattened dimension.
        start_dim: isize,
        /// Last flattened dimension.
        end_dim: isize,
    },
    /// `MaxPool2d(kernel, stride)`.
    MaxPool2d {
        /// Window.
        kernel: (usize, usize),
        /// Stride.
        stride: (usize, usize),
    },
    /// `AvgPool2d(kernel, stride)`.
    AvgPool2d {
        /// Window.
        kernel: (usize, usize),
        /// Stride.
        stride: (usize, usize),
    },
    /// An activation layer.
    Activation {
        /// Which, with its argument.
        activation: Activation,
    },
    /// `Embedding(num_embeddings, embedding_dim)`.
    Embedding {
        /// Table rows.
        num_embeddings: usize,
        /// Vector size.
        embedding_dim: usize,
    },
    /// A nested `Sequential`.
    Sequential {
        /// Its children, in order.
        layers: Vec<LayerSpec>,
    },
    /// `MultiheadAttention` (self-attention inside a `Sequential`).
    MultiheadAttention {
        /// Its configuration.
        config: MultiheadAttentionConfig,
    },
    /// `TransformerEncoderLayer`.
    TransformerEncoderLayer {
        /// Its configuration.
        config: TransformerConfig,
    },
    /// `TransformerDecoderLayer` (its input as its memory inside a `Sequential`).
    TransformerDecoderLayer {
        /// Its configuration.
        config: TransformerConfig,
    },
    /// `TransformerEncoder`: `num_layers` encoder layers and an optional final norm.
    TransformerEncoder {
        /// Its layers' configuration.
        config: TransformerConfig,
        /// Layers.
        num_layers: usize,
        /// A final layer norm.
        final_norm: bool,
    },
    /// `RNN`, `LSTM` or `GRU`.
    Recurrent {
        /// Which recurrence.
        recurrence: RecurrentKind,
        /// Its configuration.
        config: RecurrentConfig,
    },
    /// `RMSNorm`.
    RmsNorm {
        /// Its configuration.
        config: RmsNormConfig,
    },
    /// A learned position table.
    PositionalEmbedding {
        /// Positions.
        max_len: usize,
        /// Features.
        dim: usize,
    },
    /// The fixed sinusoidal encoding.
    SinusoidalEncoding {
        /// Positions.
        max_len: usize,
        /// Features.
        dim: usize,
    },
    /// A user-defined layer registered with [`register_layer`](crate::register_layer):
    /// its kind's name and the configuration its constructor takes.
    Custom {
        /// The kind's name ([`CustomLayer::KIND`](crate::CustomLayer::KIND)).
        name: String,
        /// Its configuration, as the type serializes it.
        config: serde_json::Value,
    },
}

fn yes() -> bool {
    true
}

/// The names of Taper's own layer kinds in model files.
pub(crate) const BUILT_IN_KINDS: &[&str] = &[
    "Linear",
    "Conv2d",
    "BatchNorm",
    "LayerNorm",
    "Dropout",
    "Flatten",
    "MaxPool2d",
    "AvgPool2d",
    "Activation",
    "Embedding",
    "Sequential",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "Recurrent",
    "RmsNorm",
    "PositionalEmbedding",
    "SinusoidalEncoding",
];

/// A built layer, ready to append to a `Sequential`.
pub type BoxedLayer = Box<dyn ModuleT + Send + Sync>;

impl LayerSpec {
    /// A `Conv2d` spec's configuration; an error naming the kind for any other.
    pub(crate) fn conv2d(&self) -> crate::error::Result<Conv2dConfig> {
        self.conv2d_config().ok_or_else(|| self.not_a("a Conv2d"))
    }

    /// A `BatchNorm` spec's configuration; an error naming the kind for any other.
    pub(crate) fn batch_norm(&self) -> crate::error::Result<BatchNormConfig> {
        self.batch_norm_config()
            .ok_or_else(|| self.not_a("a BatchNorm"))
    }

    /// The error for a spec of another kind than `expected`.
    fn not_a(&self, expected: &'static str) -> crate::error::Error {
        crate::error::Error::InvalidValue {
            field: "layer",
            value: self.kind().to_string(),
            expected,
        }
    }

    /// A `BatchNorm` spec's configuration; `None` for any other kind.
    pub(crate) fn batch_norm_config(&self) -> Option<BatchNormConfig> {
        match *self {
            LayerSpec::BatchNorm {
                rank,
                num_features,
                eps,
                momentum,
                affine,
            } => Some(BatchNormConfig {
                rank,
                num_features,
                eps,
                momentum,
                affine,
            }),
            _ => None,
        }
    }

    /// A `Conv2d` spec's configuration; `None` for any other kind.
    pub(crate) fn conv2d_config(&self) -> Option<Conv2dConfig> {
        match *self {
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
            } => Some(
                Conv2dConfig::new(in_channels, out_channels, kernel)
                    .stride(stride)
                    .padding(padding)
                    .dilation(dilation)
                    .groups(groups)
                    .bias(bias),
            ),
            _ => None,
        }
    }

    /// Builds the layer under `store` (its parameters initialised as the constructor does;
    /// load weights afterwards).
    pub fn build(&self, store: &ParamStore) -> crate::error::Result<BoxedLayer> {
        Ok(match self.clone() {
            LayerSpec::Linear {
                in_features,
                out_features,
                bias,
            } => Box::new(
                LinearConfig::new(in_features, out_features)
                    .bias(bias)
                    .build(store)?,
            ),
            LayerSpec::Conv2d { .. } => Box::new(self.conv2d()?.build(store)?),
            LayerSpec::BatchNorm { .. } => Box::new(self.batch_norm()?.build(store)?),
            LayerSpec::LayerNorm {
                normalized_shape,
                eps,
                elementwise_affine,
                bias,
            } => Box::new(
                LayerNormConfig::new(&normalized_shape)
                    .eps(eps)
                    .elementwise_affine(elementwise_affine)
                    .bias(bias)
                    .build(store)?,
            ),
            LayerSpec::Dropout { p } => Box::new(Dropout::new(p)?),
            LayerSpec::Flatten { start_dim, end_dim } => Box::new(Flatten { start_dim, end_dim }),
            LayerSpec::MaxPool2d { kernel, stride } => Box::new(MaxPool2d { kernel, stride }),
            LayerSpec::AvgPool2d { kernel, stride } => Box::new(AvgPool2d { kernel, stride }),
            LayerSpec::Activation { activation } => Box::new(activation),
            LayerSpec::Embedding {
                num_embeddings,
                embedding_dim,
            } => Box::new(Embedding::new(num_embeddings, embedding_dim, store)?),
            LayerSpec::Sequential { layers } => Box::new(Sequential::from_specs(&layers, store)?),
            LayerSpec::MultiheadAttention { config } => Box::new(config.build(store)?),
            LayerSpec::TransformerEncoderLayer { config } => Box::new(config.encoder_layer(store)?),
            LayerSpec::TransformerDecoderLayer { config } => Box::new(config.decoder_layer(store)?),
            LayerSpec::TransformerEncoder {
                config,
                num_layers,
                final_norm,
            } => Box::new(config.encoder(num_layers, final_norm, store)?),
            LayerSpec::Recurrent { recurrence, config } => match recurrence {
                RecurrentKind::Rnn(f) => Box::new(config.rnn(f, store)?),
                RecurrentKind::Lstm => Box::new(config.lstm(store)?),
                RecurrentKind::Gru => Box::new(config.gru(store)?),
            },
            LayerSpec::RmsNorm { config } => Box::new(config.build(store)?),
            LayerSpec::PositionalEmbedding { max_len, dim } => {
                Box::new(PositionalEmbedding::new(max_len, dim, store)?)
            }
            LayerSpec::SinusoidalEncoding { max_len, dim } => {
                Box::new(SinusoidalEncoding::new(max_len, dim)?)
            }
            LayerSpec::Custom { name, config } => build_registered(&name, config, store)?,
        })
    }

    /// The kind's name, as `summary` and errors show it (a custom layer's registered name).
    pub fn kind(&self) -> &str {
        match self {
            LayerSpec::Linear { .. } => "Linear",
            LayerSpec::Conv2d { .. } => "Conv2d",
            LayerSpec::BatchNorm { .. } => "BatchNorm",
            LayerSpec::LayerNorm { .. } => "LayerNorm",
            LayerSpec::Dropout { .. } => "Dropout",
            LayerSpec::Flatten { .. } => "Flatten",
            LayerSpec::MaxPool2d { .. } => "MaxPool2d",
            LayerSpec::AvgPool2d { .. } => "AvgPool2d",
            LayerSpec::Activation { .. } => "Activation",
            LayerSpec::Embedding { .. } => "Embedding",
            LayerSpec::Sequential { .. } => "Sequential",
            LayerSpec::MultiheadAttention { .. } => "MultiheadAttention",
            LayerSpec::TransformerEncoderLayer { .. } => "TransformerEncoderLayer",
            LayerSpec::TransformerDecoderLayer { .. } => "TransformerDecoderLayer",
            LayerSpec::TransformerEncoder { .. } => "TransformerEncoder",
            LayerSpec::Recurrent { recurrence, .. } => match recurrence {
                RecurrentKind::Rnn(_) => "RNN",
                RecurrentKind::Lstm => "LSTM",
                RecurrentKind::Gru => "GRU",
            },
            LayerSpec::RmsNorm { .. } => "RMSNorm",
            LayerSpec::PositionalEmbedding { .. } => "PositionalEmbedding",
            LayerSpec::SinusoidalEncoding { .. } => "SinusoidalEncoding",
            LayerSpec::Custom { name, .. } => name,
        }
    }

    /// The spec of a layer of one of Taper's types or of a registered custom type, or
    /// `None` for any other type.
    pub fn of(layer: &dyn Any) -> Option<LayerSpec> {
        if let Some(l) = layer.downcast_ref::<Linear>() {
            return Some(l.spec());
        }
        if let Some(l) = layer.downcast_ref::<Conv2d>() {
            return Some(l.spec());
        }
        if let Some(l) = layer.downcast_ref::<BatchNorm>() {
            return Some(l.spec());
        }
        if let Some(l) = layer.downcast_ref::<LayerNorm>() {
            return Some(l.spec());
        }
        if let Some(l) = layer.downcast_ref::<Dropout>() {
            return Some(LayerSpec::Dropout { p: l.p() });
        }
        if let Some(l) = layer.downcast_ref::<Flatten>() {
            return Some(LayerSpec::Flatten {
                start_dim: l.start_dim,
                end_dim: l.end_dim,
            });
        }
        if let Some(l) = layer.downcast_ref::<MaxPool2d>() {
            return Some(LayerSpec::MaxPool2d {
                kernel: l.kernel,
                stride: l.stride,
            });
        }
        if let Some(l) = layer.downcast_ref::<AvgPool2d>() {
            return Some(LayerSpec::AvgPool2d {
                kernel: l.kernel,
                stride: l.stride,
            });
        }
        if let Some(l) = layer.downcast_ref::<Activation>() {
            return Some(LayerSpec::Activation { activation: *l });
        }
        if let Some(l) = layer.downcast_ref::<Embedding>() {
            let (num_embeddings, embedding_dim) = l.weight().dims2().ok()?;
            return Some(LayerSpec::Embedding {
                num_embeddings,
                embedding_dim,
            });
        }
        if let Some(l) = layer.downcast_ref::<Sequential>() {
            return l.spec().ok();
        }
        if let Some(l) = layer.downcast_ref::<MultiheadAttention>() {
            return Some(LayerSpec::MultiheadAttention {
                config: *l.config(),
            });
        }
        if let Some(l) = layer.downcast_ref::<TransformerEncoderLayer>() {
            return Some(LayerSpec::TransformerEncoderLayer {
                config: *l.config(),
            });
        }
        if let Some(l) = layer.downcast_ref::<TransformerDecoderLayer>() {
            return Some(LayerSpec::TransformerDecoderLayer {
                config: *l.config(),
            });
        }
        if let Some(l) = layer.downcast_ref::<TransformerEncoder>() {
            return Some(LayerSpec::TransformerEncoder {
                config: *l.config(),
                num_layers: l.num_layers(),
                final_norm: l.has_final_norm(),
            });
        }
        if let Some(l) = layer.downcast_ref::<Rnn>() {
            return Some(LayerSpec::Recurrent {
                recurrence: l.0.kind(),
                config: *l.config(),
            });
        }
        if let Some(l) = layer.downcast_ref::<Lstm>() {
            return Some(LayerSpec::Recurrent {
                recurrence: RecurrentKind::Lstm,
                config: *l.config(),
            });
        }
        if let Some(l) = layer.downcast_ref::<Gru>() {
            return Some(LayerSpec::Recurrent {
                recurrence: RecurrentKind::Gru,
                config: *l.config(),
            });
        }
        if let Some(l) = layer.downcast_ref::<RmsNorm>() {
            return Some(LayerSpec::RmsNorm {
                config: l.config().clone(),
            });
        }
        if let Some(l) = layer.downcast_ref::<PositionalEmbedding>() {
            let (max_len, dim) = l.dims();
            return Some(LayerSpec::PositionalEmbedding { max_len, dim });
        }
        if let Some(l) = layer.downcast_ref::<SinusoidalEncoding>() {
            return Some(LayerSpec::SinusoidalEncoding {
                max_len: l.max_len,
                dim: l.dim,
            });
        }
        describe_registered(layer)
            .and_then(|d| d.ok())
            .map(|(name, config)| LayerSpec::Custom { name, config })
    }
}
