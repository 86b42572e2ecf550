//! Regression losses and the shared [`Reduction`]: MSE, L1, SmoothL1 and Huber.
//!
//! Formulas and defaults are PyTorch's (`torch.nn.functional`). Input and target must have
//! the same shape (PyTorch broadcasts with a warning; Taper errors).

use candle_core::Tensor;

use crate::error::check;
use crate::{error::Error, error::Result};

/// How per-element losses are combined (PyTorch's `reduction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean (default).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// No reduction: one loss per element (or per sample for classification losses).
    None,
}

/// Applies a reduction to per-element losses.
pub fn reduce(loss: Tensor, reduction: Reduction) -> Result<Tensor> {
    Ok(match reduction {
        Reduction::Mean => loss.mean_all()?,
        Reduction::Sum => loss.sum_all()?,
        Reduction::None => loss,
    })
}

pub(crate) fn same_shape(loss: &str, input: &Tensor, target: &Tensor) -> Result<()> {
    if input.dims() == target.dims() {
        Ok(())
    } else {
        let expected = format!("target's shape {:?}", target.dims());
        Err(Error::shape(loss, expected, input.dims()))
    }
}

/// Mean squared error: (x − y)².
///
/// ```
/// use taper_nn::loss::{mse_loss, Reduction};
/// use taper_tensor::{Tensor, Device};
/// let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?;
/// let y = Tensor::new(&[1f32, 0., 0.], &Device::Cpu)?;
/// let l = mse_loss(&x, &y, Reduction::Mean)?;
/// assert_eq!(l.to_scalar::<f32>()?, 13.0 / 3.0);
/// # Ok::<(), taper_nn::Error>(())
/// ```
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape("mse_loss", input, target)?;
    reduce(input.sub(target)?.sqr()?, reduction)
}

/// Mean absolute error: |x − y|.
pub fn l1_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape("l1_loss", input, target)?;
    reduce(input.sub(target)?.abs()?, reduction)
}

/// Quadratic below a threshold, linear above; `quad_scale` and the linear offset differ
/// between SmoothL1 and Huber.
fn piecewise(
    d: &Tensor,
    threshold: f64,
    quad: f64,
    lin_scale: f64,
    lin_offset: f64,
) -> Result<Tensor> {
    let a = d.abs()?;
    let q = d.sqr()?.affine(quad, 0.0)?;
    let l = a.affine(lin_scale, -lin_offset)?;
    Ok(a.lt(threshold)?.where_cond(&q, &l)?)
}

/// Smooth L1: 0.5·d²/β where |d| < β, else |d| − 0.5·β (PyTorch's default β = 1).
/// β = 0 is the L1 loss.
pub fn smooth_l1_loss(
    input: &Tensor,
    target: &Tensor,
    beta: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    check("beta", beta, beta >= 0.0, "beta >= 0")?;
    same_shape("smooth_l1_loss", input, target)?;
    let d = input.sub(target)?;
    if beta == 0.0 {
        return reduce(d.abs()?, reduction);
    }
    reduce(piecewise(&d, beta, 0.5 / beta, 1.0, 0.5 * beta)?, reduction)
}

/// Huber: 0.5·d² where |d| < δ, else δ·(|d| − 0.5·δ) (PyTorch's default δ = 1).
pub fn huber_loss(
    input: &Tensor,
    target: &Tensor,
    delta: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    check("delta", delta, delta > 0.0, "delta > 0")?;
    same_shape("huber_loss", input, target)?;
    let d = input.sub(target)?;
    reduce(
        piecewise(&d, delta, 0.5, delta, 0.5 * delta * delta)?,
        reduction,
    )
}
