//! Transformer blocks: PyTorch's `nn.TransformerEncoderLayer`, `nn.TransformerDecoderLayer`
//! and `nn.TransformerEncoder`, with their parameter names (`self_attn.in_proj_weight`,
//! `linear1.weight`, `norm1.weight`, `layers.0.…`), post-norm by default or pre-norm
//! (`norm_first`), ReLU or exact GELU, dropout in training.

use candle_core::{Result, Tensor};
use taper_tensor::{Module, ModuleT, ParamStore};

use crate::error::Result as NnResult;
use crate::layers::activation::{gelu, relu};
use crate::layers::dropout::dropout;
use crate::layers::layer_norm::{LayerNorm, LayerNormConfig};
use crate::layers::linear::Linear;
use crate::layers::multihead_attention::{
    AttentionArgs, MultiheadAttention, MultiheadAttentionConfig,
};

/// The feed-forward block's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum FeedForwardActivation {
    /// ReLU (PyTorch's default).
    #[default]
    Relu,
    /// Exact GELU.
    Gelu,
}

/// The configuration of a transformer layer (encoder or decoder):
/// `TransformerConfig::new(d_model, nhead)` with PyTorch's defaults (dim_feedforward 2048,
/// dropout 0.1, ReLU, layer_norm_eps 1e-5, `batch_first = false`, `norm_first = false`,
/// biases), each a builder of PyTorch's name; [`TransformerConfig::encoder_layer`],
/// [`TransformerConfig::decoder_layer`] and [`TransformerConfig::encoder`] build.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// The model's width.
    pub d_model: usize,
    /// Attention heads; must divide `d_model`.
    pub nhead: usize,
    /// The feed-forward block's width (default 2048).
    pub dim_feedforward: usize,
    /// Dropout after attention, in the feed-forward block and on its output (default 0.1).
    pub dropout: f64,
    /// The feed-forward activation (default ReLU).
    pub activation: FeedForwardActivation,
    /// The layer norms' ε (default 1e-5).
    pub layer_norm_eps: f64,
    /// (N, L, E) inputs instead of (L, N, E) (default false).
    pub batch_first: bool,
    /// Normalize before attention and feed-forward (pre-norm) instead of after (default
    /// false).
    pub norm_first: bool,
    /// Biases in the linear layers and layer norms (default true).
    pub bias: bool,
}

impl TransformerConfig {
    /// A layer of width `d_model` with `nhead` heads.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        Self {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: FeedForwardActivation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
        }
    }

    /// Builder: the feed-forward width.
    pub fn dim_feedforward(mut self, n: usize) -> Self {
        self.dim_feedforward = n;
        self
    }

    /// Builder: dropout.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Builder: the feed-forward activation.
    pub fn activation(mut self, a: FeedForwardActivation) -> Self {
        self.activation = a;
        self
    }

    /// Builder: the layer norms' ε.
    pub fn layer_norm_eps(mut self, eps: f64) -> Self {
        self.layer_norm_eps = eps;
        self
    }

    /// Builder: (N, L, E) inputs.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Builder: pre-norm.
    pub fn norm_first(mut self, on: bool) -> Self {
        self.norm_first = on;
        self
    }

    /// Builder: biases.
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    fn check(&self) -> NnResult<()> {
        crate::error::check(
            "dropout",
            self.dropout,
            (0.0..=1.0).contains(&self.dropout),
            "a probability in [0, 1]",
        )?;
        crate::error::check(
            "dim_feedforward",
            self.dim_feedforward as f64,
            self.dim_feedforward > 0,
            "a positive width",
        )
    }

    fn attention(&self, store: &ParamStore) -> NnResult<MultiheadAttention> {
        MultiheadAttentionConfig::new(self.d_model, self.nhead)
            .dropout(self.dropout)
            .bias(self.bias)
            .batch_first(self.batch_first)
            .build(store)
    }

    fn norm(&self, store: &ParamStore) -> NnResult<LayerNorm> {
        LayerNormConfig::new(&[self.d_model])
            .eps(self.layer_norm_eps)
            .bias(self.bias)
            .build(store)
    }

    fn feed_forward(&self, store: &ParamStore) -> NnResult<FeedForward> {
        let lin = |i, o, name: &str| {
            crate::layers::linear::LinearConfig::new(i, o)
                .bias(self.bias)
                .build(&store.sub(name))
        };
        Ok(FeedForward {
            linear1: lin(self.d_model, self.dim_feedforward, "linear1")?,
            linear2: lin(self.dim_feedforward, self.d_model, "linear2")?,
            activation: self.activation,
            dropout: self.dropout,
        })
    }

    /// An encoder layer: `self_attn`, `linear1`, `linear2`, `norm1`, `norm2`.
    pub fn encoder_layer(self, store: &ParamStore) -> NnResult<TransformerEncoderLayer> {
        self.check()?;
        Ok(TransformerEncoderLayer {
            self_attn: self.attention(&store.sub("self_attn"))?,
            ff: self.feed_forward(store)?,
            norm1: self.norm(&store.sub("norm1"))?,
            norm2: self.norm(&store.sub("norm2"))?,
            config: self,
        })
    }

    /// A decoder layer: `self_attn`, `multihead_attn`, `linear1`, `linear2`, `norm1` to
    /// `norm3`.
    pub fn decoder_layer(self, store: &ParamStore) -> NnResult<TransformerDecoderLayer> {
        self.check()?;
        Ok(TransformerDecoderLayer {
            self_attn: self.attention(&store.sub("self_attn"))?,
            multihead_attn: self.attention(&store.sub("multihead_attn"))?,
            ff: self.feed_forward(store)?,
            norm1: self.norm(&store.sub("norm1"))?,
            norm2: self.norm(&store.sub("norm2"))?,
            norm3: self.norm(&store.sub("norm3"))?,
            config: self,
        })
    }

    /// A stack of `num_layers` encoder layers (`layers.0.…`), with a final layer norm
    /// (`norm.weight`, `norm.bias`) when `final_norm` (PyTorch's `norm=nn.LayerNorm(d_model)`).
    pub fn encoder(
        self,
        num_layers: usize,
        final_norm: bool,
        store: &ParamStore,
    ) -> NnResult<TransformerEncoder> {
        let layers = (0..num_layers)
            .map(|i| self.encoder_layer(&store.sub("layers").sub(i)))
            .collect::<NnResult<_>>()?;
        let norm = if final_norm {
            Some(self.norm(&store.sub("norm"))?)
        } else {
            None
        };
        Ok(TransformerEncoder {
            layers,
            norm,
            config: self,
        })
    }
}

