//! `LayerNorm`: normalization over the trailing dimensions, built from differentiable ops.
//!
//! candle-nn's fused `layer_norm` cuts the gradient, so it is not used here.

use candle_core::{Result, Tensor};
use taper_tensor::{tracked, Module, ParamStore};

use crate::error::check;
use crate::error::Error;
use crate::init::Init;

/// PyTorch's `nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True)`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    normalized_shape: Vec<usize>,
    eps: f64,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
}

impl LayerNorm {
    /// This layer's architecture, for model files.
    pub fn spec(&self) -> crate::layers::spec::LayerSpec {
        crate::layers::spec::LayerSpec::LayerNorm {
            normalized_shape: self.normalized_shape.clone(),
            eps: self.eps,
            elementwise_affine: self.weight.is_some(),
            bias: self.bias.is_some() || self.weight.is_none(),
        }
    }

    /// Normalizes over the last dimensions given by `normalized_shape`, with a learned
    /// `weight` (ones) and `bias` (zeros), eps 1e-5
    /// (`LayerNormConfig::new(normalized_shape).build(store)`).
    pub fn new(normalized_shape: &[usize], store: &ParamStore) -> crate::error::Result<Self> {
        LayerNormConfig::new(normalized_shape).build(store)
    }
}

/// [`LayerNorm`]'s configuration: `LayerNormConfig::new(normalized_shape)` with PyTorch's
/// defaults (eps 1e-5, elementwise affine), each a builder of PyTorch's name, then
/// [`LayerNormConfig::build`].
///
/// ```
/// use taper_nn::LayerNormConfig;
/// use taper_tensor::{DType, Device, ParamStore};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let ln = LayerNormConfig::new(&[64]).eps(1e-6).elementwise_affine(false).build(&store)?;
/// assert!(store.is_empty());
/// # let _ = ln;
/// # Ok::<(), taper_nn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormConfig {
    /// The normalized trailing shape.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance (default 1e-5).
    pub eps: f64,
    /// Learn a scale and shift (default true).
    pub elementwise_affine: bool,
    /// With `elementwise_affine`, learn the shift too (default true; PyTorch's `bias`).
    pub bias: bool,
}

impl LayerNormConfig {
    /// Normalization over the trailing dimensions `normalized_shape`.
    pub fn new(normalized_shape: &[usize]) -> Self {
        Self {
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
        }
    }

    /// Builder: ε, added to the variance.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Builder: learn a scale `weight` and shift `bias` or not.
    pub fn elementwise_affine(mut self, on: bool) -> Self {
        self.elementwise_affine = on;
        self
    }

    /// Builder: learn the shift `bias` or not (with `elementwise_affine`).
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    /// Builds the layer, checking the configuration and registering `weight` and `bias`.
    pub fn build(self, store: &ParamStore) -> crate::error::Result<LayerNorm> {
        let eps = self.eps;
        check("eps", eps, eps > 0.0, "eps > 0")?;
        let shape = self.normalized_shape;
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::InvalidValue {
                field: "normalized_shape",
                value: format!("{shape:?}"),
                expected: "a non-empty shape of positive sizes",
            });
        }
        let weight = if self.elementwise_affine {
            Some(store.parameter("weight", shape.clone(), Init::Ones.init_fn())?)
        } else {
            None
        };
        let bias = if self.elementwise_affine && self.bias {
            Some(store.parameter("bias", shape.clone(), Init::Zeros.init_fn())?)
        } else {
            None
        };
        Ok(LayerNorm {
            normalized_shape: shape,
            eps,
            weight,
            bias,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.normalized_shape.len();
        let dims = x.dims();
        if dims.len() < k || dims[dims.len() - k..] != self.normalized_shape[..] {
            let layer = format!("LayerNorm({:?})", self.normalized_shape);
            return Err(
                Error::shape(layer, format!("(*, {:?})", self.normalized_shape), dims)
                    .into_candle(),
            );
        }
        let d: usize = self.normalized_shape.iter().product();
        // On the CPU in f32/f64, one node each way.
        let affine = match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => Some(Some((tracked(w), tracked(b)))),
            (None, None) => Some(None),
            _ => None,
        };
        if let Some(affine) = affine {
            let params = affine.as_ref().map(|(w, b)| (w, b));
            if let Some(y) = crate::cpu::layer_norm::layer_norm(x, d, self.eps, params)? {
                return Ok(y);
            }
        }
        let x2 = x.reshape((x.elem_count() / d, d))?;
        let mean = x2.mean_keepdim(1)?;
        let centered = x2.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(1)?;
        let mut y = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        if let Some(w) = &self.weight {
            y = y.broadcast_mul(&tracked(w).reshape((1, d))?)?;
        }
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&tracked(b).reshape((1, d))?)?;
        }
        y.reshape(dims)
    }
}
