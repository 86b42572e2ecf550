//! `Sequential`: layers applied in order, with children named 0, 1, 2… as in PyTorch.

use candle_core::{Result, Tensor};
use taper_tensor::{ModuleT, ParamStore};

use crate::layers::activation::Activation;
use crate::layers::batch_norm::BatchNorm;
use crate::layers::conv::Conv2d;
use crate::layers::pool::MaxPool2d;
use crate::layers::spec::LayerSpec;

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
    pub(crate) store: ParamStore,
    pub(crate) layers: Vec<Box<dyn ModuleT + Send + Sync>>,
    /// Each layer's type name (`Linear`), for `summary`.
    pub(crate) kinds: Vec<String>,
    /// Each layer's architecture, when it is one of Taper's layers (for model files).
    pub(crate) specs: Vec<Option<LayerSpec>>,
    /// A second handle (same tensors) on each child that can head a fused pooling step
    /// of [`Sequential::step_at`]: a `Conv2d` or a `BatchNorm`.
    heads: Vec<Option<Head>>,
}

/// A child that a max pooling (and ReLU) can be fused into.
#[derive(Clone)]
enum Head {
    /// `cpu/conv_pool.rs`.
    Conv(Conv2d),
    /// `cpu/batch_norm_pool.rs` (BatchNorm2d with affine parameters).
    BatchNorm(BatchNorm),
}

impl Head {
    /// The head of a child, when it is one.
    fn of(layer: &dyn std::any::Any) -> Option<Head> {
        if let Some(c) = layer.downcast_ref::<Conv2d>() {
            return Some(Head::Conv(c.clone()));
        }
        layer
            .downcast_ref::<BatchNorm>()
            .map(|b| Head::BatchNorm(b.clone()))
    }

    /// The head built from `spec` under `store`, when it is one.
    fn built(spec: &LayerSpec, store: &ParamStore) -> crate::error::Result<Option<Head>> {
        if let Some(config) = spec.conv2d_config() {
            return Ok(Some(Head::Conv(Conv2d::on_store(config, store)?)));
        }
        match spec.batch_norm_config() {
            Some(config) => Ok(Some(Head::BatchNorm(BatchNorm::on_store(config, store)?))),
            None => Ok(None),
        }
    }

    /// This child, a `MaxPool2d` and optionally a ReLU as one node; `None` where the fused
    /// kernel does not apply.
    fn forward_max_pooled(
        &self,
        x: &Tensor,
        pool: &MaxPool2d,
        relu: bool,
        train: bool,
    ) -> Result<Option<Tensor>> {
        match self {
            Head::Conv(c) => c.forward_max_pooled(x, pool, relu),
            Head::BatchNorm(b) => b.forward_max_pooled(x, pool, relu, train),
        }
    }
}

/// How the forward pass runs the children from one index on: chosen by
/// [`Sequential::step_at`], the one place that decides.
enum Step<'a> {
    /// The child alone.
    One,
    /// A ReLU then a `MaxPool2d`, run as the pooling then the ReLU.
    PoolThenRelu,
    /// A `Conv2d` then a ReLU (and no pooling): two children as one node, when Taper's CPU
    /// kernels apply.
    ConvRelu(&'a Conv2d),
    /// A `Conv2d` or `BatchNorm`, then a `MaxPool2d` and ReLU in either order or the
    /// `MaxPool2d` alone: `span` children as one node, when Taper's CPU kernels apply.
    Pooled {
        head: &'a Head,
        pool: MaxPool2d,
        relu: bool,
        span: usize,
    },
}

