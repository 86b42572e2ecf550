//! `MultiheadAttention`: PyTorch's `nn.MultiheadAttention`, with its parameter names,
//! initialization, shapes (`batch_first`) and mask conventions.
//!
//! Parameters: `in_proj_weight` (3E, E) when the keys and values have E features (else
//! `q_proj_weight` (E, E), `k_proj_weight` (E, kdim), `v_proj_weight` (E, vdim)),
//! `in_proj_bias` (3E), `out_proj.weight` (E, E), `out_proj.bias` (E), as PyTorch's
//! `state_dict` names them, so PyTorch's weights load. The attention itself is
//! [`scaled_dot_product_attention`](crate::scaled_dot_product_attention) (one fused graph
//! node on the CPU) unless the weights are asked for.

use candle_core::{DType, Result, Tensor, D};
use taper_tensor::{tracked, Module, ModuleT, ParamStore};

use crate::error::Error;
use crate::init::Init;
use crate::layers::attention::{broadcasts, scaled_dot_product_attention};
use crate::layers::linear::{Linear, LinearConfig};

/// [`MultiheadAttention`]'s configuration: `MultiheadAttentionConfig::new(embed_dim,
/// num_heads)` with PyTorch's defaults (dropout 0, bias, kdim = vdim = embed_dim,
/// `batch_first = false`), each a builder of PyTorch's name, then
/// [`MultiheadAttentionConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiheadAttentionConfig {
    /// E, the model's width.
    pub embed_dim: usize,
    /// Heads; must divide E.
    pub num_heads: usize,
    /// Dropout on the attention probabilities, in training (default 0).
    pub dropout: f64,
    /// Biases on the input and output projections (default true).
    pub bias: bool,
    /// Key features (default E).
    pub kdim: usize,
    /// Value features (default E).
    pub vdim: usize,
    /// Inputs (N, L, E) instead of PyTorch's default (L, N, E) (default false).
    pub batch_first: bool,
}

impl MultiheadAttentionConfig {
    /// `num_heads` heads over `embed_dim` features.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            dropout: 0.0,
            bias: true,
            kdim: embed_dim,
            vdim: embed_dim,
            batch_first: false,
        }
    }

    /// Builder: dropout on the attention probabilities.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Builder: biases on the projections.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builder: the keys' features.
    pub fn kdim(mut self, kdim: usize) -> Self {
        self.kdim = kdim;
        self
    }

    /// Builder: the values' features.
    pub fn vdim(mut self, vdim: usize) -> Self {
        self.vdim = vdim;
        self
    }

    /// Builder: (N, L, E) inputs and outputs.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Builds the layer, checking the configuration (E divisible by the heads, a
    /// probability for the dropout) and initializing as PyTorch does: Xavier-uniform input
    /// projections, zero biases, the output projection as a `Linear`.
    pub fn build(self, store: &ParamStore) -> crate::error::Result<MultiheadAttention> {
        let (e, h) = (self.embed_dim, self.num_heads);
        if h == 0 || e == 0 || e % h != 0 {
            return Err(Error::InvalidValue {
                field: "num_heads",
                value: format!("{h} heads for embed_dim {e}"),
                expected: "a positive number of heads that divides embed_dim",
            });
        }
        crate::error::check(
            "dropout",
            self.dropout,
            (0.0..=1.0).contains(&self.dropout),
            "a probability in [0, 1]",
        )?;
        let xavier = Init::XavierUniform { gain: 1.0 };
        let packed = self.kdim == e && self.vdim == e;
        let weights = if packed {
            Projections::Packed(store.parameter("in_proj_weight", (3 * e, e), xavier.init_fn())?)
        } else {
            Projections::Separate([
                store.parameter("q_proj_weight", (e, e), xavier.init_fn())?,
                store.parameter("k_proj_weight", (e, self.kdim), xavier.init_fn())?,
                store.parameter("v_proj_weight", (e, self.vdim), xavier.init_fn())?,
            ])
        };
        let in_bias = if self.bias {
            Some(store.parameter("in_proj_bias", 3 * e, Init::Zeros.init_fn())?)
        } else {
            None
        };
        let out_proj = LinearConfig::new(e, e)
            .bias(self.bias)
            .build(&store.sub("out_proj"))?;
        if let Some(b) = out_proj.bias() {
            store.var("out_proj.bias")?.set(&b.zeros_like()?)?;
        }
        Ok(MultiheadAttention {
            config: self,
            weights,
            in_bias,
            out_proj,
        })
    }
}

