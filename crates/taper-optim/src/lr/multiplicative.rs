//! `MultiplicativeLR`: each step multiplies the rate by a factor the user's function gives,
//! lr_t = lr_{t−1}·f(t), so lr_t = base·∏_{k=1}^{t} f(k): still a pure function of the step.
//!
//! PyTorch counterpart: `torch.optim.lr_scheduler.MultiplicativeLR(lr_lambda)`. The product
//! is cached, so stepping forward costs one call of f per step, as in PyTorch.

use std::fmt::Debug;
use std::sync::Mutex;

use crate::error::Result;
use crate::lr::schedule::{finite_factor, Schedule};

/// `MultiplicativeLR`: base·∏ f(k) for k = 1..=t.
pub struct MultiplicativeLr {
    f: Box<dyn Fn(u64) -> f64 + Send + Sync>,
    /// (t, ∏_{k=1}^{t} f(k)) of the last call.
    cache: Mutex<(u64, f64)>,
}

impl MultiplicativeLr {
    /// The factor applied at each step, as a function of the step (1-based).
    ///
    /// ```
    /// use taper_optim::{MultiplicativeLr, Schedule};
    /// let s = MultiplicativeLr::new(|_| 0.5);
    /// assert_eq!(s.lr(1.0, 0)?, 1.0);
    /// assert_eq!(s.lr(1.0, 3)?, 0.125);
    /// # Ok::<(), taper_optim::Error>(())
    /// ```
    pub fn new(f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> Self {
        Self {
            f: Box::new(f),
            cache: Mutex::new((0, 1.0)),
        }
    }
}

impl Debug for MultiplicativeLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MultiplicativeLR(<closure>)")
    }
}

impl Schedule for MultiplicativeLr {
    fn name(&self) -> &'static str {
        "MultiplicativeLR"
    }

    fn lr(&self, base: f64, t: u64) -> Result<f64> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (mut k, mut product) = if cache.0 <= t { *cache } else { (0, 1.0) };
        while k < t {
            k += 1;
            product *= finite_factor("MultiplicativeLR", (self.f)(k), k)?;
        }
        *cache = (t, product);
        Ok(base * product)
    }
}
