//! Classification losses: cross-entropy from logits, NLL, and binary cross-entropy with
//! logits, with PyTorch's options and semantics.
//!
//! Cross-entropy takes logits (N, C) and either integer class targets (N) or probability
//! targets (N, C). With class targets, `ignore_index` (default −100), class `weight` and
//! `label_smoothing` follow `F.cross_entropy` exactly, including the mean reduction's
//! division by the summed weights of the non-ignored targets. Log-probabilities come from
//! a max-shifted log-softmax, so logits of ±1e4 give finite losses and gradients.

use candle_core::{DType, Tensor};

use crate::error::check;
use crate::layers::activation::log_softmax;
use crate::losses::loss::{reduce, same_shape, Reduction};
use crate::{error::Error, error::Result};

/// The targets of [`CrossEntropyLoss`].
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Class indices (N), an integer tensor; entries equal to `ignore_index` are skipped.
    Classes(&'a Tensor),
    /// Class probabilities (N, C), a float tensor whose rows sum to 1.
    Probs(&'a Tensor),
}

/// `nn.CrossEntropyLoss` with PyTorch's options and defaults.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyLoss {
    /// Per-class weights (C), or none.
    pub weight: Option<Tensor>,
    /// Class targets equal to this are ignored (PyTorch's default −100; `None` disables).
    pub ignore_index: Option<i64>,
    /// Mixes the target with the uniform distribution: ε in [0, 1] (default 0).
    pub label_smoothing: f64,
    /// How per-sample losses are combined (default mean).
    pub reduction: Reduction,
}

impl CrossEntropyLoss {
    /// PyTorch's defaults: no weights, ignore_index −100, no smoothing, mean.
    pub fn new() -> Self {
        Self {
            ignore_index: Some(-100),
            ..Default::default()
        }
    }

    /// The loss of `logits` (N, C) against `target`.
    pub fn forward(&self, logits: &Tensor, target: Target<'_>) -> Result<Tensor> {
        let eps = self.label_smoothing;
        check(
            "label_smoothing",
            eps,
            (0.0..=1.0).contains(&eps),
            "a value in [0, 1]",
        )?;
        let (n, c) = logits_dims("cross_entropy", logits)?;
        let weight = class_weights(self.weight.as_ref(), c)?;
        let logp = log_softmax(logits, 1)?;
        match target {
            Target::Classes(t) => {
                let picked = Picked::new(
                    "cross_entropy",
                    &logp,
                    t,
                    n,
                    c,
                    self.ignore_index,
                    weight.as_deref(),
                )?;
                let nll = picked.nll(&logp)?;
                if eps == 0.0 {
                    return picked.reduce(nll, self.reduction);
                }
                // Smoothing term: −Σ_c w_c·logp_c per non-ignored sample (PyTorch's smooth_loss).
                let weighted = match &weight {
                    Some(w) => logp.broadcast_mul(
                        &Tensor::new(w.as_slice(), logp.device())?
                            .to_dtype(logp.dtype())?
                            .unsqueeze(0)?,
                    )?,
                    None => logp.clone(),
                };
                let smooth = weighted.sum(1)?.neg()?.mul(&picked.valid)?;
                let total = (nll.affine(1.0 - eps, 0.0)? + smooth.affine(eps / c as f64, 0.0)?)?;
                picked.reduce(total, self.reduction)
            }
            Target::Probs(p) => {
                same_shape("cross_entropy", logits, p)?;
                let p = p
                    .to_dtype(logp.dtype())?
                    .affine(1.0 - eps, eps / c as f64)?;
                let mut per = p.mul(&logp)?;
                if let Some(w) = &weight {
                    let w = Tensor::new(w.as_slice(), logp.device())?.to_dtype(logp.dtype())?;
                    per = per.broadcast_mul(&w.unsqueeze(0)?)?;
                }
                reduce(per.sum(1)?.neg()?, self.reduction)
            }
        }
    }
}

/// Cross-entropy from logits with class targets and PyTorch's defaults (mean, no weights,
/// ignore_index −100, no smoothing). On the CPU in f32 with every target a valid class it
/// runs as one fused graph node; otherwise as [`CrossEntropyLoss`].
pub fn cross_entropy(logits: &Tensor, classes: &Tensor) -> Result<Tensor> {
    if logits.device().is_cpu()
        && logits.dtype() == DType::F32
        && logits.rank() == 2
        && classes.rank() == 1
        && !classes.dtype().is_float()
    {
        let c = logits.dims()[1] as i64;
        let ids: Vec<i64> = classes.to_dtype(DType::I64)?.to_vec1()?;
        if ids.len() == logits.dims()[0] && ids.iter().all(|&i| (0..c).contains(&i)) {
            let ids: Vec<u32> = ids.into_iter().map(|i| i as u32).collect();
            if let Some(loss) = crate::cpu::dense::cross_entropy_mean(logits, &ids)? {
                return Ok(loss);
            }
        }
    }
    CrossEntropyLoss::new().forward(logits, Target::Classes(classes))
}

/// `nn.NLLLoss`: the negative log-likelihood of log-probabilities (N, C) at class targets.
#[derive(Debug, Clone, Default)]
pub struct NllLoss {
    /// Per-class weights (C), or none.
    pub weight: Option<Tensor>,
    /// Class targets equal to this are ignored (PyTorch's default −100).
    pub ignore_index: Option<i64>,
    /// How per-sample losses are combined (default mean, divided by the summed weights).
    pub reduction: Reduction,
}

