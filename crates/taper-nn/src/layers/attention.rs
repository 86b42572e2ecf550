//! `scaled_dot_product_attention`: softmax(Q·Kᵀ·scale + mask)·V, PyTorch's
//! `torch.nn.functional.scaled_dot_product_attention`, with its mask conventions.
//!
//! On the CPU, f32 and f64 inputs without dropout take Taper's own kernel
//! (`cpu/attention.rs`): forward and backward are one graph node that keeps the attention
//! probabilities once and computes the softmax's backward in place, with no other copy of
//! the attention matrix. Everything else (other dtypes and devices, dropout, and everything
//! inside [`taper_tensor::with_generic_kernels`]) takes candle's generic ops; both compute
//! the same function.
//!
//! A query whose every key is masked out attends to nothing: its output and gradients are
//! 0, as PyTorch's `scaled_dot_product_attention` gives for a boolean mask. (PyTorch's
//! `MultiheadAttention` gives NaN there; Taper's gives 0 too.)

use candle_core::{DType, Result, Tensor, D};

use crate::cpu::attention as kernel;
use crate::error::Error;
use crate::layers::dropout::dropout;

/// The attention mask, read as PyTorch's `scaled_dot_product_attention` reads `attn_mask`.
pub(crate) enum Mask<'a> {
    /// Nothing masked.
    None,
    /// `true` (nonzero u8) where a query may attend a key.
    Allowed(&'a Tensor),
    /// Added to the scores (−∞ masks out).
    Additive(&'a Tensor),
}

/// Attention of `q` (…, Lq, E) over `k` (…, Lk, E) and `v` (…, Lk, Ev): softmax(Q·Kᵀ·scale
/// + mask)·V, of shape (…, Lq, Ev). The leading dimensions (batch, heads) must match.
///
/// - `attn_mask`, broadcastable to (…, Lq, Lk): a boolean mask as `u8` (nonzero where the
///   query may attend the key, PyTorch's `True`), or a float mask added to the scores.
/// - `dropout_p`: dropout on the attention probabilities (PyTorch applies it whenever it is
///   nonzero; pass 0 in evaluation).
/// - `is_causal`: query i attends keys j ≤ i (top-left aligned, as PyTorch); with a mask
///   too, both apply.
/// - `scale`: default 1/√E.
///
/// Bad shapes or a mask of another dtype are errors naming what was expected.
///
/// ```
/// use taper_nn::scaled_dot_product_attention;
/// use taper_tensor::{DType, Device, Tensor};
/// let q = Tensor::ones((2, 4, 5, 8), DType::F32, &Device::Cpu)?; // (batch, heads, L, E)
/// let y = scaled_dot_product_attention(&q, &q, &q, None, 0.0, true, None)?;
/// assert_eq!(y.dims(), &[2, 4, 5, 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    attn_mask: Option<&Tensor>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    let shape = check(q, k, v, attn_mask, dropout_p).map_err(Error::into_candle)?;
    let scale = scale.unwrap_or(1.0 / (shape.e as f64).sqrt());
    let mask = match attn_mask {
        None => Mask::None,
        Some(m) if m.dtype() == DType::U8 => Mask::Allowed(m),
        Some(m) => Mask::Additive(m),
    };
    if dropout_p == 0.0 {
        if let Some(y) = kernel::attention(q, k, v, &mask, is_causal, scale)? {
            return Ok(y);
        }
    }
    generic(q, k, v, &mask, dropout_p, is_causal, scale)
}

/// The sizes of one attention call.
pub(crate) struct Sizes {
    /// The head dimension E.
    pub e: usize,
}

