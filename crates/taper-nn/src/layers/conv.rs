//! `Conv2d`: 2-D convolution with PyTorch's parameter names, layout and default init.
//!
//! On the CPU, f32 and f64 inputs take Taper's own kernel (im2col and gemm, one autograd
//! node with a hand-written backward that skips the data batch's gradient; see
//! `cpu/conv.rs`), in training and in evaluation alike. Other dtypes and devices (CUDA) take
//! candle's generic `conv2d`, and so does everything inside
//! [`taper_tensor::with_generic_kernels`]. Both compute the same function.

use candle_core::{Result, Tensor};
use taper_tensor::{tracked, Module, ParamStore};

use crate::cpu::conv::{conv2d, Geometry};
use crate::cpu::conv_pool::{conv2d_max_pool2d, Pooling};
use crate::error::Error;
use crate::init::{fans, Init};
use crate::layers::pool::MaxPool2d;

/// [`Conv2d`]'s configuration: `Conv2dConfig::new(in_channels, out_channels, kernel)`
/// with PyTorch's defaults for the rest (stride 1, padding 0, dilation 1, groups 1, bias),
/// each a builder of PyTorch's name, then [`Conv2dConfig::build`]. Stride, padding and
/// dilation apply to both spatial dimensions (candle's convolution takes one value for
/// each).
///
/// ```
/// use taper_nn::Conv2dConfig;
/// use taper_tensor::{DType, Device, Module, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let conv = Conv2dConfig::new(1, 8, (3, 3)).stride(2).padding(1).build(&store)?;
/// let y = conv.forward(&Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?)?;
/// assert_eq!(y.dims(), &[2, 8, 14, 14]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel (height, width).
    pub kernel: (usize, usize),
    /// Step between windows (default 1).
    pub stride: usize,
    /// Zero padding on every side (default 0).
    pub padding: usize,
    /// Spacing between kernel elements (default 1).
    pub dilation: usize,
    /// Number of channel groups (default 1).
    pub groups: usize,
    /// Whether to learn a bias (default true).
    pub bias: bool,
}

impl Conv2dConfig {
    /// A convolution from `in_channels` to `out_channels` with a `kernel` of (kh, kw).
    pub fn new(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }

    /// Builder: the step between windows.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Builder: zero padding on every side.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Builder: the spacing between kernel elements.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Builder: the number of channel groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Builder: learn a bias or not.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builds the layer: checks the configuration (naming the field at fault) and registers
    /// `weight` (out, in/groups, kh, kw) and `bias` (out) in `store`, initialized as
    /// PyTorch does.
    pub fn build(self, store: &ParamStore) -> crate::error::Result<Conv2d> {
        let g = self.groups;
        for (field, v) in [
            ("kernel height", self.kernel.0),
            ("kernel width", self.kernel.1),
            ("stride", self.stride),
            ("dilation", self.dilation),
            ("groups", g),
        ] {
            crate::error::check(field, v as f64, v > 0, "a positive integer")?;
        }
        if self.in_channels % g != 0 || self.out_channels % g != 0 {
            return Err(Error::InvalidValue {
                field: "groups",
                value: g.to_string(),
                expected: "a divisor of in_channels and out_channels",
            });
        }
        let shape = (
            self.out_channels,
            self.in_channels / g,
            self.kernel.0,
            self.kernel.1,
        );
        let weight = store.parameter("weight", shape, Init::pytorch_default_weight().init_fn())?;
        let bias = if self.bias {
            let (fan_in, _) = fans(weight.dims())?;
            Some(store.parameter(
                "bias",
                self.out_channels,
                Init::pytorch_default_bias(fan_in).init_fn(),
            )?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            config: self,
        })
    }
}

