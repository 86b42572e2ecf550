//! `gradcheck`: compare autograd gradients with central finite differences, in f64.
//!
//! Like `torch.autograd.gradcheck`, the function's output is reduced to a scalar with
//! fixed pseudo-random weights (so every output element matters), every input element is
//! perturbed by ±`eps`, and the numeric derivative (f(x+eps) − f(x−eps)) / 2eps is
//! compared with the analytic one. Defaults are PyTorch's: eps 1e-6, atol 1e-5, rtol 1e-3.

use rand::{Rng, SeedableRng};

use crate::{DType, Device, Error, Result, Tensor, Var};

/// Tolerances of [`gradcheck`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (to the numeric gradient).
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        Self {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The outcome of a [`gradcheck`]: the worst element found.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    /// Number of elements checked across all inputs.
    pub checked: usize,
    /// Largest |analytic − numeric|.
    pub max_abs_err: f64,
    /// The element with the largest error relative to the tolerance: (input, flat index,
    /// analytic, numeric).
    pub worst: Option<(usize, usize, f64, f64)>,
    /// Whether every element is within `atol + rtol·|numeric|`.
    pub passed: bool,
}

impl GradcheckReport {
    /// `Ok(())` when passed, else [`Error::GradcheckFailed`] describing the worst element.
    pub fn ok(&self) -> Result<()> {
        if self.passed {
            return Ok(());
        }
        let (i, j, a, n) = self.worst.unwrap_or_default();
        Err(Error::GradcheckFailed(format!(
            "input {i}, element {j}: analytic {a:.9e} vs numeric {n:.9e} (max abs error {:.3e} over {} elements)",
            self.max_abs_err, self.checked
        )))
    }
}

/// Checks `f`'s gradients with respect to every input. Inputs are converted to f64 CPU
/// variables; `f` must be differentiable in them and return a tensor of any shape.
///
/// ```
/// use taper_tensor::{gradcheck, GradcheckOptions, Tensor, Device};
/// let x = Tensor::new(&[0.3f64, -1.2, 2.0], &Device::Cpu)?;
/// let report = gradcheck(|xs| Ok(xs[0].tanh()?), &[x], GradcheckOptions::default())?;
/// report.ok()?;
/// # Ok::<(), taper_tensor::Error>(())
/// ```
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    opts: GradcheckOptions,
) -> Result<GradcheckReport> {
    if !(opts.eps > 0.0) {
        return Err(Error::InvalidValue {
            field: "eps",
            value: opts.eps.to_string(),
            expected: "eps > 0",
        });
    }
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?))
        .collect::<candle_core::Result<_>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors)?;
    // Fixed weights make the scalar depend on every output element with distinct slopes.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x7a9e);
    let w: Vec<f64> = (0..out.elem_count())
        .map(|_| rng.random_range(0.5..1.5))
        .collect();
    let w = Tensor::from_vec(w, out.shape(), &Device::Cpu)?;
    let scalar =
        |out: &Tensor| -> Result<Tensor> { Ok(out.to_dtype(DType::F64)?.mul(&w)?.sum_all()?) };
    let grads = scalar(&out)?.backward()?;

    let mut report = GradcheckReport {
        checked: 0,
        max_abs_err: 0.0,
        worst: None,
        passed: true,
    };
    let mut worst_ratio = f64::NEG_INFINITY;
    for (i, var) in vars.iter().enumerate() {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
            None => vec![0.0; var.elem_count()],
        };
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for (j, &x) in base.iter().enumerate() {
            let eval = |v: f64| -> Result<f64> {
                let mut p = base.clone();
                p[j] = v;
                let mut xs = tensors.clone();
                xs[i] = Tensor::from_vec(p, var.shape(), &Device::Cpu)?;
                Ok(scalar(&f(&xs)?)?.to_scalar::<f64>()?)
            };
            let numeric = (eval(x + opts.eps)? - eval(x - opts.eps)?) / (2.0 * opts.eps);
            let err = (analytic[j] - numeric).abs();
            let ratio = err / (opts.atol + opts.rtol * numeric.abs());
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(err);
            if !(ratio <= 1.0) {
                report.passed = false;
            }
            if ratio > worst_ratio || ratio.is_nan() {
                worst_ratio = if ratio.is_nan() { f64::INFINITY } else { ratio };
                report.worst = Some((i, j, analytic[j], numeric));
            }
        }
    }
    Ok(report)
}