impl NllLoss {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self {
            ignore_index: Some(-100),
            ..Default::default()
        }
    }

    /// The loss of `log_probs` (N, C) at `classes` (N).
    pub fn forward(&self, log_probs: &Tensor, classes: &Tensor) -> Result<Tensor> {
        let (n, c) = logits_dims("nll_loss", log_probs)?;
        let weight = class_weights(self.weight.as_ref(), c)?;
        let picked = Picked::new(
            "nll_loss",
            log_probs,
            classes,
            n,
            c,
            self.ignore_index,
            weight.as_deref(),
        )?;
        picked.reduce(picked.nll(log_probs)?, self.reduction)
    }
}

fn logits_dims(loss: &str, x: &Tensor) -> Result<(usize, usize)> {
    match x.dims() {
        &[n, c] if c > 0 => Ok((n, c)),
        d => Err(Error::shape(loss, "(N, C) with C > 0", d)),
    }
}

fn class_weights(w: Option<&Tensor>, c: usize) -> Result<Option<Vec<f64>>> {
    match w {
        None => Ok(None),
        Some(w) if w.dims() == [c] => Ok(Some(w.to_dtype(DType::F64)?.to_vec1()?)),
        Some(w) => Err(Error::shape("class weight", format!("({c})"), w.dims())),
    }
}

/// The per-sample bookkeeping of a class-target loss: which targets count, their weights.
struct Picked {
    index: Tensor,
    /// w[target] per sample, 0 for ignored ones (N).
    w: Tensor,
    /// 1 for counted samples, 0 for ignored ones (N).
    valid: Tensor,
    weight_sum: f64,
}

impl Picked {
    fn new(
        loss: &str,
        logp: &Tensor,
        t: &Tensor,
        n: usize,
        c: usize,
        ignore: Option<i64>,
        weight: Option<&[f64]>,
    ) -> Result<Self> {
        if t.dims() != [n] {
            let expected = format!("integer class targets of shape ({n})");
            return Err(Error::shape(format!("{loss} target"), expected, t.dims()));
        }
        if t.dtype().is_float() {
            return Err(Error::DType {
                layer: format!("{loss} target"),
                expected: "integer class targets (u8, u32 or i64); class probabilities are \
                           a float tensor of shape (N, C)"
                    .into(),
                actual: format!("{:?}", t.dtype()),
                dims: t.dims().to_vec(),
            });
        }
        let ids: Vec<i64> = t.to_dtype(DType::I64)?.to_vec1()?;
        let (mut index, mut w, mut valid) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (i, &id) in ids.iter().enumerate() {
            if Some(id) == ignore {
                index.push(0u32);
                w.push(0.0);
                valid.push(0.0);
            } else if (0..c as i64).contains(&id) {
                index.push(id as u32);
                w.push(weight.map_or(1.0, |w| w[id as usize]));
                valid.push(1.0);
            } else {
                return Err(Error::InvalidValue {
                    field: "target",
                    value: format!("{id} at position {i}"),
                    expected: "a class index in [0, C) or ignore_index",
                });
            }
        }
        let dev = logp.device();
        let dt = logp.dtype();
        Ok(Self {
            index: Tensor::from_vec(index, (n, 1), dev)?,
            weight_sum: w.iter().sum(),
            w: Tensor::from_vec(w, n, dev)?.to_dtype(dt)?,
            valid: Tensor::from_vec(valid, n, dev)?.to_dtype(dt)?,
        })
    }

    /// −w[y]·logp[y] per sample.
    fn nll(&self, logp: &Tensor) -> Result<Tensor> {
        Ok(logp
            .gather(&self.index, 1)?
            .squeeze(1)?
            .mul(&self.w)?
            .neg()?)
    }

    /// Mean divides by the summed weights of the counted targets, as PyTorch.
    fn reduce(&self, per_sample: Tensor, reduction: Reduction) -> Result<Tensor> {
        Ok(match reduction {
            Reduction::Mean => per_sample.sum_all()?.affine(1.0 / self.weight_sum, 0.0)?,
            Reduction::Sum => per_sample.sum_all()?,
            Reduction::None => per_sample,
        })
    }
}

/// `nn.BCEWithLogitsLoss`: binary cross-entropy on logits, computed stably.
///
/// loss = −w·[p·y·log σ(x) + (1 − y)·log(1 − σ(x))], with `pos_weight` p broadcast over the
/// last dimension and the optional element `weight` w.
pub fn binary_cross_entropy_with_logits(
    logits: &Tensor,
    target: &Tensor,
    pos_weight: Option<&Tensor>,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    same_shape("binary_cross_entropy_with_logits", logits, target)?;
    let y = target.to_dtype(logits.dtype())?;
    // softplus(−x) = log(1 + e^{−x}) = m + log(e^{−m} + e^{−x−m}), m = max(−x, 0).
    let m = logits.neg()?.relu()?;
    let softplus_neg = (m.neg()?.exp()? + logits.neg()?.sub(&m)?.exp()?)?
        .log()?
        .add(&m)?;
    let log_weight = match pos_weight {
        Some(p) => y
            .broadcast_mul(&(p.to_dtype(y.dtype())? - 1.0)?)?
            .affine(1.0, 1.0)?,
        None => y.ones_like()?,
    };
    let mut loss = (y.affine(-1.0, 1.0)?.mul(logits)? + log_weight.mul(&softplus_neg)?)?;
    if let Some(w) = weight {
        loss = loss.broadcast_mul(&w.to_dtype(loss.dtype())?)?;
    }
    reduce(loss, reduction)
}