/// `nn.Conv2d`: weight (out, in/groups, kh, kw), bias (out); input (N, in, H, W).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    /// This layer's architecture, for model files.
    pub fn spec(&self) -> crate::layers::spec::LayerSpec {
        let c = self.config;
        crate::layers::spec::LayerSpec::Conv2d {
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: c.kernel,
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            groups: c.groups,
            bias: c.bias,
        }
    }

    /// A convolution with a `kernel` of (kh, kw) and PyTorch's defaults for the rest
    /// (`Conv2dConfig::new(in, out, kernel).build(store)`).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        store: &ParamStore,
    ) -> crate::error::Result<Self> {
        Conv2dConfig::new(in_channels, out_channels, kernel).build(store)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// The layer `config` built under `store`, from the parameters `store` holds: a second
    /// handle on the same weights (for `Sequential`'s fused path).
    pub(crate) fn on_store(
        config: Conv2dConfig,
        store: &ParamStore,
    ) -> crate::error::Result<Conv2d> {
        let weight = store.var("weight")?.as_tensor().clone();
        let bias = match config.bias {
            true => Some(store.var("bias")?.as_tensor().clone()),
            false => None,
        };
        Ok(Conv2d {
            weight,
            bias,
            config,
        })
    }

    /// The shapes of this convolution of `x`; `None` when `x` is not (N, in_channels, H, W)
    /// or the dilated window does not fit inside the padded input.
    fn geometry(&self, x: &Tensor) -> Result<Option<Geometry>> {
        let cfg = self.config;
        if x.rank() != 4 || x.dims()[1] != cfg.in_channels {
            return Ok(None);
        }
        let opts = (cfg.stride, cfg.padding, cfg.dilation, cfg.groups);
        Ok(Geometry::new(x.dims4()?, self.weight.dims4()?, opts))
    }

    /// This convolution followed by a ReLU, as one node of Taper's CPU kernels
    /// (`cpu/conv.rs`): the convolution's own output never becomes a tensor. `None` where
    /// that does not apply (other devices and dtypes, generic kernels, shapes that do not
    /// fit: the caller then runs the layers one by one, which also reports any shape error).
    pub(crate) fn forward_relu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(geometry) = self.geometry(x)? else {
            return Ok(None);
        };
        let (w, b) = (tracked(&self.weight), self.bias.as_ref().map(tracked));
        conv2d(x, &w, b.as_ref(), geometry, true)
    }

    /// This convolution followed by `pool` and, when `relu`, a ReLU, as one node of Taper's
    /// CPU kernels (`cpu/conv_pool.rs`); `None` where that does not apply (other devices
    /// and dtypes, generic kernels, shapes that do not fit: the caller then runs the layers
    /// one by one, which also reports any shape error).
    pub(crate) fn forward_max_pooled(
        &self,
        x: &Tensor,
        pool: &MaxPool2d,
        relu: bool,
    ) -> Result<Option<Tensor>> {
        let Some(geometry) = self.geometry(x)? else {
            return Ok(None);
        };
        let pooling = Pooling {
            kernel: pool.kernel,
            stride: pool.stride,
            relu,
        };
        let (w, b) = (tracked(&self.weight), self.bias.as_ref().map(tracked));
        conv2d_max_pool2d(x, &w, b.as_ref(), geometry, pooling)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.config;
        let c = cfg.in_channels;
        let (o, _, kh, kw) = self.weight.dims4()?;
        let layer = || format!("Conv2d({c} -> {o}, kernel ({kh}, {kw}))");
        if x.rank() != 4 || x.dims()[1] != c {
            return Err(Error::shape(layer(), format!("(N, {c}, H, W)"), x.dims()).into_candle());
        }
        // Checked on every path: candle's conv2d panics (debug) or returns an empty tensor
        // (release) when the dilated window does not fit inside the padded input.
        let Some(geometry) = self.geometry(x)? else {
            let (p, d) = (cfg.padding, cfg.dilation);
            let expected = format!(
                "(N, {c}, H, W) with H + 2·{p} >= {} and W + 2·{p} >= {} (the dilated kernel), H, W > 0",
                d * kh.saturating_sub(1) + 1,
                d * kw.saturating_sub(1) + 1
            );
            return Err(Error::shape(layer(), expected, x.dims()).into_candle());
        };
        let (w, b) = (tracked(&self.weight), self.bias.as_ref().map(tracked));
        if let Some(y) = conv2d(x, &w, b.as_ref(), geometry, false)? {
            return Ok(y);
        }
        // candle's conv2d backward (0.11) returns an input gradient short by the r rows
        // (columns) past the last window when the stride does not divide the padded extent
        // evenly. Then pad here and cut those r off (they reach no window), so candle
        // convolves an exactly divisible input without padding of its own.
        let (p, s) = (cfg.padding, cfg.stride);
        let rest = |size: usize, k: usize, outs: usize| {
            size + 2 * p - ((outs - 1) * s + cfg.dilation * (k - 1) + 1)
        };
        let (rh, rw) = (
            rest(x.dims()[2], kh, geometry.oh),
            rest(x.dims()[3], kw, geometry.ow),
        );
        let y = if rh == 0 && rw == 0 {
            x.conv2d(&w, p, s, cfg.dilation, cfg.groups)?
        } else {
            let (h, wd) = (x.dims()[2] + 2 * p - rh, x.dims()[3] + 2 * p - rw);
            let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
            let xp = xp.narrow(2, 0, h)?.narrow(3, 0, wd)?;
            xp.conv2d(&w, 0, s, cfg.dilation, cfg.groups)?
        };
        match &b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}
