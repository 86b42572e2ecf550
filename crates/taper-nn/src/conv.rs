//! `Conv2d`: 2-D convolution with PyTorch's parameter names, layout and default init.

use candle_core::{Result, Tensor};
use taper_tensor::{tracked, Module, ParamStore};

use crate::init::{fans, Init};
use crate::Error;

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
    /// A convolution with a `kernel` of (kh, kw), initialized as PyTorch does.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        config: Conv2dConfig,
        store: &ParamStore,
    ) -> crate::Result<Self> {
        let g = config.groups;
        for (field, v) in [
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
        if x.rank() != 4 || x.dims()[1] != c {
            let (o, _, kh, kw) = self.weight.dims4()?;
            let layer = format!("Conv2d({c} -> {o}, kernel ({kh}, {kw}))");
            return Err(Error::shape(layer, format!("(N, {c}, H, W)"), x.dims()).into_candle());
        }
        let cfg = self.config;
        let y = x.conv2d(
            &tracked(&self.weight),
            cfg.padding,
            cfg.stride,
            cfg.dilation,
            cfg.groups,
        )?;
        match &self.bias {
            Some(b) => y.broadcast_add(&tracked(b).reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}
