//! The documents' gradient-norm-ratio adaptive rate:
//! η_t = η · max(‖g_t‖², ε) / max(‖g_{t−1}‖², ε), with η_1 = η.
//!
//! The rate rises when gradients grow and falls when they shrink, relative to the previous
//! step only (it does not compound). Call [`GradNormRatio::step`] with each step's
//! gradients before the optimizer step.

use taper_tensor::{Gradients, Norm, StateDict, Stateful};

use crate::error::check;
use crate::error::Result;
use crate::lr::control::{self, LrControl, LrDrive, LrGroups, LrTarget, Signal};

/// The gradient-norm-ratio rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradNormRatio {
    groups: LrGroups,
    eta: f64,
    eps: f64,
    previous: Option<f64>,
}

impl GradNormRatio {
    /// Base rate η and floor ε on the squared norms.
    pub fn new(eta: f64, eps: f64) -> Result<Self> {
        check(
            "GradNormRatio",
            "eta",
            eta,
            eta >= 0.0 && eta.is_finite(),
            "a finite eta >= 0",
        )?;
        check(
            "GradNormRatio",
            "eps",
            eps,
            eps > 0.0 && eps.is_finite(),
            "a finite eps > 0",
        )?;
        Ok(Self {
            groups: LrGroups::All,
            eta,
            eps,
            previous: None,
        })
    }

    /// The rate for gradients with squared L2 norm `sq_norm`; remembers it for the next step.
    ///
    /// A NaN or infinite norm is an error and changes nothing (it would set a rate of 0,
    /// ∞ or NaN, or, through `max(NaN, ε) = ε`, a rate many orders of magnitude off on this
    /// step and the next).
    pub fn rate(&mut self, sq_norm: f64) -> Result<f64> {
        if !sq_norm.is_finite() {
            return Err(taper_tensor::Error::NonFiniteNorm {
                norm: "squared L2".into(),
                total: sq_norm,
            }
            .into());
        }
        let cur = sq_norm.max(self.eps);
        let lr = match self.previous {
            None => self.eta,
            Some(prev) => self.eta * cur / prev,
        };
        self.previous = Some(cur);
        Ok(lr)
    }

    /// Builder: the groups it acts on (default every group; `LrGroups::One(i)`, or one
    /// member of an `OptimizerSet` with `set.groups_of(name)?`).
    pub fn groups(mut self, groups: LrGroups) -> Self {
        self.groups = groups;
        self
    }

    /// Computes the rate from `grads` and sets it on the groups; returns it. The shorthand
    /// for [`LrControl::step_with`] with the gradients.
    pub fn step(&mut self, grads: &Gradients, opt: &mut dyn LrTarget) -> Result<f64> {
        LrControl::step_with(self, Signal::default().grads(grads), opt)?;
        Ok(self.eta_now(opt))
    }

    /// The rate last set (η before the first step).
    fn eta_now(&self, opt: &dyn LrTarget) -> f64 {
        let g = match self.groups {
            LrGroups::All => 0,
            LrGroups::One(i) => i,
            LrGroups::Range { start, .. } => start,
        };
        opt.group_lr(g).unwrap_or(self.eta)
    }
}

impl LrControl for GradNormRatio {
    fn name(&self) -> &'static str {
        "GradNormRatio"
    }

    fn drive(&self) -> LrDrive {
        LrDrive::Gradients
    }

    /// Reads `signal.grads` (required; call before the optimizer step); `signal.step` is
    /// not used.
    fn step_with(&mut self, signal: Signal<'_>, opt: &mut dyn LrTarget) -> Result<()> {
        let grads = signal.need_grads("GradNormRatio")?;
        let groups = self.groups.indices(opt)?;
        let n = grads.norm(Norm::L2)?;
        let before = self.previous;
        let lr = self.rate(n * n)?;
        if !lr.is_finite() {
            self.previous = before;
            return Err(crate::error::Error::InvalidHyperparameter {
                owner: "GradNormRatio",
                field: "lr",
                value: lr.to_string(),
                expected: "a finite rate; the squared gradient norm grew beyond what f64 holds \
                           relative to the previous one (raise eps)",
            });
        }
        let old = control::snapshot(opt, &groups);
        for &g in &groups {
            if let Err(e) = opt.set_group_lr(g, lr) {
                self.previous = before;
                return control::restore(opt, &groups, &old, e);
            }
        }
        Ok(())
    }
}

impl Stateful for GradNormRatio {
    /// Writes `{prefix}.previous`: the last step's floored squared norm, or −1 before the
    /// first step.
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        out.set_scalar(prefix, "previous", self.previous.unwrap_or(-1.0));
        Ok(())
    }

    /// `previous` must be −1 (no step yet) or a finite value ≥ ε.
    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.read(prefix, state).map(|_| ())
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.previous = self.read(prefix, state)?;
        Ok(())
    }
}

impl GradNormRatio {
    fn read(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<Option<f64>> {
        let p = state.finite(prefix, "previous")?;
        if p == -1.0 {
            Ok(None)
        } else if p >= self.eps {
            Ok(Some(p))
        } else {
            Err(taper_tensor::Error::State {
                key: format!("{prefix}.previous"),
                reason: format!(
                    "is {p}; expected -1 (no step yet) or at least eps = {}",
                    self.eps
                ),
            })
        }
    }
}
