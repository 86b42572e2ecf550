//! Parameter initializers, with PyTorch's formulas and defaults (`torch.nn.init`).
//!
//! All of them draw from taper-tensor's seeded generator, so [`taper_tensor::manual_seed`]
//! makes initialization reproducible. Fans follow `_calculate_fan_in_and_fan_out`: for a
//! weight of shape (out, in, k1, k2, ...) fan_in = in·k1·k2… and fan_out = out·k1·k2….

use taper_tensor::{rand_uniform, randn, DType, Device, Shape, Tensor};

use crate::{error::Error, error::Result};

/// The nonlinearity that follows a layer, for [`calculate_gain`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Nonlinearity {
    /// Identity, convolutions and sigmoid: gain 1.
    Linear,
    /// Sigmoid: gain 1.
    Sigmoid,
    /// Tanh: gain 5/3.
    Tanh,
    /// ReLU: gain √2.
    Relu,
    /// Leaky ReLU with this negative slope: gain √(2 / (1 + slope²)).
    LeakyRelu(f64),
    /// SELU: gain 3/4.
    Selu,
}

/// Which fan Kaiming initialization preserves the variance of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FanMode {
    /// Preserve the variance of activations in the forward pass (PyTorch's default).
    #[default]
    FanIn,
    /// Preserve the variance of gradients in the backward pass.
    FanOut,
}

/// The recommended gain for a nonlinearity (`torch.nn.init.calculate_gain`).
pub fn calculate_gain(nl: Nonlinearity) -> f64 {
    match nl {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu(a) => (2.0 / (1.0 + a * a)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// (fan_in, fan_out) of a weight shape; shapes with fewer than 2 dimensions are an error.
pub fn fans(dims: &[usize]) -> Result<(usize, usize)> {
    if dims.len() < 2 {
        return Err(Error::shape(
            "fan computation",
            "at least 2 dimensions",
            dims,
        ));
    }
    let receptive: usize = dims[2..].iter().product();
    Ok((dims[1] * receptive, dims[0] * receptive))
}

/// An initialization scheme: call [`Init::tensor`] to draw a tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element equal to this value.
    Constant(f64),
    /// U(low, high).
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// N(mean, std²).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Glorot: U(±gain·√(6 / (fan_in + fan_out))).
    XavierUniform {
        /// Gain, see [`calculate_gain`].
        gain: f64,
    },
    /// Glorot: N(0, gain²·2 / (fan_in + fan_out)).
    XavierNormal {
        /// Gain, see [`calculate_gain`].
        gain: f64,
    },
    /// He: U(±gain·√(3 / fan)), gain from the nonlinearity.
    KaimingUniform {
        /// The nonlinearity that follows.
        nonlinearity: Nonlinearity,
        /// Which fan.
        mode: FanMode,
    },
    /// He: N(0, gain² / fan).
    KaimingNormal {
        /// The nonlinearity that follows.
        nonlinearity: Nonlinearity,
        /// Which fan.
        mode: FanMode,
    },
}

impl Init {
    /// PyTorch's default for `Linear` and `Conv2d` weights: Kaiming-uniform with a = √5,
    /// which is U(±1/√fan_in).
    pub fn pytorch_default_weight() -> Self {
        Init::KaimingUniform {
            nonlinearity: Nonlinearity::LeakyRelu(5f64.sqrt()),
            mode: FanMode::FanIn,
        }
    }

    /// PyTorch's default for `Linear` and `Conv2d` biases: U(±1/√fan_in) (0 when fan_in is 0).
    pub fn pytorch_default_bias(fan_in: usize) -> Self {
        let bound = if fan_in > 0 {
            1.0 / (fan_in as f64).sqrt()
        } else {
            0.0
        };
        Init::Uniform {
            low: -bound,
            high: bound,
        }
    }

    /// Draws a tensor of this shape with this scheme.
    ///
    /// ```
    /// use taper_nn::init::Init;
    /// use taper_tensor::{DType, Device};
    /// let w = Init::XavierUniform { gain: 1.0 }.tensor((256, 784), DType::F32, &Device::Cpu)?;
    /// let bound = (6.0f32 / (256.0 + 784.0)).sqrt();
    /// assert!(w.abs()?.max_all()?.to_scalar::<f32>()? <= bound);
    /// # Ok::<(), taper_nn::Error>(())
    /// ```
    pub fn tensor(&self, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let fan = |mode: FanMode| -> Result<f64> {
            let (fi, fo) = fans(shape.dims())?;
            Ok(match mode {
                FanMode::FanIn => fi,
                FanMode::FanOut => fo,
            } as f64)
        };
        let uniform = |bound: f64| rand_uniform(shape.clone(), -bound, bound, dtype, device);
        Ok(match *self {
            Init::Zeros => Tensor::zeros(&shape, dtype, device)?,
            Init::Ones => Tensor::ones(&shape, dtype, device)?,
            Init::Constant(v) => Tensor::ones(&shape, dtype, device)?.affine(0.0, v)?,
            Init::Uniform { low, high } => rand_uniform(shape, low, high, dtype, device)?,
            Init::Normal { mean, std } => randn(shape, mean, std, dtype, device)?,
            Init::XavierUniform { gain } => {
                let (fi, fo) = fans(shape.dims())?;
                uniform(gain * (6.0 / (fi + fo) as f64).sqrt())?
            }
            Init::XavierNormal { gain } => {
                let (fi, fo) = fans(shape.dims())?;
                randn(
                    shape,
                    0.0,
                    gain * (2.0 / (fi + fo) as f64).sqrt(),
                    dtype,
                    device,
                )?
            }
            Init::KaimingUniform { nonlinearity, mode } => {
                uniform(calculate_gain(nonlinearity) * (3.0 / fan(mode)?).sqrt())?
            }
            Init::KaimingNormal { nonlinearity, mode } => {
                let std = calculate_gain(nonlinearity) / fan(mode)?.sqrt();
                randn(shape, 0.0, std, dtype, device)?
            }
        })
    }

    /// This scheme as the initializer closure [`taper_tensor::ParamStore::parameter`] takes.
    pub fn init_fn(self) -> impl FnOnce(&Shape, DType, &Device) -> taper_tensor::Result<Tensor> {
        move |s, dt, dev| {
            self.tensor(s.clone(), dt, dev).map_err(|e| match e {
                Error::Tensor(t) => t,
                Error::Candle(c) => taper_tensor::Error::Candle(c),
                other => taper_tensor::Error::Candle(candle_core::Error::wrap(other)),
            })
        }
    }
}