/// The last path segment of a type's name, without generics (`Linear`).
fn short_type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
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
            kinds: Vec::new(),
            specs: Vec::new(),
            heads: Vec::new(),
        }
    }

    /// Builds the next child with the store view named by its index, and appends it.
    pub fn append_with<M, E>(
        self,
        build: impl FnOnce(&ParamStore) -> std::result::Result<M, E>,
    ) -> std::result::Result<Self, E>
    where
        M: ModuleT + Send + Sync + 'static,
    {
        let layer = build(&self.store.sub(self.layers.len()))?;
        Ok(self.append(layer))
    }

    /// Appends a layer that has no parameters (an activation, dropout, flatten); it still
    /// takes an index, as in PyTorch.
    pub fn append<M: ModuleT + Send + Sync + 'static>(mut self, layer: M) -> Self {
        let spec = LayerSpec::of(&layer);
        // A registered custom layer shows its kind's name; any other type its own.
        let kind = match &spec {
            Some(s) => s.kind().to_string(),
            None => short_type_name::<M>().to_string(),
        };
        let head = Head::of(&layer);
        self.push_child(Box::new(layer), kind, spec, head);
        self
    }

    /// Appends a child built from `spec` under `self.store.sub(self.len())` (model files,
    /// ONNX import).
    pub(crate) fn push_built(
        &mut self,
        layer: crate::layers::spec::BoxedLayer,
        spec: LayerSpec,
    ) -> crate::error::Result<()> {
        let head = Head::built(&spec, &self.store.sub(self.layers.len()))?;
        let kind = spec.kind().to_string();
        self.push_child(layer, kind, Some(spec), head);
        Ok(())
    }

    /// The one place children are added: the layer, its kind's name, its architecture and
    /// its handle as a fusion head, in step.
    fn push_child(
        &mut self,
        layer: crate::layers::spec::BoxedLayer,
        kind: String,
        spec: Option<LayerSpec>,
        head: Option<Head>,
    ) {
        self.layers.push(layer);
        self.kinds.push(kind);
        self.specs.push(spec);
        self.heads.push(head);
    }

    /// Whether the first layer (through nested `Sequential`s) is an `Embedding`.
    fn starts_with_embedding(&self) -> bool {
        fn first(spec: Option<&LayerSpec>) -> bool {
            match spec {
                Some(LayerSpec::Embedding { .. }) => true,
                Some(LayerSpec::Sequential { layers }) => first(layers.first()),
                _ => false,
            }
        }
        first(self.specs.first().and_then(|s| s.as_ref()))
    }

    /// A Keras-style summary for inputs of shape `input` (without the batch dimension):
    /// each child with its type, its output shape (batch shown as `None`) and its parameter
    /// count, then the totals. The shapes come from one forward pass of a single zero
    /// example in evaluation mode, without gradients (token id 0, u32, when the model
    /// starts with an `Embedding`).
    ///
    /// As Keras counts its moving statistics, floating-point buffers (BatchNorm's running
    /// mean and variance) count as parameters, non-trainable ones, in each child's count
    /// and in the totals; a last line gives how many of the non-trainable ones are buffers.
    /// Integer buffers (`num_batches_tracked`) are counters, not counted. PyTorch's
    /// `sum(p.numel() for p in model.parameters())` is the total without the buffers.
    ///
    /// ```
    /// use taper_nn::{Activation, Flatten, Linear, Sequential};
    /// use taper_tensor::{DType, Device, ParamStore};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let model = Sequential::new(&store)
    ///     .append(Flatten::default())
    ///     .append_with(|s| Linear::new(784, 256, s))?
    ///     .append(Activation::Relu)
    ///     .append_with(|s| Linear::new(256, 10, s))?;
    /// let summary = model.summary(&[1, 28, 28])?;
    /// let linear = summary.lines().find(|l| l.starts_with(" 1 (Linear)")).unwrap();
    /// assert!(linear.contains("(None, 256)") && linear.ends_with("200,960"));
    /// assert!(summary.contains("Total params: 203,530"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn summary(&self, input: &[usize]) -> crate::error::Result<String> {
        use std::fmt::Write as _;
        let mut dims = vec![1];
        dims.extend(input);
        // A model that starts with an embedding takes token ids (0 is a valid id).
        let dtype = if self.starts_with_embedding() {
            candle_core::DType::U32
        } else {
            self.store.dtype()
        };
        let mut x = Tensor::zeros(dims, dtype, self.store.device())?;
        let rule = "_".repeat(72);
        let double = "=".repeat(72);
        let mut out = format!(
            "Model: \"sequential\"\n{rule}\n {:<31} {:<24} {:>12}\n{double}\n",
            "Layer (type)", "Output Shape", "Param #"
        );
        let group = |v: usize| {
            let s = v.to_string();
            let mut g = String::new();
            for (k, c) in s.chars().enumerate() {
                if k > 0 && (s.len() - k) % 3 == 0 {
                    g.push(',');
                }
                g.push(c);
            }
            g
        };
        let (mut total, mut trainable, mut buffers) = (0usize, 0usize, 0usize);
        for (i, (layer, kind)) in self.layers.iter().zip(&self.kinds).enumerate() {
            x = taper_tensor::no_grad(|| layer.forward_t(&x, false))?;
            let prefix = self.store.sub(i);
            let (mut n, mut t) = (0, 0);
            for e in prefix.entries() {
                let count = e.var.elem_count();
                if e.kind == taper_tensor::ParamKind::Buffer {
                    if e.var.dtype().is_float() {
                        n += count;
                        buffers += count;
                    }
                } else {
                    n += count;
                    if e.is_trainable() {
                        t += count;
                    }
                }
            }
            total += n;
            trainable += t;
            let shape = std::iter::once("None".to_string())
                .chain(x.dims()[1..].iter().map(|d| d.to_string()))
                .collect::<Vec<_>>()
                .join(", ");
            let shape = if x.rank() == 1 {
                "(None,)".to_string()
            } else {
                format!("({shape})")
            };
            let _ = writeln!(
                out,
                " {:<31} {:<24} {:>12}",
                format!("{i} ({kind})"),
                shape,
                group(n)
            );
        }
        let _ = write!(
            out,
            "{double}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n  \
             of which buffers (running statistics): {}\n{rule}\n",
            group(total),
            group(trainable),
            group(total - trainable),
            group(buffers)
        );
        Ok(out)
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

