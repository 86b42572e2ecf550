//! `CyclicLR` (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"), with
//! PyTorch's semantics: the rate runs between `base_lr` and `max_lr` in cycles of
//! `step_size_up + step_size_down` steps, and momentum runs the other way.
//!
//! At step t, with cycle c = ⌊1 + t/T⌋ (T the cycle length), x = 1 + t/T − c and
//! r = step_size_up/T: the position s = x/r on the way up, (x − 1)/(r − 1) on the way down;
//! lr = base_lr + (max_lr − base_lr)·s·scale, momentum = max_m − (max_m − base_m)·s·scale,
//! where scale is 1 (`triangular`), 1/2^(c−1) (`triangular2`) or γ^t (`exp_range`).
//!
//! PyTorch counterpart: `torch.optim.lr_scheduler.CyclicLR(base_lr, max_lr,
//! step_size_up=2000, step_size_down=None, mode="triangular", gamma=1.0,
//! cycle_momentum=True, base_momentum=0.8, max_momentum=0.9)`: [`CyclicLr::new`] takes the
//! first two, the others are builders of the same names. As there, `base_lr` replaces the
//! group's own rate, and momentum cycling needs a rule with a momentum (SGD's, RMSprop's,
//! or the Adam family's β₁; plain SGD gains heavy-ball momentum): attaching it to one
//! without (Adagrad) is an error, as in PyTorch, unless `.cycle_momentum(false)`. Custom
//! `scale_fn`s are left out: compose a [`LambdaLr`](crate::LambdaLr) instead.

use crate::error::check;
use crate::error::Result;
use crate::lr::schedule::Schedule;

/// How the cycle's amplitude changes over time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CyclicMode {
    /// Constant amplitude (default).
    #[default]
    Triangular,
    /// The amplitude halves every cycle.
    Triangular2,
    /// The amplitude is scaled by γ^t at step t.
    ExpRange {
        /// γ, in (0, 1].
        gamma: f64,
    },
}

/// CyclicLR's configuration; [`CyclicLr::new`] gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CyclicLr {
    /// The lower rate.
    pub base_lr: f64,
    /// The upper rate.
    pub max_lr: f64,
    /// Steps from `base_lr` up to `max_lr` (default 2000).
    pub step_size_up: u64,
    /// Steps back down (default: `step_size_up`).
    pub step_size_down: Option<u64>,
    /// Amplitude policy (default triangular).
    pub mode: CyclicMode,
    /// (base, max) momentum, cycled inversely to the rate; `None` leaves momentum alone
    /// (PyTorch's `cycle_momentum=False`). Default (0.8, 0.9).
    pub momentum: Option<(f64, f64)>,
}

impl CyclicLr {
    /// Cycles between `base_lr` and `max_lr`, 2000 steps each way, with PyTorch's other
    /// defaults.
    pub fn new(base_lr: f64, max_lr: f64) -> Self {
        Self {
            base_lr,
            max_lr,
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            momentum: Some((0.8, 0.9)),
        }
    }

    /// Builder: steps from `base_lr` up to `max_lr`.
    pub fn step_size_up(mut self, steps: u64) -> Self {
        self.step_size_up = steps;
        self
    }

    /// Builder: steps back down (default: `step_size_up`).
    pub fn step_size_down(mut self, steps: u64) -> Self {
        self.step_size_down = Some(steps);
        self
    }

    /// Builder: the amplitude policy.
    pub fn mode(mut self, mode: CyclicMode) -> Self {
        self.mode = mode;
        self
    }

    /// Builder: cycle the momentum (or β₁) inversely to the rate, or leave it alone.
    pub fn cycle_momentum(mut self, on: bool) -> Self {
        self.momentum = on.then(|| self.momentum.unwrap_or((0.8, 0.9)));
        self
    }

    /// Builder: the momentum at `max_lr` (turns cycling on).
    pub fn base_momentum(mut self, base: f64) -> Self {
        self.momentum = Some((base, self.momentum.unwrap_or((0.8, 0.9)).1));
        self
    }

    /// Builder: the momentum at `base_lr` (turns cycling on).
    pub fn max_momentum(mut self, max: f64) -> Self {
        self.momentum = Some((self.momentum.unwrap_or((0.8, 0.9)).0, max));
        self
    }

    fn check(&self) -> Result<()> {
        let n = "CyclicLR";
        for (field, v) in [("base_lr", self.base_lr), ("max_lr", self.max_lr)] {
            check(n, field, v, v >= 0.0 && v.is_finite(), "a finite rate >= 0")?;
        }
        let up = self.step_size_up;
        let down = self.step_size_down.unwrap_or(up);
        check(
            n,
            "step_size_up",
            up as f64,
            up + down > 0,
            "step_size_up + step_size_down > 0",
        )?;
        if let CyclicMode::ExpRange { gamma } = self.mode {
            check(
                n,
                "gamma",
                gamma,
                gamma > 0.0 && gamma <= 1.0,
                "gamma in (0, 1]",
            )?;
        }
        if let Some((lo, hi)) = self.momentum {
            for (field, v) in [("base_momentum", lo), ("max_momentum", hi)] {
                check(n, field, v, (0.0..=1.0).contains(&v), "momentum in [0, 1]")?;
            }
        }
        Ok(())
    }

    /// (position in the cycle scaled by the mode's amplitude) at step `t`.
    fn height(&self, t: u64) -> f64 {
        let up = self.step_size_up as f64;
        let total = up + self.step_size_down.unwrap_or(self.step_size_up) as f64;
        let ratio = up / total;
        let tf = t as f64;
        let cycle = (1.0 + tf / total).floor();
        let x = 1.0 + tf / total - cycle;
        let position = if x <= ratio {
            x / ratio
        } else {
            (x - 1.0) / (ratio - 1.0)
        };
        let scale = match self.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange { gamma } => gamma.powf(tf),
        };
        position * scale
    }
}

impl Schedule for CyclicLr {
    fn name(&self) -> &'static str {
        "CyclicLR"
    }

    fn validate(&self) -> Result<()> {
        self.check()
    }

    /// The group's own rate is replaced by `base_lr`, as in PyTorch.
    fn lr(&self, _base: f64, t: u64) -> Result<f64> {
        Ok(self.base_lr + (self.max_lr - self.base_lr) * self.height(t))
    }

    fn momentum(&self, t: u64) -> Option<f64> {
        self.momentum
            .map(|(lo, hi)| hi - (hi - lo) * self.height(t))
    }
}