/// linear2(dropout(activation(linear1(x)))).
#[derive(Debug, Clone)]
struct FeedForward {
    linear1: Linear,
    linear2: Linear,
    activation: FeedForwardActivation,
    dropout: f64,
}

impl FeedForward {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.linear1.forward(x)?;
        let h = match self.activation {
            FeedForwardActivation::Relu => relu(&h)?,
            FeedForwardActivation::Gelu => gelu(&h)?,
        };
        self.linear2.forward(&dropout(&h, self.dropout, train)?)
    }
}

/// What an encoder layer's attention takes besides its input.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncoderArgs<'a> {
    /// The attention mask (PyTorch's `src_mask`: `true` where not allowed, or additive).
    pub mask: Option<&'a Tensor>,
    /// The padding mask (PyTorch's `src_key_padding_mask`).
    pub key_padding_mask: Option<&'a Tensor>,
    /// A causal mask (PyTorch's `is_causal`; built when no mask is given).
    pub is_causal: bool,
}

impl<'a> EncoderArgs<'a> {
    fn attention(&self) -> AttentionArgs<'a> {
        AttentionArgs {
            key_padding_mask: self.key_padding_mask,
            attn_mask: self.mask,
            need_weights: false,
            average_attn_weights: true,
            is_causal: self.is_causal,
        }
    }
}

/// PyTorch's `nn.TransformerEncoderLayer`.
///
/// ```
/// use taper_nn::TransformerConfig;
/// use taper_tensor::{DType, Device, ModuleT, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let layer = TransformerConfig::new(16, 4).dim_feedforward(32).batch_first(true).encoder_layer(&store)?;
/// let y = layer.forward_t(&Tensor::ones((2, 5, 16), DType::F32, &Device::Cpu)?, false)?;
/// assert_eq!(y.dims(), &[2, 5, 16]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayer {
    config: TransformerConfig,
    self_attn: MultiheadAttention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
}

impl TransformerEncoderLayer {
    /// The configuration it was built with.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The layer on `src` with masks (PyTorch's `forward(src, src_mask, src_key_padding_mask,
    /// is_causal)`).
    pub fn encode(&self, src: &Tensor, args: EncoderArgs<'_>, train: bool) -> Result<Tensor> {
        let p = self.config.dropout;
        let sa = |x: &Tensor| -> Result<Tensor> {
            let (y, _) = self.self_attn.attend(x, x, x, args.attention(), train)?;
            dropout(&y, p, train)
        };
        let ff = |x: &Tensor| -> Result<Tensor> { dropout(&self.ff.forward(x, train)?, p, train) };
        if self.config.norm_first {
            let x = (src + sa(&self.norm1.forward(src)?)?)?;
            &x + ff(&self.norm2.forward(&x)?)?
        } else {
            let x = self.norm1.forward(&(src + sa(src)?)?)?;
            self.norm2.forward(&(&x + ff(&x)?)?)
        }
    }
}

