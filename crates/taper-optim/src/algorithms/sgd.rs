//! SGD: gradient descent, with PyTorch's momentum, Nesterov momentum, or the source
//! documents' exponential-average momentum.
//!
//! - Plain gradient descent θ ← θ − η·g (Robbins & Monro 1951) is the optimizer behind
//!   batch, stochastic and mini-batch training; the three differ only in the batches.
//! - `Momentum::Classic` and `Momentum::Nesterov` are `torch.optim.SGD` exactly
//!   (Sutskever et al. 2013): b ← μ·b + (1 − dampening)·g, with b = g on the first step.
//! - `Momentum::Ema` is the documents' form: v ← β·v + (1 − β)·g, θ ← θ − η·v, v₀ = 0.
//!   Its first step moves by η(1 − β)g, where PyTorch's moves by ηg.
//!
//! PyTorch counterpart: `torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov, maximize)`.

use crate::engine::lane::Lane;
use crate::engine::rule::{Rule, SharedOptions};
use crate::engine::slot::{NoSlot, Slots};
use crate::error::check;
use crate::error::Result;

crate::slots! {
    /// The per-parameter state of [`Sgd`], as torch.optim names it.
    pub enum SgdSlot {
        /// The momentum buffer (absent for plain SGD).
        MomentumBuffer = "momentum_buffer",
    }
}

/// The momentum variant of [`Sgd`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Momentum {
    /// Plain gradient descent (PyTorch's default `momentum=0`).
    #[default]
    None,
    /// PyTorch's heavy-ball momentum: b ← μ·b + (1 − dampening)·g (b₁ = g), θ ← θ − η·b.
    Classic {
        /// μ, in (0, 1].
        momentum: f64,
        /// Dampening, in [0, 1].
        dampening: f64,
    },
    /// PyTorch's Nesterov momentum: b as Classic without dampening, θ ← θ − η·(g + μ·b).
    Nesterov {
        /// μ, in (0, 1].
        momentum: f64,
    },
    /// The documents' exponential average: v ← β·v + (1 − β)·g (v₀ = 0), θ ← θ − η·v.
    Ema {
        /// β, in [0, 1).
        beta: f64,
    },
}

impl From<f64> for Momentum {
    /// PyTorch's `SGD(momentum=m)`: heavy-ball momentum `m` without dampening (`0.0` is
    /// plain SGD), so `Sgd::new(lr).momentum(0.9)` reads as
    /// `RmsProp::new(lr).momentum(0.9)` does.
    fn from(momentum: f64) -> Self {
        Momentum::Classic {
            momentum,
            dampening: 0.0,
        }
    }
}

/// Stochastic gradient descent. `Sgd::new(lr)` is plain gradient descent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Learning rate, weight decay, maximize.
    pub common: SharedOptions,
    /// The momentum variant.
    pub momentum: Momentum,
}

impl Sgd {
    crate::common_builders!();

    /// Plain gradient descent with learning rate `lr` (PyTorch requires lr; so does Taper).
    pub fn new(lr: f64) -> Self {
        Self {
            common: SharedOptions::new(lr),
            momentum: Momentum::None,
        }
    }

    /// Builder: the momentum variant.
    ///
    /// `Momentum::Classic { momentum: 0.0, .. }` is plain SGD, as PyTorch's `momentum=0`
    /// is (no momentum buffer is kept).
    ///
    /// Takes a [`Momentum`] variant, or a plain `f64` for PyTorch's heavy-ball momentum:
    ///
    /// ```
    /// use taper_optim::{Momentum, Sgd};
    /// let heavy_ball = Sgd::new(0.1).momentum(0.9);
    /// assert_eq!(heavy_ball.momentum, Momentum::Classic { momentum: 0.9, dampening: 0.0 });
    /// let nesterov = Sgd::new(0.1).momentum(Momentum::Nesterov { momentum: 0.9 });
    /// assert_eq!(Sgd::new(0.1).momentum(0.0).momentum, Momentum::None);
    /// # let _ = nesterov;
    /// ```
    pub fn momentum(mut self, momentum: impl Into<Momentum>) -> Self {
        self.momentum = match momentum.into() {
            Momentum::Classic { momentum: 0.0, .. } => Momentum::None,
            m => m,
        };
        self
    }
}

