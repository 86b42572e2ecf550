//! `Linear`: y = x·Wᵀ + b, PyTorch's `nn.Linear` with its names, layout and default init.

use candle_core::{Result, Tensor};
use taper_tensor::{tracked, Module, ParamStore};

use crate::error::Error;
use crate::init::Init;

/// [`Linear`]'s configuration: `LinearConfig::new(in_features, out_features)` with
/// PyTorch's default `bias=True`, changed with [`LinearConfig::bias`], then
/// [`LinearConfig::build`].
///
/// ```
/// use taper_nn::LinearConfig;
/// use taper_tensor::{DType, Device, ParamStore};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let fc = LinearConfig::new(8, 2).bias(false).build(&store.sub("fc"))?;
/// assert_eq!(store.names(), ["fc.weight"]);
/// # let _ = fc;
/// # Ok::<(), taper_nn::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearConfig {
    /// Input size.
    pub in_features: usize,
    /// Output size.
    pub out_features: usize,
    /// Whether to learn an additive bias (default true).
    pub bias: bool,
}

impl LinearConfig {
    /// A layer from `in_features` to `out_features`, with bias.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Self {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// Builder: learn a bias or not (PyTorch's `bias`).
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builds the layer, registering `weight` (out_features, in_features) and `bias`
    /// (out_features) in `store`, initialized as PyTorch does: U(±1/√in_features) for both.
    pub fn build(self, store: &ParamStore) -> crate::error::Result<Linear> {
        let (i, o) = (self.in_features, self.out_features);
        let weight = store.parameter("weight", (o, i), Init::pytorch_default_weight().init_fn())?;
        let bias = if self.bias {
            Some(store.parameter("bias", o, Init::pytorch_default_bias(i).init_fn())?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

/// A fully connected layer. `weight` has shape (out_features, in_features) and `bias`
/// (out_features), as in PyTorch; the input is (*, in_features).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// This layer's architecture, for model files.
    pub fn spec(&self) -> crate::layers::spec::LayerSpec {
        let (out_features, in_features) = self.weight.dims2().unwrap_or((0, 0));
        crate::layers::spec::LayerSpec::Linear {
            in_features,
            out_features,
            bias: self.bias.is_some(),
        }
    }

    /// A layer with bias, registered as `weight` and `bias` in `store`, initialized as
    /// PyTorch does: U(±1/√in_features) for both (`LinearConfig::new(i, o).build(store)`).
    ///
    /// ```
    /// use taper_nn::Linear;
    /// use taper_tensor::{Module, ParamStore, Tensor, DType, Device};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let fc = Linear::new(784, 10, &store.sub("fc"))?;
    /// assert_eq!(store.names(), ["fc.weight", "fc.bias"]);
    /// let y = fc.forward(&Tensor::zeros((32, 784), DType::F32, &Device::Cpu)?)?;
    /// assert_eq!(y.dims(), &[32, 10]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        in_features: usize,
        out_features: usize,
        store: &ParamStore,
    ) -> crate::error::Result<Self> {
        LinearConfig::new(in_features, out_features).build(store)
    }

    /// A layer over existing tensors (weight (out, in), optional bias (out)).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The weight, (out_features, in_features).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Input size.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Output size.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (i, o) = (self.in_features(), self.out_features());
        if x.rank() == 0 || x.dims()[x.rank() - 1] != i {
            let layer = format!("Linear({i} -> {o})");
            return Err(Error::shape(layer, format!("(*, {i})"), x.dims()).into_candle());
        }
        if let Some(b) = &self.bias {
            // On the CPU's training path, one graph node that skips the data's gradient.
            if x.device().is_cpu()
                && taper_tensor::is_grad_enabled()
                && taper_tensor::fast_kernels_enabled()
            {
                return crate::cpu::dense::linear(x, &self.weight, b);
            }
        }
        let w = tracked(&self.weight).t()?;
        let y = match x.rank() {
            // One sample without a batch dimension, as PyTorch accepts.
            1 => x.unsqueeze(0)?.matmul(&w)?.squeeze(0)?,
            2 => x.matmul(&w)?,
            _ => x.broadcast_matmul(&w)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&tracked(b)),
            None => Ok(y),
        }
    }
}
