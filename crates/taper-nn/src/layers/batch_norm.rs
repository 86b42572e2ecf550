//! Batch normalization: PyTorch's `BatchNorm1d` and `BatchNorm2d`.
//!
//! Training normalizes with the batch statistics (biased variance) and updates the running
//! statistics with momentum 0.1 and the *unbiased* batch variance, exactly as PyTorch;
//! evaluation uses the running statistics. `running_mean`, `running_var` and
//! `num_batches_tracked` are buffers: saved with the model, never optimized.
//!
//! On the CPU, f32 and f64 inputs take Taper's own kernel (`cpu/batch_norm.rs`: one node,
//! two passes forward and two backward, sums in f64); other dtypes and devices, and
//! everything inside [`taper_tensor::with_generic_kernels`], take candle's generic ops.

use candle_core::{DType, Result, Tensor, Var};
use taper_tensor::{tracked, ModuleT, ParamStore};

use crate::cpu::affine_kernel_applies;
use crate::cpu::batch_norm as kernel;
use crate::cpu::batch_norm_pool::batch_norm_max_pool2d;
use crate::cpu::conv_pool::Pooling;
use crate::error::check;
use crate::error::Error;
use crate::init::Init;
use crate::layers::pool::MaxPool2d;

/// [`BatchNorm`]'s configuration: `BatchNormConfig::new_1d(num_features)` (PyTorch's
/// `BatchNorm1d`) or `new_2d` (`BatchNorm2d`), with PyTorch's defaults for the rest, each a
/// builder of PyTorch's name, then [`BatchNormConfig::build`].
///
/// ```
/// use taper_nn::BatchNormConfig;
/// use taper_tensor::{DType, Device, ParamStore};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let bn = BatchNormConfig::new_2d(16).momentum(0.01).build(&store)?;
/// assert_eq!(store.names(), ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
/// # let _ = bn;
/// # Ok::<(), taper_nn::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// 1 for `BatchNorm1d` (inputs (N, C) or (N, C, L)), 2 for `BatchNorm2d` ((N, C, H, W)).
    pub rank: u8,
    /// Features (channels), C.
    pub num_features: usize,
    /// Added to the variance for stability (default 1e-5).
    pub eps: f64,
    /// Weight of the new batch in the running statistics (default 0.1).
    pub momentum: f64,
    /// Whether to learn a scale `weight` and shift `bias` (default true).
    pub affine: bool,
}

impl BatchNormConfig {
    /// PyTorch's `BatchNorm1d(num_features)`: inputs (N, C) or (N, C, L).
    pub fn new_1d(num_features: usize) -> Self {
        Self::of_rank(1, num_features)
    }

    /// PyTorch's `BatchNorm2d(num_features)`: inputs (N, C, H, W).
    pub fn new_2d(num_features: usize) -> Self {
        Self::of_rank(2, num_features)
    }

    fn of_rank(rank: u8, num_features: usize) -> Self {
        Self {
            rank,
            num_features,
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
        }
    }

    /// Builder: ε, added to the variance.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Builder: the weight of the new batch in the running statistics.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Builder: learn a scale and shift or not.
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }

    /// Builds the layer: checks the configuration (naming the field at fault) and registers
    /// `weight` and `bias` (when affine) and the buffers `running_mean`, `running_var` and
    /// `num_batches_tracked` in `store`.
    pub fn build(self, store: &ParamStore) -> crate::error::Result<BatchNorm> {
        let (name, ranks) = self.kind()?;
        let eps = self.eps;
        check("eps", eps, eps > 0.0 && eps.is_finite(), "a finite eps > 0")?;
        let m = self.momentum;
        check(
            "momentum",
            m,
            (0.0..=1.0).contains(&m),
            "momentum in [0, 1]",
        )?;
        let c = self.num_features;
        let (weight, bias) = if self.affine {
            (
                Some(store.parameter("weight", c, Init::Ones.init_fn())?),
                Some(store.parameter("bias", c, Init::Zeros.init_fn())?),
            )
        } else {
            (None, None)
        };
        Ok(BatchNorm {
            name,
            ranks,
            config: self,
            weight,
            bias,
            running_mean: store.buffer("running_mean", c, Init::Zeros.init_fn())?,
            running_var: store.buffer("running_var", c, Init::Ones.init_fn())?,
            num_batches_tracked: store.buffer("num_batches_tracked", (), |s, _, d| {
                Ok(Tensor::zeros(s, DType::I64, d)?)
            })?,
        })
    }
}