/// Per-step scalars of [`Sgd`].
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    lr: f64,
    first: bool,
}

impl Rule for Sgd {
    const NAME: &'static str = "SGD";
    type Step = SgdStep;
    type Slot = SgdSlot;
    type Scalar = NoSlot;

    crate::engine::rule::common_field!();

    fn validate(&self) -> Result<()> {
        match self.momentum {
            Momentum::None => Ok(()),
            Momentum::Classic {
                momentum,
                dampening,
            } => {
                check(
                    "SGD",
                    "momentum",
                    momentum,
                    (0.0..=1.0).contains(&momentum),
                    "momentum in [0, 1] (0 is plain SGD, as in PyTorch)",
                )?;
                check(
                    "SGD",
                    "dampening",
                    dampening,
                    (0.0..=1.0).contains(&dampening),
                    "dampening in [0, 1]",
                )
            }
            Momentum::Nesterov { momentum } => check(
                "SGD",
                "momentum",
                momentum,
                momentum > 0.0 && momentum <= 1.0,
                "Nesterov momentum requires momentum in (0, 1]",
            ),
            Momentum::Ema { beta } => check(
                "SGD",
                "beta",
                beta,
                (0.0..1.0).contains(&beta),
                "beta in [0, 1)",
            ),
        }
    }

    fn slots(&self) -> &'static [SgdSlot] {
        match self.momentum {
            Momentum::None => &[],
            _ => &[SgdSlot::MomentumBuffer],
        }
    }

    fn prepare(&self, step: u64, _: &mut Slots<'_, f64, NoSlot>) -> SgdStep {
        SgdStep {
            lr: self.common.lr,
            first: step == 1,
        }
    }

    #[inline(always)]
    fn direction<L: Lane>(
        &self,
        s: &SgdStep,
        g: &L,
        state: &mut Slots<'_, L, SgdSlot>,
    ) -> std::result::Result<L, L::Err> {
        use SgdSlot::*;
        let d = match self.momentum {
            Momentum::None => g.clone(),
            Momentum::Classic {
                momentum,
                dampening,
            } => {
                state[MomentumBuffer] = if s.first {
                    g.clone()
                } else {
                    state[MomentumBuffer]
                        .scale(momentum)?
                        .add(&g.scale(1.0 - dampening)?)?
                };
                state[MomentumBuffer].clone()
            }
            Momentum::Nesterov { momentum } => {
                state[MomentumBuffer] = if s.first {
                    g.clone()
                } else {
                    state[MomentumBuffer].scale(momentum)?.add(g)?
                };
                g.add(&state[MomentumBuffer].scale(momentum)?)?
            }
            Momentum::Ema { beta } => {
                state[MomentumBuffer] = state[MomentumBuffer].ema(g, beta)?;
                state[MomentumBuffer].clone()
            }
        };
        d.scale(s.lr)
    }

    /// 0 for plain SGD (PyTorch's `SGD(lr)` holds `momentum = 0` in its group), μ for
    /// heavy-ball and Nesterov momentum, β for the documents' exponential average.
    fn momentum_coefficient(&self) -> Option<f64> {
        match self.momentum {
            Momentum::None => Some(0.0),
            Momentum::Classic { momentum, .. } | Momentum::Nesterov { momentum } => Some(momentum),
            Momentum::Ema { beta } => Some(beta),
        }
    }

    /// On plain SGD, turns PyTorch's heavy-ball momentum on without dampening, as writing
    /// `group['momentum']` does in PyTorch (OneCycleLR, CyclicLR); the buffer starts as the
    /// first gradient it sees.
    fn set_momentum_coefficient(&mut self, m: f64) -> bool {
        match &mut self.momentum {
            Momentum::None if m == 0.0 => {}
            Momentum::None => {
                self.momentum = Momentum::Classic {
                    momentum: m,
                    dampening: 0.0,
                }
            }
            Momentum::Classic { momentum, .. } | Momentum::Nesterov { momentum } => *momentum = m,
            Momentum::Ema { beta } => *beta = m,
        }
        true
    }
}
