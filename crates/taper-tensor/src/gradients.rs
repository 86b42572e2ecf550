//! `Gradients`: the gradients of one backward pass, keyed by parameter name.
//!
//! Candle's `GradStore` is keyed by a per-process `TensorId`; Taper keys by the parameter's
//! dotted name, so gradients can be accumulated across micro-batches, clipped, logged and
//! checked independently of tensor identity. Norms, clipping and the non-finite check follow
//! `torch.nn.utils` (`clip_grad_norm_`, `clip_grad_value_`).

use std::collections::HashMap;

use crate::{DType, Error, ParamStore, Result, Tensor, Var};

/// Which vector norm to take over all gradients together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Norm {
    /// The Euclidean norm √(Σ g²) (PyTorch's default `norm_type=2.0`).
    L2,
    /// The largest absolute value (`norm_type=inf`).
    Inf,
    /// The p-norm (Σ |g|^p)^(1/p), for p ≥ 1.
    P(f64),
}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Norm::L2 => write!(f, "L2"),
            Norm::Inf => write!(f, "inf"),
            Norm::P(p) => write!(f, "L{p}"),
        }
    }
}

/// What [`Gradients::clip_norm`] does when the total norm is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Scale anyway, as PyTorch does by default (`error_if_nonfinite=False`).
    #[default]
    Allow,
    /// Return [`Error::NonFiniteNorm`] and leave the gradients untouched.
    Error,
}

/// Gradients of the trainable parameters, in the store's order, keyed by name.
#[derive(Debug, Clone, Default)]
pub struct Gradients {
    names: Vec<String>,
    grads: Vec<Tensor>,
    index: HashMap<String, usize>,
    missing: Vec<String>,
}

impl Gradients {
    /// Runs `loss.backward()` and collects the gradients of `store`'s trainable parameters.
    ///
    /// ```
    /// use taper_tensor::{Gradients, ParamStore, Tensor, DType, Device};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let w = store.parameter("w", 2, |_, _, dev| Ok(Tensor::new(&[1f32, -2.], dev)?))?;
    /// let loss = w.sqr()?.sum_all()?; // d/dw = 2w
    /// let grads = Gradients::compute(&loss, &store)?;
    /// assert_eq!(grads.get("w").unwrap().to_vec1::<f32>()?, [2., -4.]);
    /// # Ok::<(), taper_tensor::Error>(())
    /// ```
    pub fn compute(loss: &Tensor, store: &ParamStore) -> Result<Self> {
        let grads = loss.backward()?;
        Ok(Self::from_grad_store(&grads, &store.trainable()))
    }

    /// Picks the gradients of the named variables out of a candle `GradStore`. A variable
    /// with no gradient (not used in the loss) is listed by [`Gradients::missing`].
    pub fn from_grad_store(
        grads: &candle_core::backprop::GradStore,
        params: &[(String, Var)],
    ) -> Self {
        let mut out = Self::default();
        for (name, var) in params {
            match grads.get(var.as_tensor()) {
                Some(g) => out.insert(name, g.clone()),
                None => out.missing.push(name.clone()),
            }
        }
        out
    }

    /// Sets the gradient of `name`, replacing any previous one.
    pub fn insert(&mut self, name: &str, grad: Tensor) {
        self.missing.retain(|m| m != name);
        match self.index.get(name) {
            Some(&i) => self.grads[i] = grad,
            None => {
                self.index.insert(name.to_string(), self.names.len());
                self.names.push(name.to_string());
                self.grads.push(grad);
            }
        }
    }

