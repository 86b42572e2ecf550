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
use crate::error::Error;
use crate::init::{fans, Init};

/// Options of [`Conv2d`], with PyTorch's defaults. Stride, padding and dilation apply to
/// both spatial dimensions (candle's convolution takes one value for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
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

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
}

/// `nn.Conv2d`: weight (out, in/groups, kh, kw), bias (out); input (N, in, H, W).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    in_channels: usize,
    config: Conv2dConfig,
}

impl Conv2d {
    /// This layer's architecture, for model files.
    pub fn spec(&self) -> crate::layers::spec::LayerSpec {
        let d = self.weight.dims();
        crate::layers::spec::LayerSpec::Conv2d {
            in_channels: self.in_channels,
            out_channels: d[0],
            kernel: (d[2], d[3]),
            stride: self.config.stride,
            padding: self.config.padding,
            dilation: self.config.dilation,
            groups: self.config.groups,
            bias: self.config.bias,
        }
    }

    /// A convolution with a `kernel` of (kh, kw), initialized as PyTorch does.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        config: Conv2dConfig,
        store: &ParamStore,
    ) -> crate::error::Result<Self> {
        let g = config.groups;
        for (field, v) in [
            ("kernel height", kernel.0),
            ("kernel width", kernel.1),
            ("stride", config.stride),
            ("dilation", config.dilation),
            ("groups", g),
        ] {
            crate::error::check(field, v as f64, v > 0, "a positive integer")?;
        }
        if in_channels % g != 0 || out_channels % g != 0 {
            return Err(Error::InvalidValue {
                field: "groups",
                value: g.to_string(),
                expected: "a divisor of in_channels and out_channels",
            });
        }
        let shape = (out_channels, in_channels / g, kernel.0, kernel.1);
        let weight = store.parameter("weight", shape, Init::pytorch_default_weight().init_fn())?;
        let bias = if config.bias {
            let (fan_in, _) = fans(weight.dims())?;
            Some(store.parameter(
                "bias",
                out_channels,
                Init::pytorch_default_bias(fan_in).init_fn(),
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            in_channels,
            config,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.in_channels;
        let cfg = self.config;
        let (o, _, kh, kw) = self.weight.dims4()?;
        let layer = || format!("Conv2d({c} -> {o}, kernel ({kh}, {kw}))");
        if x.rank() != 4 || x.dims()[1] != c {
            return Err(Error::shape(layer(), format!("(N, {c}, H, W)"), x.dims()).into_candle());
        }
        // Checked on every path: candle's conv2d panics (debug) or returns an empty tensor
        // (release) when the dilated window does not fit inside the padded input.
        let opts = (cfg.stride, cfg.padding, cfg.dilation, cfg.groups);
        let Some(geometry) = Geometry::new(x.dims4()?, self.weight.dims4()?, opts) else {
            let (p, d) = (cfg.padding, cfg.dilation);
            let expected = format!(
                "(N, {c}, H, W) with H + 2·{p} >= {} and W + 2·{p} >= {} (the dilated kernel), H, W > 0",
                d * kh.saturating_sub(1) + 1,
                d * kw.saturating_sub(1) + 1
            );
            return Err(Error::shape(layer(), expected, x.dims()).into_candle());
        };
        let (w, b) = (tracked(&self.weight), self.bias.as_ref().map(tracked));
        if let Some(y) = conv2d(x, &w, b.as_ref(), geometry)? {
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
