//! `Sequential`: layers applied in order, with children named 0, 1, 2… as in PyTorch.

use candle_core::{Result, Tensor};
use taper_tensor::{ModuleT, ParamStore};

/// A chain of layers. Each child registers its parameters under its index, so
/// `Sequential(Linear, ReLU, Linear)` has `0.weight`, `0.bias`, `2.weight`, `2.bias`.
///
/// ```
/// use taper_nn::{Activation, Linear, Sequential};
/// use taper_tensor::{ModuleT, ParamStore, Tensor, DType, Device};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let model = Sequential::new(&store)
///     .append_with(|s| Linear::new(784, 256, s))?
///     .append(Activation::Relu)
///     .append_with(|s| Linear::new(256, 10, s))?;
/// assert_eq!(store.names(), ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// let logits = model.forward_t(&Tensor::zeros((8, 784), DType::F32, &Device::Cpu)?, true)?;
/// assert_eq!(logits.dims(), &[8, 10]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sequential {
    store: ParamStore,
    layers: Vec<Box<dyn ModuleT + Send + Sync>>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequential")
            .field("prefix", &self.store.prefix())
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Sequential {
    /// An empty chain whose children register under `store`.
    pub fn new(store: &ParamStore) -> Self {
        Self {
            store: store.clone(),
            layers: Vec::new(),
        }
    }

    /// Builds the next child with the store view named by its index, and appends it.
    pub fn append_with<M, E>(
        mut self,
        build: impl FnOnce(&ParamStore) -> std::result::Result<M, E>,
    ) -> std::result::Result<Self, E>
    where
        M: ModuleT + Send + Sync + 'static,
    {
        let layer = build(&self.store.sub(self.layers.len()))?;
        self.layers.push(Box::new(layer));
        Ok(self)
    }

    /// Appends a layer that has no parameters (an activation, dropout, flatten); it still
    /// takes an index, as in PyTorch.
    pub fn append<M: ModuleT + Send + Sync + 'static>(mut self, layer: M) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when there are no children.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl ModuleT for Sequential {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward_t(&x, train)?;
        }
        Ok(x)
    }
}