    /// The gradient of parameter `name`, if it received one.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.grads[i])
    }

    /// The names with a gradient, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// (name, gradient) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(self.grads.iter())
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no parameter received a gradient.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Trainable parameters that received no gradient from the backward pass (unused in the
    /// loss). Optimizers report these rather than silently skipping them.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The total norm of all gradients, as one vector (PyTorch's `get_total_norm`).
    /// Computed in f64. Zero when there are no gradients.
    pub fn norm(&self, norm: Norm) -> Result<f64> {
        let mut acc = 0f64;
        for g in &self.grads {
            let g = g.to_dtype(DType::F64)?;
            acc = match norm {
                Norm::L2 => acc + g.sqr()?.sum_all()?.to_scalar::<f64>()?,
                Norm::Inf => acc.max(g.abs()?.max_all()?.to_scalar::<f64>()?),
                Norm::P(p) => acc + g.abs()?.powf(p)?.sum_all()?.to_scalar::<f64>()?,
            };
            if acc.is_nan() {
                break;
            }
        }
        Ok(match norm {
            Norm::L2 => acc.sqrt(),
            Norm::Inf => acc,
            Norm::P(p) => acc.powf(1.0 / p),
        })
    }

    /// Rescales all gradients so their total norm is at most `max_norm`, exactly as
    /// `torch.nn.utils.clip_grad_norm_`: with `coef = max_norm / (total + 1e-6)`, gradients
    /// are multiplied by `coef` when `coef < 1`. Returns the total norm before clipping.
    ///
    /// ```
    /// use taper_tensor::{Gradients, Norm, NonFinite, Tensor, Device};
    /// let mut g = Gradients::default();
    /// g.insert("w", Tensor::new(&[3f32, 4.], &Device::Cpu)?);
    /// let total = g.clip_norm(1.0, Norm::L2, NonFinite::Error)?;
    /// assert_eq!(total, 5.0);
    /// assert!((g.norm(Norm::L2)? - 1.0).abs() < 1e-6);
    /// # Ok::<(), taper_tensor::Error>(())
    /// ```
    pub fn clip_norm(&mut self, max_norm: f64, norm: Norm, nonfinite: NonFinite) -> Result<f64> {
        if !(max_norm >= 0.0) {
            return Err(Error::InvalidValue {
                field: "max_norm",
                value: max_norm.to_string(),
                expected: "max_norm >= 0",
            });
        }
        if let Norm::P(p) = norm {
            if !(p >= 1.0) {
                return Err(Error::InvalidValue {
                    field: "norm",
                    value: p.to_string(),
                    expected: "a p-norm with p >= 1",
                });
            }
        }
        let total = self.norm(norm)?;
        if !total.is_finite() && nonfinite == NonFinite::Error {
            return Err(Error::NonFiniteNorm {
                norm: norm.to_string(),
                total,
            });
        }
        let coef = max_norm / (total + 1e-6);
        // NaN compares false, so a NaN total scales by NaN, as PyTorch does.
        if !(coef >= 1.0) {
            self.scale(coef)?;
        }
        Ok(total)
    }

    /// Clamps every gradient element to `[-clip, clip]` (`clip_grad_value_`).
    pub fn clip_value(&mut self, clip: f64) -> Result<()> {
        if !(clip >= 0.0) {
            return Err(Error::InvalidValue {
                field: "clip",
                value: clip.to_string(),
                expected: "clip >= 0",
            });
        }
        for g in self.grads.iter_mut() {
            *g = g.clamp(-clip, clip)?;
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor` (e.g. 1/k after accumulating k micro-batches).
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.grads.iter_mut() {
            *g = g.affine(factor, 0.0)?;
        }
        Ok(())
    }

    /// Adds `other`'s gradients into these, name by name (gradient accumulation over
    /// micro-batches). Names only `other` has are added; a parameter stays in
    /// [`Gradients::missing`] only if it is missing from both. Shapes must agree.
    pub fn accumulate(&mut self, other: &Gradients) -> Result<()> {
        for (name, g) in other.iter() {
            match self.index.get(name) {
                Some(&i) => {
                    let mine = &self.grads[i];
                    if mine.dims() != g.dims() {
                        return Err(Error::ShapeMismatch {
                            name: name.to_string(),
                            expected: mine.dims().to_vec(),
                            actual: g.dims().to_vec(),
                        });
                    }
                    self.grads[i] = mine.add(g)?;
                }
                None => self.insert(name, g.clone()),
            }
        }
        for m in &other.missing {
            if self.get(m).is_none() && !self.missing.contains(m) {
                self.missing.push(m.clone());
            }
        }
        Ok(())
    }

    /// The names of the gradients holding NaN or infinite values, in order.
    pub fn non_finite(&self) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        for (name, g) in self.iter() {
            if !all_finite(g)? {
                bad.push(name.to_string());
            }
        }
        Ok(bad)
    }

    /// Errors with [`Error::NonFiniteGradient`], naming the parameters, if any gradient
    /// holds NaN or infinity.
    pub fn check_finite(&self) -> Result<()> {
        let names = self.non_finite()?;
        if names.is_empty() {
            Ok(())
        } else {
            Err(Error::NonFiniteGradient { names })
        }
    }
}

impl IntoIterator for Gradients {
    type Item = (String, Tensor);
    type IntoIter = std::iter::Zip<std::vec::IntoIter<String>, std::vec::IntoIter<Tensor>>;

    fn into_iter(self) -> Self::IntoIter {
        self.names.into_iter().zip(self.grads)
    }
}

/// Whether every element of `t` is finite (no NaN, no ±inf), in one pass: x·0 is 0 for
/// finite x and NaN otherwise, so the sum is 0 exactly when all are finite. For
/// validating gradients and tensors read from files.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let s = t
        .affine(0.0, 0.0)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(s == 0.0)
}