/// The input projections: one packed (3E, E) matrix, or one per input.
#[derive(Debug, Clone)]
enum Projections {
    Packed(Tensor),
    Separate([Tensor; 3]),
}

/// What one call of [`MultiheadAttention::attend`] takes besides its inputs, with
/// PyTorch's meanings; `Default` is none of them, without the weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionArgs<'a> {
    /// (N, S): `true` (nonzero u8) or −∞ where a key is padding, to be ignored.
    pub key_padding_mask: Option<&'a Tensor>,
    /// (L, S) or (N·heads, L, S): `true` (nonzero u8) where a query may **not** attend a
    /// key (PyTorch's convention here, the opposite of `scaled_dot_product_attention`'s),
    /// or a float mask added to the scores.
    pub attn_mask: Option<&'a Tensor>,
    /// Return the attention weights (PyTorch's default is true; Taper's false, since the
    /// fused path does not form them).
    pub need_weights: bool,
    /// With `need_weights`: the mean over the heads (N, L, S), else (N, heads, L, S).
    pub average_attn_weights: bool,
    /// A causal mask: query i attends keys j ≤ i. PyTorch requires `attn_mask` with it (a
    /// hint that the mask is causal); Taper builds the mask when none is given and uses the
    /// given one otherwise.
    pub is_causal: bool,
}

impl<'a> AttentionArgs<'a> {
    /// No masks, no weights.
    pub fn new() -> Self {
        Self {
            average_attn_weights: true,
            ..Self::default()
        }
    }

    /// Builder: the keys' padding mask.
    pub fn key_padding_mask(mut self, mask: &'a Tensor) -> Self {
        self.key_padding_mask = Some(mask);
        self
    }

    /// Builder: the attention mask.
    pub fn attn_mask(mut self, mask: &'a Tensor) -> Self {
        self.attn_mask = Some(mask);
        self
    }

    /// Builder: return the attention weights.
    pub fn need_weights(mut self, on: bool) -> Self {
        self.need_weights = on;
        self
    }

    /// Builder: average the weights over the heads (default true).
    pub fn average_attn_weights(mut self, on: bool) -> Self {
        self.average_attn_weights = on;
        self
    }

    /// Builder: a causal mask.
    pub fn is_causal(mut self, on: bool) -> Self {
        self.is_causal = on;
        self
    }
}

/// PyTorch's `nn.MultiheadAttention` (without `add_bias_kv` and `add_zero_attn`).
///
/// ```
/// use taper_nn::{AttentionArgs, MultiheadAttentionConfig};
/// use taper_tensor::{DType, Device, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let mha = MultiheadAttentionConfig::new(16, 4).batch_first(true).build(&store)?;
/// let x = Tensor::ones((2, 5, 16), DType::F32, &Device::Cpu)?; // (N, L, E)
/// let (y, w) = mha.attend(&x, &x, &x, AttentionArgs::new().need_weights(true).is_causal(true), false)?;
/// assert_eq!((y.dims(), w.unwrap().dims()), (&[2, 5, 16][..], &[2, 5, 5][..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    config: MultiheadAttentionConfig,
    weights: Projections,
    in_bias: Option<Tensor>,
    out_proj: Linear,
}