/// Inside a `Sequential`: the layer without masks.
impl ModuleT for TransformerEncoderLayer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.encode(x, EncoderArgs::default(), train)
    }
}

/// What a decoder layer takes besides its inputs (PyTorch's `tgt_mask`, `memory_mask`,
/// `tgt_key_padding_mask`, `memory_key_padding_mask`, `tgt_is_causal`, `memory_is_causal`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DecoderArgs<'a> {
    /// The target's self-attention mask.
    pub tgt_mask: Option<&'a Tensor>,
    /// The cross-attention mask.
    pub memory_mask: Option<&'a Tensor>,
    /// The target's padding mask.
    pub tgt_key_padding_mask: Option<&'a Tensor>,
    /// The memory's padding mask.
    pub memory_key_padding_mask: Option<&'a Tensor>,
    /// A causal self-attention mask.
    pub tgt_is_causal: bool,
    /// A causal cross-attention mask.
    pub memory_is_causal: bool,
}

/// PyTorch's `nn.TransformerDecoderLayer`.
#[derive(Debug, Clone)]
pub struct TransformerDecoderLayer {
    config: TransformerConfig,
    self_attn: MultiheadAttention,
    multihead_attn: MultiheadAttention,
    ff: FeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
}

impl TransformerDecoderLayer {
    /// The configuration it was built with.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The layer on `tgt` attending `memory` (PyTorch's `forward(tgt, memory, …)`).
    pub fn decode(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        args: DecoderArgs<'_>,
        train: bool,
    ) -> Result<Tensor> {
        let p = self.config.dropout;
        let sa = |x: &Tensor| -> Result<Tensor> {
            let a = AttentionArgs {
                key_padding_mask: args.tgt_key_padding_mask,
                attn_mask: args.tgt_mask,
                need_weights: false,
                average_attn_weights: true,
                is_causal: args.tgt_is_causal,
            };
            dropout(&self.self_attn.attend(x, x, x, a, train)?.0, p, train)
        };
        let mha = |x: &Tensor| -> Result<Tensor> {
            let a = AttentionArgs {
                key_padding_mask: args.memory_key_padding_mask,
                attn_mask: args.memory_mask,
                need_weights: false,
                average_attn_weights: true,
                is_causal: args.memory_is_causal,
            };
            dropout(
                &self.multihead_attn.attend(x, memory, memory, a, train)?.0,
                p,
                train,
            )
        };
        let ff = |x: &Tensor| -> Result<Tensor> { dropout(&self.ff.forward(x, train)?, p, train) };
        if self.config.norm_first {
            let x = (tgt + sa(&self.norm1.forward(tgt)?)?)?;
            let x = (&x + mha(&self.norm2.forward(&x)?)?)?;
            &x + ff(&self.norm3.forward(&x)?)?
        } else {
            let x = self.norm1.forward(&(tgt + sa(tgt)?)?)?;
            let x = self.norm2.forward(&(&x + mha(&x)?)?)?;
            self.norm3.forward(&(&x + ff(&x)?)?)
        }
    }
}

/// Inside a `Sequential` (one input): the input is both the target and the memory, without
/// masks. Call [`TransformerDecoderLayer::decode`] to attend another memory.
impl ModuleT for TransformerDecoderLayer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.decode(x, x, DecoderArgs::default(), train)
    }
}

/// PyTorch's `nn.TransformerEncoder`: `num_layers` encoder layers and an optional final
/// layer norm.
#[derive(Debug, Clone)]
pub struct TransformerEncoder {
    config: TransformerConfig,
    layers: Vec<TransformerEncoderLayer>,
    norm: Option<LayerNorm>,
}

impl TransformerEncoder {
    /// The configuration of its layers.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Whether it ends with a layer norm.
    pub fn has_final_norm(&self) -> bool {
        self.norm.is_some()
    }

    /// Every layer on `src` with the same masks, then the final norm.
    pub fn encode(&self, src: &Tensor, args: EncoderArgs<'_>, train: bool) -> Result<Tensor> {
        let mut x = src.clone();
        for layer in &self.layers {
            x = layer.encode(&x, args, train)?;
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

/// Inside a `Sequential`: the stack without masks.
impl ModuleT for TransformerEncoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.encode(x, EncoderArgs::default(), train)
    }
}
