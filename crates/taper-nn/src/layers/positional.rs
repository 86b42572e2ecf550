//! Positions for sequence models: a learned table ([`PositionalEmbedding`], GPT-2's `wpe`),
//! the fixed sinusoids of "Attention Is All You Need" ([`SinusoidalEncoding`]), and rotary
//! embeddings as a function ([`apply_rotary`], RoFormer's, in the GPT-NeoX/LLaMA layout of
//! rotated halves). The first two add to (N, L, D) inputs; a sequence longer than the table
//! is an error naming the layer.

use candle_core::{DType, Result, Tensor};
use taper_tensor::{tracked, Module, ParamStore};

use crate::error::Error;
use crate::init::Init;

/// A learned position table `weight` (max_len, dim), N(0, 1) as an `nn.Embedding`, added to
/// the input: x + weight[0..L]. Inputs are (N, L, dim) or (L, dim).
#[derive(Debug, Clone)]
pub struct PositionalEmbedding {
    weight: Tensor,
}

impl PositionalEmbedding {
    /// A table for sequences of up to `max_len` positions of `dim` features.
    pub fn new(max_len: usize, dim: usize, store: &ParamStore) -> crate::error::Result<Self> {
        crate::error::check("max_len", max_len as f64, max_len > 0, "a positive length")?;
        let init = Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        Ok(Self {
            weight: store.parameter("weight", (max_len, dim), init.init_fn())?,
        })
    }

    /// (max_len, dim).
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.dims()[0], self.weight.dims()[1])
    }

    /// The table, (max_len, dim).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// Checks a (…, L, dim) input against a table of `max_len` positions: L must fit.
fn positions(x: &Tensor, max_len: usize, dim: usize, layer: &str) -> Result<usize> {
    let r = x.rank();
    if r < 2 || x.dims()[r - 1] != dim {
        return Err(
            Error::shape(layer, format!("(N, L, {dim}) or (L, {dim})"), x.dims()).into_candle(),
        );
    }
    let l = x.dims()[r - 2];
    if l > max_len {
        return Err(Error::InvalidValue {
            field: "sequence length",
            value: format!("{l} positions for {layer}"),
            expected: "at most the table's max_len positions",
        }
        .into_candle());
    }
    Ok(l)
}

impl Module for PositionalEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (max_len, dim) = self.dims();
        let layer = format!("PositionalEmbedding({max_len}, {dim})");
        let l = positions(x, max_len, dim, &layer)?;
        x.broadcast_add(&tracked(&self.weight).narrow(0, 0, l)?.to_dtype(x.dtype())?)
    }
}

/// The fixed sinusoidal encoding: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] =
/// cos(p / 10000^(2i/dim)), added to the input (no parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinusoidalEncoding {
    /// The longest sequence.
    pub max_len: usize,
    /// Features (even).
    pub dim: usize,
}

impl SinusoidalEncoding {
    /// For sequences of up to `max_len` positions of `dim` features (even).
    pub fn new(max_len: usize, dim: usize) -> crate::error::Result<Self> {
        crate::error::check(
            "dim",
            dim as f64,
            dim > 0 && dim % 2 == 0,
            "a positive even dim",
        )?;
        Ok(Self { max_len, dim })
    }

    /// The (L, dim) table in `dtype` on `device`.
    pub fn table(&self, l: usize, dtype: DType, device: &candle_core::Device) -> Result<Tensor> {
        let mut v = vec![0f64; l * self.dim];
        for p in 0..l {
            for i in 0..self.dim / 2 {
                let angle = p as f64 / 10000f64.powf(2.0 * i as f64 / self.dim as f64);
                v[p * self.dim + 2 * i] = angle.sin();
                v[p * self.dim + 2 * i + 1] = angle.cos();
            }
        }
        Tensor::from_vec(v, (l, self.dim), device)?.to_dtype(dtype)
    }
}

impl Module for SinusoidalEncoding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let layer = format!("SinusoidalEncoding({}, {})", self.max_len, self.dim);
        let l = positions(x, self.max_len, self.dim, &layer)?;
        x.broadcast_add(&self.table(l, x.dtype(), x.device())?)
    }
}

/// Rotary position embedding of `x` (…, L, D) with D even, positions `offset..offset + L`
/// and frequency base `base` (RoFormer's 10000): each pair (xᵢ, xᵢ₊D/2) of the two halves
/// is rotated by the angle p·base^(−2i/D). Apply it to queries and keys before attention.
///
/// ```
/// use taper_nn::apply_rotary;
/// use taper_tensor::{DType, Device, Tensor};
/// let q = Tensor::ones((2, 4, 6, 8), DType::F32, &Device::Cpu)?; // (N, heads, L, D)
/// let r = apply_rotary(&q, 0, 10000.0)?;
/// assert_eq!(r.dims(), q.dims());
/// // Position 0 is not rotated; later ones are.
/// assert_eq!(r.narrow(2, 0, 1)?.flatten_all()?.to_vec1::<f32>()?, vec![1.0; 2 * 4 * 8]);
/// assert_ne!(r.narrow(2, 1, 1)?.flatten_all()?.to_vec1::<f32>()?, vec![1.0; 2 * 4 * 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply_rotary(x: &Tensor, offset: usize, base: f64) -> Result<Tensor> {
    let r = x.rank();
    if r < 2 || x.dims()[r - 1] % 2 != 0 {
        return Err(Error::shape("apply_rotary", "(…, L, D) with D even", x.dims()).into_candle());
    }
    let (l, d) = (x.dims()[r - 2], x.dims()[r - 1]);
    let half = d / 2;
    let mut cos = vec![0f64; l * half];
    let mut sin = vec![0f64; l * half];
    for p in 0..l {
        for i in 0..half {
            let angle = (offset + p) as f64 * base.powf(-2.0 * i as f64 / d as f64);
            cos[p * half + i] = angle.cos();
            sin[p * half + i] = angle.sin();
        }
    }
    let t = |v: Vec<f64>| -> Result<Tensor> {
        Tensor::from_vec(v, (l, half), x.device())?
            .to_dtype(x.dtype())?
            .repeat((1, 2))
    };
    let (cos, sin) = (t(cos)?, t(sin)?);
    let x1 = x.narrow(r - 1, 0, half)?;
    let x2 = x.narrow(r - 1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], r - 1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}