impl Sequential {
    /// How the forward pass runs the children from `i` on. The one place this is decided:
    /// - a `Conv2d` or a `BatchNorm` followed by a ReLU and a `MaxPool2d` (in either order),
    ///   or by a `MaxPool2d` alone, is one node of Taper's CPU kernels
    ///   (`cpu/conv_pool.rs`, `cpu/batch_norm_pool.rs`) when they apply: the full-size
    ///   convolution or normalization output never becomes a tensor;
    /// - any other `Conv2d` followed by a ReLU is one node (`cpu/conv.rs`), whose backward
    ///   masks the gradient by y > 0 as the ReLU node does: the convolution's own output
    ///   never becomes a tensor either;
    /// - a ReLU followed by a `MaxPool2d` runs as the pooling then the ReLU.
    ///
    /// All give the values and gradients of the written order. Max pooling and ReLU
    /// commute: ReLU is monotone and keeps NaN, so each window's maximum and its position
    /// do not change, and a window whose maximum is ≤ 0 passes no gradient either way. The
    /// ReLU then runs on a quarter of the elements (2×2 pooling), with one full-size
    /// gradient tensor fewer. The only difference is the sign of a zero: where candle's
    /// generic ReLU (x·[x > 0], off Taper's f32 CPU path) pools a window of negatives and
    /// zeros to −0, this order may give +0.
    fn step_at(&self, i: usize) -> Step<'_> {
        let spec = |j: usize| self.specs.get(j).and_then(|s| s.as_ref());
        let is_relu = |j: usize| {
            matches!(
                spec(j),
                Some(LayerSpec::Activation {
                    activation: Activation::Relu
                })
            )
        };
        let pool = |j: usize| match spec(j) {
            Some(&LayerSpec::MaxPool2d { kernel, stride }) => Some(MaxPool2d { kernel, stride }),
            _ => None,
        };
        if let Some(Some(head)) = self.heads.get(i) {
            let fused = match (pool(i + 1), pool(i + 2)) {
                (Some(p), _) if is_relu(i + 2) => Some((p, true, 3)),
                (Some(p), _) => Some((p, false, 2)),
                (None, Some(p)) if is_relu(i + 1) => Some((p, true, 3)),
                _ => None,
            };
            if let Some((pool, relu, span)) = fused {
                return Step::Pooled {
                    head,
                    pool,
                    relu,
                    span,
                };
            }
        }
        if let (Some(Some(Head::Conv(conv))), true) = (self.heads.get(i), is_relu(i + 1)) {
            return Step::ConvRelu(conv);
        }
        if is_relu(i) && pool(i + 1).is_some() {
            return Step::PoolThenRelu;
        }
        Step::One
    }
}

impl ModuleT for Sequential {
    /// Each child in turn, except where `Sequential::step_at` runs a convolution or a
    /// normalization with its pooling, or a convolution with its ReLU, as one node, or a
    /// ReLU after the pooling that follows it (same values and gradients, less work).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        let mut i = 0;
        while let Some(layer) = self.layers.get(i) {
            match self.step_at(i) {
                Step::Pooled {
                    head,
                    pool,
                    relu,
                    span,
                } => {
                    if let Some(y) = head.forward_max_pooled(&x, &pool, relu, train)? {
                        x = y;
                        i += span;
                        continue;
                    }
                    x = layer.forward_t(&x, train)?;
                    i += 1;
                }
                Step::ConvRelu(conv) => {
                    if let Some(y) = conv.forward_relu(&x)? {
                        x = y;
                        i += 2;
                        continue;
                    }
                    x = layer.forward_t(&x, train)?;
                    i += 1;
                }
                Step::PoolThenRelu => {
                    x = self.layers[i + 1].forward_t(&x, train)?;
                    x = layer.forward_t(&x, train)?;
                    i += 2;
                }
                Step::One => {
                    x = layer.forward_t(&x, train)?;
                    i += 1;
                }
            }
        }
        Ok(x)
    }
}