impl MultiheadAttention {
    /// `num_heads` heads over `embed_dim` features, PyTorch's defaults otherwise.
    pub fn new(
        embed_dim: usize,
        num_heads: usize,
        store: &ParamStore,
    ) -> crate::error::Result<Self> {
        MultiheadAttentionConfig::new(embed_dim, num_heads).build(store)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &MultiheadAttentionConfig {
        &self.config
    }

    fn name(&self) -> String {
        format!(
            "MultiheadAttention({}, {} heads)",
            self.config.embed_dim, self.config.num_heads
        )
    }

    /// Attention of `query` over `key` and `value`: the output, (L, N, E) or (N, L, E) with
    /// `batch_first` (or (L, E) unbatched), and the weights when asked for. `train` turns
    /// dropout on. Inputs and masks of the wrong shape or dtype are errors naming the layer.
    pub fn attend(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        args: AttentionArgs<'_>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let unbatched = query.rank() == 2;
        let batch = |t: &Tensor| -> Result<Tensor> {
            if unbatched {
                t.unsqueeze(0)
            } else if self.config.batch_first {
                Ok(t.clone())
            } else {
                t.transpose(0, 1)
            }
        };
        let (q, k, v) = (batch(query)?, batch(key)?, batch(value)?);
        self.check(&q, &k, &v).map_err(Error::into_candle)?;
        let (n, l, s) = (q.dims()[0], q.dims()[1], k.dims()[1]);
        let (e, h) = (self.config.embed_dim, self.config.num_heads);
        let (qp, kp, vp) = self.project(&q, &k, &v, query.same_shape_and_id(key, value))?;
        // (N, L, E) → (N, heads, L, E/heads)
        let heads = |t: Tensor, len: usize| -> Result<Tensor> {
            t.reshape((n, len, h, e / h))?.transpose(1, 2)?.contiguous()
        };
        let (qh, kh, vh) = (heads(qp, l)?, heads(kp, s)?, heads(vp, s)?);
        let mask = self
            .mask(&args, n, l, s, q.dtype(), q.device())
            .map_err(Error::into_candle)?;
        let p = if train { self.config.dropout } else { 0.0 };
        let causal = args.is_causal && args.attn_mask.is_none();
        let (out, weights) = if args.need_weights {
            let (o, w) = explicit(&qh, &kh, &vh, mask.as_ref(), p, causal)?;
            let w = if args.average_attn_weights {
                w.mean(1)?
            } else {
                w
            };
            (o, Some(w))
        } else {
            let o = scaled_dot_product_attention(&qh, &kh, &vh, mask.as_ref(), p, causal, None)?;
            (o, None)
        };
        // (N, heads, L, E/heads) → (N, L, E), the output projection, the caller's layout.
        let out = out.transpose(1, 2)?.contiguous()?.reshape((n, l, e))?;
        let out = self.out_proj.forward(&out)?;
        let out = if unbatched {
            out.squeeze(0)?
        } else if self.config.batch_first {
            out
        } else {
            out.transpose(0, 1)?
        };
        let weights = match weights {
            Some(w) if unbatched => Some(w.squeeze(0)?),
            w => w,
        };
        Ok((out, weights))
    }

    fn check(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> std::result::Result<(), Error> {
        let c = &self.config;
        let layout = if c.batch_first {
            "(N, L, E)"
        } else {
            "(L, N, E)"
        };
        let fits = |t: &Tensor, features: usize| {
            t.rank() == 3 && t.dims()[2] == features && t.dims()[0] == q.dims()[0]
        };
        if !fits(q, c.embed_dim) {
            return Err(Error::shape(
                self.name(),
                format!(
                    "a query {layout} with E = {} (or (L, E) unbatched)",
                    c.embed_dim
                ),
                q.dims(),
            ));
        }
        if !fits(k, c.kdim) || !fits(v, c.vdim) || k.dims()[1] != v.dims()[1] {
            return Err(Error::shape(
                self.name(),
                format!(
                    "keys with {} and values with {} features, of the query's batch and one length",
                    c.kdim, c.vdim
                ),
                k.dims(),
            ));
        }
        Ok(())
    }

    /// The projected queries, keys and values (N, ·, E); one product when all three are the
    /// same tensor and the weights packed.
    fn project(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        same: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let e = self.config.embed_dim;
        let bias = |i: usize| -> Result<Option<Tensor>> {
            self.in_bias
                .as_ref()
                .map(|b| tracked(b).narrow(0, i * e, e))
                .transpose()
        };
        match &self.weights {
            Projections::Packed(w) if same => {
                let qkv = Linear::from_tensors(tracked(w), self.in_bias.as_ref().map(tracked))
                    .forward(q)?;
                Ok((
                    qkv.narrow(D::Minus1, 0, e)?,
                    qkv.narrow(D::Minus1, e, e)?,
                    qkv.narrow(D::Minus1, 2 * e, e)?,
                ))
            }
            Projections::Packed(w) => {
                let w = tracked(w);
                let proj = |x: &Tensor, i: usize| -> Result<Tensor> {
                    Linear::from_tensors(w.narrow(0, i * e, e)?, bias(i)?).forward(x)
                };
                Ok((proj(q, 0)?, proj(k, 1)?, proj(v, 2)?))
            }
            Projections::Separate(ws) => {
                let proj = |x: &Tensor, i: usize| -> Result<Tensor> {
                    Linear::from_tensors(tracked(&ws[i]), bias(i)?).forward(x)
                };
                Ok((proj(q, 0)?, proj(k, 1)?, proj(v, 2)?))
            }
        }
    }

    /// The key padding and attention masks as one mask for
    /// [`scaled_dot_product_attention`] (u8 "may attend", or additive), broadcastable to
    /// (N, heads, L, S).
    fn mask(
        &self,
        args: &AttentionArgs<'_>,
        n: usize,
        l: usize,
        s: usize,
        dtype: DType,
        dev: &candle_core::Device,
    ) -> std::result::Result<Option<Tensor>, Error> {
        let h = self.config.num_heads;
        let additive = |m: &Tensor, what: &str| -> std::result::Result<Tensor, Error> {
            match m.dtype() {
                DType::U8 => {
                    let neg = Tensor::full(f64::NEG_INFINITY, m.shape(), dev)?.to_dtype(dtype)?;
                    Ok(m.ne(0u8)?.where_cond(&neg, &neg.zeros_like()?)?)
                }
                dt if dt == dtype => Ok(m.clone()),
                dt => Err(Error::DType {
                    layer: format!("{} ({what})", self.name()),
                    expected: format!(
                        "a boolean mask as u8 or a float mask of the input's dtype {dtype:?}"
                    ),
                    actual: format!("{dt:?}"),
                    dims: m.dims().to_vec(),
                }),
            }
        };
        let mut total: Option<Tensor> = None;
        if let Some(m) = args.attn_mask {
            let m4 = match m.dims() {
                [a, b] if (*a, *b) == (l, s) => m.reshape((1, 1, l, s))?,
                [nh, a, b] if (*nh, *a, *b) == (n * h, l, s) => m.reshape((n, h, l, s))?,
                d => {
                    return Err(Error::shape(
                        format!("{} (attn_mask)", self.name()),
                        format!("({l}, {s}) or ({}, {l}, {s})", n * h),
                        d,
                    ))
                }
            };
            total = Some(additive(&m4, "attn_mask")?);
        }
        if let Some(m) = args.key_padding_mask {
            if m.dims() != [n, s] {
                return Err(Error::shape(
                    format!("{} (key_padding_mask)", self.name()),
                    format!("({n}, {s})"),
                    m.dims(),
                ));
            }
            let kpm = additive(&m.reshape((n, 1, 1, s))?, "key_padding_mask")?;
            total = Some(match total {
                Some(t) => t.broadcast_add(&kpm)?,
                None => kpm,
            });
        }
        if let Some(t) = &total {
            debug_assert!(broadcasts(t.dims(), &[n, h, l, s]));
        }
        Ok(total)
    }
}

/// Attention with its weights formed explicitly (PyTorch's `need_weights=True` path): the
/// output and the probabilities after dropout, (N, heads, L, S).
fn explicit(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    dropout_p: f64,
    causal: bool,
) -> Result<(Tensor, Tensor)> {
    let e = q.dims()[3];
    let (l, s) = (q.dims()[2], k.dims()[2]);
    let mut scores = q
        .matmul(&k.transpose(2, 3)?.contiguous()?)?
        .affine(1.0 / (e as f64).sqrt(), 0.0)?;
    if causal {
        let allowed = crate::layers::attention::causal_mask(l, s, q.device())?;
        let neg =
            Tensor::full(f64::NEG_INFINITY, scores.shape(), q.device())?.to_dtype(q.dtype())?;
        scores = allowed
            .broadcast_as(scores.shape())?
            .where_cond(&scores, &neg)?;
    }
    if let Some(m) = mask {
        scores = scores.broadcast_add(m)?;
    }
    let p = crate::layers::activation::softmax(&scores, -1)?;
    let p = crate::layers::dropout::dropout(&p, dropout_p, dropout_p > 0.0)?;
    Ok((p.matmul(v)?, p))
}

/// Inside a `Sequential`: self-attention of the input, no masks.
impl ModuleT for MultiheadAttention {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.attend(x, x, x, AttentionArgs::new(), train)?.0)
    }
}

/// Whether three tensors are one (self-attention): the same tensor id.
trait SameTensor {
    fn same_shape_and_id(&self, a: &Tensor, b: &Tensor) -> bool;
}

impl SameTensor for Tensor {
    fn same_shape_and_id(&self, a: &Tensor, b: &Tensor) -> bool {
        self.id() == a.id() && self.id() == b.id()
    }
}
