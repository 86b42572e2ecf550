//! `RMSNorm`: x / √(mean(x²) + ε) · weight over the trailing dimensions, PyTorch's
//! `nn.RMSNorm(normalized_shape, eps=None, elementwise_affine=True)`, built from
//! differentiable ops. With no ε given, PyTorch's default is the machine epsilon of the
//! input's dtype; so is Taper's.

use candle_core::{DType, Result, Tensor};
use taper_tensor::{tracked, Module, ParamStore};

use crate::error::Error;
use crate::init::Init;

/// [`RmsNorm`]'s configuration: `RmsNormConfig::new(normalized_shape)` with PyTorch's
/// defaults (ε the dtype's machine epsilon, a learned `weight`), then
/// [`RmsNormConfig::build`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmsNormConfig {
    /// The normalized trailing shape.
    pub normalized_shape: Vec<usize>,
    /// ε; `None` (default) is the input dtype's machine epsilon, as PyTorch.
    pub eps: Option<f64>,
    /// A learned scale `weight` (default true).
    pub elementwise_affine: bool,
}

impl RmsNormConfig {
    /// Normalization over the trailing dimensions `normalized_shape`.
    pub fn new(normalized_shape: &[usize]) -> Self {
        Self {
            normalized_shape: normalized_shape.to_vec(),
            eps: None,
            elementwise_affine: true,
        }
    }

    /// Builder: ε.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = Some(eps);
        self
    }

    /// Builder: a learned scale or not.
    pub fn elementwise_affine(mut self, on: bool) -> Self {
        self.elementwise_affine = on;
        self
    }

    /// Builds the layer, checking the shape and ε, registering `weight` (ones).
    pub fn build(self, store: &ParamStore) -> crate::error::Result<RmsNorm> {
        if self.normalized_shape.is_empty() || self.normalized_shape.contains(&0) {
            return Err(Error::InvalidValue {
                field: "normalized_shape",
                value: format!("{:?}", self.normalized_shape),
                expected: "a non-empty shape of positive sizes",
            });
        }
        if let Some(e) = self.eps {
            crate::error::check("eps", e, e > 0.0 && e.is_finite(), "a finite eps > 0")?;
        }
        let weight = if self.elementwise_affine {
            let shape = self.normalized_shape.clone();
            Some(store.parameter("weight", shape, Init::Ones.init_fn())?)
        } else {
            None
        };
        Ok(RmsNorm {
            config: self,
            weight,
        })
    }
}

/// PyTorch's `nn.RMSNorm`.
///
/// ```
/// use taper_nn::RmsNorm;
/// use taper_tensor::{DType, Device, Module, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let norm = RmsNorm::new(&[4], &store)?;
/// let y = norm.forward(&Tensor::new(&[[2f32, 2., 2., 2.]], &Device::Cpu)?)?;
/// assert!((y.to_vec2::<f32>()?[0][0] - 1.0).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RmsNorm {
    config: RmsNormConfig,
    weight: Option<Tensor>,
}

impl RmsNorm {
    /// `nn.RMSNorm(normalized_shape)` with PyTorch's defaults.
    pub fn new(normalized_shape: &[usize], store: &ParamStore) -> crate::error::Result<Self> {
        RmsNormConfig::new(normalized_shape).build(store)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RmsNormConfig {
        &self.config
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shape = &self.config.normalized_shape;
        let k = shape.len();
        let dims = x.dims();
        if dims.len() < k || dims[dims.len() - k..] != shape[..] {
            let layer = format!("RMSNorm({shape:?})");
            return Err(Error::shape(layer, format!("(*, {shape:?})"), dims).into_candle());
        }
        let eps = self.config.eps.unwrap_or(match x.dtype() {
            DType::F64 => f64::EPSILON,
            DType::F32 => f32::EPSILON as f64,
            DType::BF16 => 0.0078125,
            _ => 0.0009765625, // f16
        });
        let d: usize = shape.iter().product();
        let x2 = x.reshape((x.elem_count() / d, d))?;
        let rms = (x2.sqr()?.mean_keepdim(1)? + eps)?.sqrt()?;
        let mut y = x2.broadcast_div(&rms)?;
        if let Some(w) = &self.weight {
            y = y.broadcast_mul(&tracked(w).reshape((1, d))?)?;
        }
        y.reshape(dims)
    }
}