impl BatchNormConfig {
    /// The layer's name and the input ranks it takes, from `rank`.
    fn kind(&self) -> crate::error::Result<(&'static str, &'static [usize])> {
        match self.rank {
            1 => Ok(("BatchNorm1d", &[2, 3])),
            2 => Ok(("BatchNorm2d", &[4])),
            r => Err(Error::InvalidValue {
                field: "rank",
                value: r.to_string(),
                expected: "1 (BatchNorm1d) or 2 (BatchNorm2d)",
            }),
        }
    }
}

/// Batch normalization over the channel dimension 1 of (N, C), (N, C, L) or (N, C, H, W).
#[doc(alias = "BatchNorm1d")]
#[doc(alias = "BatchNorm2d")]
#[derive(Debug, Clone)]
pub struct BatchNorm {
    name: &'static str,
    ranks: &'static [usize],
    config: BatchNormConfig,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
}

impl BatchNorm {
    /// This layer's architecture, for model files.
    pub fn spec(&self) -> crate::layers::spec::LayerSpec {
        crate::layers::spec::LayerSpec::BatchNorm {
            rank: self.config.rank,
            num_features: self.config.num_features,
            eps: self.config.eps,
            momentum: self.config.momentum,
            affine: self.config.affine,
        }
    }

    /// `BatchNorm1d(num_features)` with PyTorch's defaults: inputs (N, C) or (N, C, L)
    /// (`BatchNormConfig::new_1d(num_features).build(store)`).
    pub fn new_1d(num_features: usize, store: &ParamStore) -> crate::error::Result<Self> {
        BatchNormConfig::new_1d(num_features).build(store)
    }

