//! L1 and L2 penalty terms over a model's trainable parameters, to add to a loss.
//!
//! The source documents regularize with L1, L2 and dropout ([`crate::Dropout`]). Adding
//! `λ/2 · l2_penalty` to the loss gives the gradient λ·w, the same update as PyTorch's
//! `weight_decay=λ` in SGD. Pass [`weights_only`] to leave biases and normalization scales
//! (1-D parameters) unpenalized, or [`all`], or any predicate on (name, tensor).

use candle_core::Tensor;
use taper_tensor::ParamStore;

use crate::error::Result;

/// Selects every trainable parameter.
pub fn all(_name: &str, _t: &Tensor) -> bool {
    true
}

/// Selects weight matrices and kernels (2 or more dimensions), not biases or norm scales.
pub fn weights_only(_name: &str, t: &Tensor) -> bool {
    t.rank() >= 2
}

fn penalty(
    store: &ParamStore,
    select: impl Fn(&str, &Tensor) -> bool,
    term: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let mut total = Tensor::zeros((), store.dtype(), store.device())?;
    for (name, var) in store.trainable() {
        let t = var.as_tensor();
        if select(&name, t) {
            total = total.add(&term(t)?.sum_all()?.to_dtype(total.dtype())?)?;
        }
    }
    Ok(total)
}

/// Σ |w| over the selected trainable parameters (differentiable; frozen ones excluded).
///
/// ```
/// use taper_nn::{regularization::{l1_penalty, weights_only}, Linear};
/// use taper_tensor::{ParamStore, DType, Device};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let _fc = Linear::new(3, 2, &store)?;
/// let p = l1_penalty(&store, weights_only)?; // the weight only, not the bias
/// let w = store.var("weight")?.abs()?.sum_all()?;
/// assert_eq!(p.to_scalar::<f32>()?, w.to_scalar::<f32>()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn l1_penalty(store: &ParamStore, select: impl Fn(&str, &Tensor) -> bool) -> Result<Tensor> {
    penalty(store, select, |t| t.abs())
}

/// Σ w² over the selected trainable parameters (no ½; see the module docs for PyTorch's
/// weight decay).
pub fn l2_penalty(store: &ParamStore, select: impl Fn(&str, &Tensor) -> bool) -> Result<Tensor> {
    penalty(store, select, |t| t.sqr())
}