/// Checks shapes, the mask's dtype and shape, and the dropout probability.
fn check(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    dropout_p: f64,
) -> std::result::Result<Sizes, Error> {
    let name = "scaled_dot_product_attention";
    let r = q.rank();
    if r < 2 || k.rank() != r || v.rank() != r {
        return Err(Error::shape(
            name,
            "q (…, Lq, E), k (…, Lk, E) and v (…, Lk, Ev) of one rank ≥ 2",
            q.dims(),
        ));
    }
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    let (lead, e, lk) = (&qd[..r - 2], qd[r - 1], kd[r - 2]);
    if &kd[..r - 2] != lead || &vd[..r - 2] != lead || kd[r - 1] != e || vd[r - 2] != lk {
        return Err(Error::shape(
            name,
            format!(
                "k of shape {lead:?} + (Lk, {e}) and v of shape {lead:?} + (Lk, Ev); got k {kd:?}, v {vd:?}"
            ),
            qd,
        ));
    }
    if !(0.0..=1.0).contains(&dropout_p) {
        return Err(Error::InvalidValue {
            field: "dropout_p",
            value: dropout_p.to_string(),
            expected: "a probability in [0, 1]",
        });
    }
    if let Some(m) = mask {
        if !(m.dtype() == DType::U8 || m.dtype() == q.dtype()) {
            return Err(Error::DType {
                layer: name.into(),
                expected: format!(
                    "a boolean mask as u8 (nonzero: may attend) or a float mask of q's dtype {:?}",
                    q.dtype()
                ),
                actual: format!("{:?}", m.dtype()),
                dims: m.dims().to_vec(),
            });
        }
        let scores: Vec<usize> = lead.iter().copied().chain([qd[r - 2], lk]).collect();
        if !broadcasts(m.dims(), &scores) {
            return Err(Error::shape(
                format!("{name} (attn_mask)"),
                format!("a mask broadcastable to the scores' shape {scores:?}"),
                m.dims(),
            ));
        }
    }
    Ok(Sizes { e })
}

/// Whether `from` broadcasts to `to` (numpy's rule: aligned at the right, sizes equal or 1).
pub(crate) fn broadcasts(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

/// candle's generic ops: scores, masks, a softmax that gives 0 to a row with every key
/// masked, dropout, and the weighted sum of the values.
fn generic(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Mask<'_>,
    dropout_p: f64,
    is_causal: bool,
    scale: f64,
) -> Result<Tensor> {
    let r = q.rank();
    let (lq, lk) = (q.dims()[r - 2], k.dims()[r - 2]);
    let mut s = q
        .matmul(&k.transpose(r - 2, r - 1)?.contiguous()?)?
        .affine(scale, 0.0)?;
    let neg_inf = |like: &Tensor| -> Result<Tensor> {
        Tensor::full(f64::NEG_INFINITY, like.shape(), like.device())?.to_dtype(like.dtype())
    };
    if is_causal {
        let allowed = causal_mask(lq, lk, q.device())?;
        let allowed = allowed.broadcast_as(s.shape())?;
        s = allowed.where_cond(&s, &neg_inf(&s)?)?;
    }
    match mask {
        Mask::None => {}
        Mask::Allowed(m) => {
            let m = m.broadcast_as(s.shape())?;
            s = m.where_cond(&s, &neg_inf(&s)?)?;
        }
        Mask::Additive(m) => s = s.broadcast_add(m)?,
    }
    let p = masked_softmax(&s)?;
    let p = if dropout_p > 0.0 {
        dropout(&p, dropout_p, true)?
    } else {
        p
    };
    p.matmul(&v.contiguous()?)
}

/// (Lq, Lk) u8: 1 where key j ≤ query i.
pub(crate) fn causal_mask(lq: usize, lk: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let m: Vec<u8> = (0..lq)
        .flat_map(|i| (0..lk).map(move |j| u8::from(j <= i)))
        .collect();
    Tensor::from_vec(m, (lq, lk), dev)
}

/// Softmax over the last dimension, stable (the row maximum, detached, is subtracted), with
/// a row whose every score is −∞ giving 0 everywhere instead of NaN.
fn masked_softmax(s: &Tensor) -> Result<Tensor> {
    let max = s.max_keepdim(D::Minus1)?.detach();
    // A row of −∞ has max −∞: shift it by 0 instead, so exp gives 0, not NaN.
    let finite = max.ne(f64::NEG_INFINITY)?;
    let max = finite.where_cond(&max, &max.zeros_like()?)?;
    let e = s.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    let empty = sum.eq(0.0)?;
    let sum = empty.where_cond(&sum.ones_like()?, &sum)?;
    e.broadcast_div(&sum)
}
