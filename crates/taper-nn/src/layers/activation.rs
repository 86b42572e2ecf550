//! Activations, as functions and as the [`Activation`] layer.
//!
//! All are built from differentiable candle ops (never candle-nn's fused
//! `softmax_last_dim`, which cuts the gradient). Softmax and log-softmax subtract the
//! (detached) row maximum, so logits of ±1e4 stay finite.

use candle_core::{Result, Tensor};
use taper_tensor::Module;

/// max(x, 0).
///
/// The gradient at x = 0 is 0, as in PyTorch (candle's own `Tensor::relu` passes 1 there).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    // On the CPU's f32 training path, one graph node with a one-pass backward.
    if let Some(y) = crate::cpu::dense::relu(x)? {
        return Ok(y);
    }
    if x.track_op() {
        // x·[x > 0] with a constant mask: PyTorch's gradient (candle's relu uses x ≥ 0).
        let mask = x.detach().gt(0.0)?.to_dtype(x.dtype())?;
        return x.mul(&mask);
    }
    x.relu()
}

/// x for x ≥ 0, `negative_slope`·x otherwise (PyTorch's default slope is 0.01).
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    x.relu()? - x.neg()?.relu()?.affine(negative_slope, 0.0)?
}

/// x for x > 0, α(eˣ − 1) otherwise (PyTorch's default α is 1).
pub fn elu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    x.elu(alpha)
}

/// Exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)) (PyTorch's `approximate='none'`).
///
/// On the CPU in f32/f64, one graph node with an exact backward (f32's erf within a few
/// ulp of libm's); elsewhere composed from `erf`, whose backward is exact: candle's fused
/// `gelu_erf` backward uses a 6-digit constant and is off by about 1e-6 relative.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    // On the CPU in f32/f64, one node each way.
    if let Some(y) = crate::cpu::gelu::gelu(x)? {
        return Ok(y);
    }
    if let Some(y) = crate::cpu::gelu::gelu_eval(x)? {
        return Ok(y);
    }
    let phi = x
        .affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?
        .erf()?
        .affine(0.5, 0.5)?;
    x.mul(&phi)
}

/// The tanh approximation of GELU, ½x(1 + tanh(√(2/π)(x + 0.044715x³)))
/// (PyTorch's `approximate='tanh'`), composed from exact ops like [`gelu`].
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x + x.powf(3.0)?.affine(0.044715, 0.0)?)?.affine(k, 0.0)?;
    x.mul(&inner.tanh()?.affine(0.5, 0.5)?)
}

/// x·σ(x), also called swish.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// 1 / (1 + e⁻ˣ).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// tanh(x).
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    x.tanh()
}

/// Resolves a PyTorch-style dimension (negative counts from the end).
pub(crate) fn resolve_dim(x: &Tensor, dim: isize) -> Result<usize> {
    let rank = x.rank() as isize;
    let d = if dim < 0 { dim + rank } else { dim };
    if d < 0 || d >= rank {
        candle_core::bail!("dimension {dim} is out of range for a tensor of rank {rank}")
    }
    Ok(d as usize)
}

/// log(softmax(x)) along `dim`, computed stably as (x − max) − log Σ exp(x − max).
pub fn log_softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    let d = resolve_dim(x, dim)?;
    let shifted = x.broadcast_sub(&x.max_keepdim(d)?.detach())?;
    let lse = shifted.exp()?.sum_keepdim(d)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// exp(x) / Σ exp(x) along `dim`, stable for large logits.
pub fn softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    let d = resolve_dim(x, dim)?;
    let e = x.broadcast_sub(&x.max_keepdim(d)?.detach())?.exp()?;
    e.broadcast_div(&e.sum_keepdim(d)?)
}

/// An activation as a layer (for `Sequential`). Parameters are PyTorch's arguments.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// `nn.ReLU`.
    Relu,
    /// `nn.LeakyReLU(negative_slope)`.
    LeakyRelu(f64),
    /// `nn.ELU(alpha)`.
    Elu(f64),
    /// `nn.GELU()` (exact).
    Gelu,
    /// `nn.GELU(approximate='tanh')`.
    GeluTanh,
    /// `nn.SiLU`.
    Silu,
    /// `nn.Sigmoid`.
    Sigmoid,
    /// `nn.Tanh`.
    Tanh,
    /// `nn.Softmax(dim)`.
    Softmax(isize),
    /// `nn.LogSoftmax(dim)`.
    LogSoftmax(isize),
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match *self {
            Activation::Relu => relu(x),
            Activation::LeakyRelu(s) => leaky_relu(x, s),
            Activation::Elu(a) => elu(x, a),
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Silu => silu(x),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => tanh(x),
            Activation::Softmax(d) => softmax(x, d),
            Activation::LogSoftmax(d) => log_softmax(x, d),
        }
    }
}