    /// `BatchNorm2d(num_features)` with PyTorch's defaults: inputs (N, C, H, W)
    /// (`BatchNormConfig::new_2d(num_features).build(store)`).
    pub fn new_2d(num_features: usize, store: &ParamStore) -> crate::error::Result<Self> {
        BatchNormConfig::new_2d(num_features).build(store)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &BatchNormConfig {
        &self.config
    }

    /// The running mean buffer.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance buffer.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// How many training batches updated the running statistics.
    pub fn num_batches_tracked(&self) -> Result<i64> {
        self.num_batches_tracked.as_tensor().to_scalar::<i64>()
    }

    /// The layer `config` built under `store`, from the parameters and buffers `store`
    /// holds: a second handle on the same tensors (for `Sequential`'s fused path).
    pub(crate) fn on_store(
        config: BatchNormConfig,
        store: &ParamStore,
    ) -> crate::error::Result<BatchNorm> {
        let (name, ranks) = config.kind()?;
        let (weight, bias) = if config.affine {
            let t = |n: &str| Ok::<_, crate::error::Error>(store.var(n)?.as_tensor().clone());
            (Some(t("weight")?), Some(t("bias")?))
        } else {
            (None, None)
        };
        Ok(BatchNorm {
            name,
            ranks,
            config,
            weight,
            bias,
            running_mean: store.var("running_mean")?,
            running_var: store.var("running_var")?,
            num_batches_tracked: store.var("num_batches_tracked")?,
        })
    }

    /// The statistics the CPU kernels normalize `x` with: the batch's (updating the running
    /// ones) when training, the running ones otherwise.
    fn kernel_normalization(
        &self,
        x: &Tensor,
        geometry: &kernel::Geometry,
        train: bool,
    ) -> Result<kernel::Normalization> {
        let (mean, var) = if train {
            let st = kernel::batch_stats(x, geometry)?;
            let (mean, var): (Vec<f64>, Vec<f64>) = st.into_iter().unzip();
            let as_tensor = |v: &[f64]| Tensor::new(v, x.device())?.to_dtype(x.dtype());
            let m = geometry.n * geometry.s;
            self.update_running(&as_tensor(&mean)?, &as_tensor(&var)?, m)?;
            (mean, var)
        } else {
            let read = |v: &Var| v.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>();
            (read(&self.running_mean)?, read(&self.running_var)?)
        };
        let eps = self.config.eps;
        Ok(kernel::Normalization {
            inv_std: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
            mean,
            batch_stats: train,
        })
    }

    /// This normalization followed by `pool` and, when `relu`, a ReLU, as one node of
    /// Taper's CPU kernels (`cpu/batch_norm_pool.rs`); `None` where that does not apply
    /// (not BatchNorm2d with affine parameters, other devices and dtypes, generic kernels,
    /// shapes that do not fit, fewer than two values per channel in training). The caller
    /// then runs the layers one by one, which also reports any error. The running
    /// statistics are updated only when the fused node runs.
    pub(crate) fn forward_max_pooled(
        &self,
        x: &Tensor,
        pool: &MaxPool2d,
        relu: bool,
        train: bool,
    ) -> Result<Option<Tensor>> {
        let c = self.config.num_features;
        let (Some(w), Some(b)) = (&self.weight, &self.bias) else {
            return Ok(None);
        };
        if self.ranks != [4] || x.rank() != 4 || x.dims()[1] != c || !x.dtype().is_float() {
            return Ok(None);
        }
        let (n, _, h, wd) = x.dims4()?;
        if train && n * h * wd <= 1 {
            return Ok(None);
        }
        let geometry = kernel::Geometry { n, c, s: h * wd };
        let pooling = Pooling {
            kernel: pool.kernel,
            stride: pool.stride,
            relu,
        };
        let norm = || self.kernel_normalization(x, &geometry, train);
        batch_norm_max_pool2d(x, norm, (&tracked(w), &tracked(b)), pooling)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = self.config.momentum;
        let unbiased = var.affine(n as f64 / (n - 1) as f64, 0.0)?;
        let blend = |run: &Var, batch: &Tensor| -> Result<()> {
            let new = (run.as_tensor().affine(1.0 - m, 0.0)? + batch.affine(m, 0.0)?)?;
            run.set(&new.to_dtype(run.dtype())?)
        };
        blend(&self.running_mean, mean)?;
        blend(&self.running_var, &unbiased)?;
        let t = self.num_batches_tracked.as_tensor();
        self.num_batches_tracked
            .set(&(t.to_dtype(DType::F64)? + 1.0)?.to_dtype(DType::I64)?)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.config.num_features;
        let dims = x.dims();
        if !self.ranks.contains(&x.rank()) || dims[1] != c {
            let expected = match self.ranks {
                [4] => format!("(N, {c}, H, W)"),
                _ => format!("(N, {c}) or (N, {c}, L)"),
            };
            return Err(Error::shape(format!("{}({c})", self.name), expected, dims).into_candle());
        }
        if !x.dtype().is_float() {
            let msg = format!(
                "{}({c}): expected a floating-point input, got {:?}",
                self.name,
                x.dtype()
            );
            return Err(candle_core::Error::Msg(msg));
        }
        // View as (N, C, S) and reduce over N and S.
        let n = dims[0];
        let s: usize = dims[2..].iter().product();
        if train && n * s <= 1 {
            let msg = format!("{}: expected more than 1 value per channel when training, got input of shape {dims:?}", self.name);
            return Err(candle_core::Error::Msg(msg));
        }
        let params = match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => Some((tracked(w), tracked(b))),
            _ => None,
        };
        let params_ref = params.as_ref().map(|(w, b)| (w, b));
        if affine_kernel_applies(x, params_ref) {
            let geometry = kernel::Geometry { n, c, s };
            let norm = self.kernel_normalization(x, &geometry, train)?;
            return kernel::batch_norm(x, geometry, norm, params_ref);
        }
        let x3 = x.reshape((n, c, s))?;
        let (mean, var) = if train {
            let mean = x3.mean_keepdim(2)?.mean_keepdim(0)?;
            let var = x3
                .broadcast_sub(&mean)?
                .sqr()?
                .mean_keepdim(2)?
                .mean_keepdim(0)?;
            self.update_running(
                &mean.detach().flatten_all()?,
                &var.detach().flatten_all()?,
                n * s,
            )?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().detach().reshape((1, c, 1))?,
                self.running_var.as_tensor().detach().reshape((1, c, 1))?,
            )
        };
        let mut y = x3
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.config.eps)?.sqrt()?)?;
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            y = y
                .broadcast_mul(&tracked(w).reshape((1, c, 1))?)?
                .broadcast_add(&tracked(b).reshape((1, c, 1))?)?;
        }
        y.reshape(dims)
    }
}
