//! `SWALR`: the learning rate of stochastic weight averaging (Izmailov et al. 2018), annealed
//! from the base rate to a constant `swa_lr` over `anneal_epochs` steps and held there.
//!
//! lr_t = swa_lr·α(t) + base·(1 − α(t)), with t = min(1, step / anneal_epochs) and α the
//! cosine ((1 − cos πt)/2) or linear (t) ramp; with `anneal_epochs = 0` it is `swa_lr`
//! from the first step.
//!
//! PyTorch counterpart: `torch.optim.swa_utils.SWALR(optimizer, swa_lr, anneal_epochs=10,
//! anneal_strategy='cos')`. PyTorch writes it recursively, recovering the base from the
//! current rate each step; this closed form gives the same rates when nothing else moves
//! the rate meanwhile (chain it with [`SequentialLr`](crate::SequentialLr) to switch to it
//! at the epoch SWA starts). Average the weights with
//! [`AveragedModel`](crate::AveragedModel).

use crate::error::check;
use crate::error::Result;
use crate::lr::one_cycle::Anneal;
use crate::lr::schedule::Schedule;

/// `SWALR`'s configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwaLr {
    /// The rate held once annealing ends.
    pub swa_lr: f64,
    /// Steps (epochs, as PyTorch steps it) of annealing (default 10).
    pub anneal_epochs: u64,
    /// Cosine (default) or linear ramp.
    pub anneal_strategy: Anneal,
}

impl SwaLr {
    /// Anneals to `swa_lr` over PyTorch's default 10 steps, by cosine.
    ///
    /// ```
    /// use taper_optim::{Anneal, Schedule, SwaLr};
    /// let s = SwaLr::new(0.05).anneal_epochs(4).anneal_strategy(Anneal::Linear);
    /// assert_eq!(s.lr(0.1, 0)?, 0.1);
    /// assert!((s.lr(0.1, 2)? - 0.075).abs() < 1e-12);
    /// assert_eq!(s.lr(0.1, 9)?, 0.05);
    /// # Ok::<(), taper_optim::Error>(())
    /// ```
    pub fn new(swa_lr: f64) -> Self {
        Self {
            swa_lr,
            anneal_epochs: 10,
            anneal_strategy: Anneal::Cos,
        }
    }

    /// Builder: the number of annealing steps (0: `swa_lr` at once).
    pub fn anneal_epochs(mut self, n: u64) -> Self {
        self.anneal_epochs = n;
        self
    }

    /// Builder: the ramp's shape (PyTorch's `anneal_strategy`).
    pub fn anneal_strategy(mut self, anneal: Anneal) -> Self {
        self.anneal_strategy = anneal;
        self
    }
}

impl Schedule for SwaLr {
    fn name(&self) -> &'static str {
        "SWALR"
    }

    fn validate(&self) -> Result<()> {
        let r = self.swa_lr;
        check(
            self.name(),
            "swa_lr",
            r,
            r >= 0.0 && r.is_finite(),
            "a finite swa_lr >= 0",
        )
    }

    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let step = if self.anneal_epochs == 0 { t.max(1) } else { t };
        let frac = (step as f64 / self.anneal_epochs.max(1) as f64).clamp(0.0, 1.0);
        Ok(self.anneal_strategy.at(base, self.swa_lr, frac))
    }
}
