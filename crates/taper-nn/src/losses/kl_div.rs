//! KL divergence, PyTorch's `F.kl_div(input, target)`: `input` holds log-probabilities.

use candle_core::Tensor;

use crate::error::Result;
use crate::losses::loss::same_shape;

/// Reductions of [`kl_div`]; `BatchMean` (sum / batch size) is the mathematically correct
/// KL. PyTorch's default is `Mean`, over all elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KlReduction {
    /// Mean over all elements (PyTorch's default, with a warning there).
    #[default]
    Mean,
    /// Sum over all elements divided by the batch size (dimension 0).
    BatchMean,
    /// Sum over all elements.
    Sum,
    /// Elementwise.
    None,
}

/// Pointwise KL: t·(log t − x), with 0·log 0 = 0; with `log_target`, eᵗ·(t − x).
pub fn kl_div(
    input: &Tensor,
    target: &Tensor,
    reduction: KlReduction,
    log_target: bool,
) -> Result<Tensor> {
    same_shape("kl_div", input, target)?;
    let t = target.to_dtype(input.dtype())?;
    let loss = if log_target {
        t.exp()?.mul(&t.sub(input)?)?
    } else {
        // xlogy(t, t): replace t = 0 by 1 inside the log, so the product is 0.
        let safe = t.gt(0.0)?.where_cond(&t, &t.ones_like()?)?;
        t.mul(&safe.log()?.sub(input)?)?
    };
    Ok(match reduction {
        KlReduction::Mean => loss.mean_all()?,
        KlReduction::Sum => loss.sum_all()?,
        KlReduction::BatchMean => {
            let n = input.dims().first().copied().unwrap_or(1).max(1);
            loss.sum_all()?.affine(1.0 / n as f64, 0.0)?
        }
        KlReduction::None => loss,
    })
}
