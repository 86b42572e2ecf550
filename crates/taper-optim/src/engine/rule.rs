//! `Rule`: what an optimizer algorithm is, and the options every algorithm shares.
//!
//! An algorithm is a plain config struct (its hyperparameters, with documented defaults)
//! that implements [`Rule`]: which per-parameter state it keeps, the per-step scalars it
//! derives from the step count (bias corrections, rates), and its update direction written
//! once over [`Lane`]. [`update`] composes that direction with the shared options:
//! `maximize` and weight decay, coupled or decoupled.

use std::fmt::Debug;

use candle_core::Tensor;

use crate::engine::lane::Lane;
use crate::engine::slot::{Slots, StateSlot};
use crate::error::Result;

/// How weight decay enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum WeightDecay {
    /// No weight decay.
    #[default]
    None,
    /// Coupled L2: λ·θ is added to the gradient before the rule sees it (torch.optim's
    /// `weight_decay` for SGD, Adam, Adagrad, RMSprop, ...).
    L2(f64),
    /// Decoupled (AdamW, Loshchilov & Hutter 2019): θ ← θ·(1 − η·λ) before the update.
    Decoupled(f64),
}

impl WeightDecay {
    /// The coefficient λ (0 for `None`).
    pub fn value(&self) -> f64 {
        match *self {
            WeightDecay::None => 0.0,
            WeightDecay::L2(v) | WeightDecay::Decoupled(v) => v,
        }
    }
}

/// Where ε goes in adaptive methods' denominators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpsPlacement {
    /// √(v) + ε: PyTorch's form (and the documents' first Adam form).
    #[default]
    OutsideRoot,
    /// √(v + ε): the documents' AdaGrad, RMSProp and second Adam form.
    InsideRoot,
}

impl EpsPlacement {
    /// The denominator √v + ε or √(v + ε).
    #[inline(always)]
    pub fn denom<L: Lane>(self, v: &L, eps: f64) -> std::result::Result<L, L::Err> {
        match self {
            EpsPlacement::OutsideRoot => v.sqrt()?.affine(1.0, eps),
            EpsPlacement::InsideRoot => v.affine(1.0, eps)?.sqrt(),
        }
    }
}

/// Options every optimizer has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedOptions {
    /// The learning rate η.
    pub lr: f64,
    /// Weight decay, coupled or decoupled.
    pub weight_decay: WeightDecay,
    /// Maximize the objective instead of minimizing it (the gradient is negated first).
    pub maximize: bool,
}

impl SharedOptions {
    /// Learning rate `lr`, no weight decay, minimizing.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            weight_decay: WeightDecay::None,
            maximize: false,
        }
    }

    pub(crate) fn validate(&self, name: &'static str) -> Result<()> {
        crate::error::check(
            name,
            "lr",
            self.lr,
            self.lr >= 0.0 && self.lr.is_finite(),
            "a finite lr >= 0",
        )?;
        let wd = self.weight_decay.value();
        crate::error::check(
            name,
            "weight_decay",
            wd,
            wd >= 0.0 && wd.is_finite(),
            "a finite weight_decay >= 0",
        )
    }
}

/// An optimization algorithm: its hyperparameters and its update rule.
pub trait Rule: Clone + Debug + Send + Sync + 'static {
    /// The algorithm's name, as torch.optim names it where it exists there.
    const NAME: &'static str;

    /// Scalars derived once per parameter and step (rates, bias corrections).
    type Step: Copy + Send + Sync;

    /// The shared options.
    fn common(&self) -> &SharedOptions;

    /// The shared options, mutably (schedules change the learning rate through this).
    fn common_mut(&mut self) -> &mut SharedOptions;

    /// Checks the algorithm's own hyperparameters, naming the field at fault.
    fn validate(&self) -> Result<()>;

    /// The per-parameter state tensors' slots (an enum declared with
    /// [`slots!`](crate::slots), or [`NoSlot`](crate::NoSlot)).
    type Slot: StateSlot;

    /// The per-parameter scalar state's slots beyond the step count (NAdam's
    /// `mu_product`), or [`NoSlot`](crate::NoSlot).
    type Scalar: StateSlot;

    /// The state tensors this configuration keeps, in storage order (e.g. Adam:
    /// `[ExpAvg, ExpAvgSq]`, plus `MaxExpAvgSq` with AMSGrad); each is saved as
    /// `{param}.{name}`. Checked against the slots' positions when an optimizer is built.
    /// More than [`MAX_FUSED_STATE`](crate::MAX_FUSED_STATE) slots take the generic tensor
    /// path (see [`Optimizer::execution`](crate::Optimizer::execution)).
    fn slots(&self) -> &'static [Self::Slot];

    /// Initial value of a state tensor (0 unless the algorithm says otherwise).
    fn initial_state(&self, _slot: Self::Slot) -> f64 {
        0.0
    }

    /// The scalar state this configuration keeps, in storage order (all declared by default).
    fn scalars(&self) -> &'static [Self::Scalar] {
        Self::Scalar::ALL
    }

    /// Initial value of a scalar.
    fn initial_scalar(&self, _slot: Self::Scalar) -> f64 {
        0.0
    }

    /// The names of [`Rule::slots`], in storage order.
    fn state_names(&self) -> Vec<&'static str> {
        self.slots().iter().map(|s| s.name()).collect()
    }

    /// The step's scalars, for a parameter at its `step`-th update (1-based); may advance
    /// the parameter's scalar state.
    fn prepare(&self, step: u64, scalars: &mut Slots<'_, f64, Self::Scalar>) -> Self::Step;

    /// The amount to subtract from the parameter, given the (possibly decayed and negated)
    /// gradient `g`; updates `state` in place.
    fn direction<L: Lane>(
        &self,
        s: &Self::Step,
        g: &L,
        state: &mut Slots<'_, L, Self::Slot>,
    ) -> std::result::Result<L, L::Err>;

    /// The new parameter from the (decayed) parameter `p` and (negated, decayed) gradient
    /// `g`; updates `state` in place. The default is θ − [`Rule::direction`]. A rule whose
    /// update involves θ beyond weight decay overrides this and composes its own steps
    /// around `direction`, the way optax chains transforms: ASGD shrinks θ and keeps its
    /// average, LAMB adds decayed weights and scales by a trust ratio, LARS scales the
    /// gradient before its momentum.
    #[inline(always)]
    fn apply<L: Lane>(
        &self,
        s: &Self::Step,
        p: &L,
        g: &L,
        state: &mut Slots<'_, L, Self::Slot>,
    ) -> std::result::Result<L, L::Err> {
        let d = self.direction(s, g, state)?;
        p.sub(&d)
    }

    /// Whether this configuration needs per-tensor norms before each update (LAMB and
    /// LARS's trust ratios). When true, the optimizer runs one read-only pass per parameter
    /// first, computing ‖θ‖₂ and ‖u‖₂ of [`Rule::normed`]'s u, and hands them to
    /// [`Rule::set_norms`]; the update pass then runs as usual. Default false (no pass).
    fn needs_norms(&self) -> bool {
        false
    }

    /// The per-element quantity u whose norm [`Rule::needs_norms`] asks for, from the same
    /// inputs as [`Rule::apply`]. `state` is a scratch copy: what this writes is discarded.
    /// The default is the direction.
    #[inline(always)]
    fn normed<L: Lane>(
        &self,
        s: &Self::Step,
        _p: &L,
        g: &L,
        state: &mut Slots<'_, L, Self::Slot>,
    ) -> std::result::Result<L, L::Err> {
        self.direction(s, g, state)
    }

    /// Receives one parameter's norms (when [`Rule::needs_norms`]) before its update, to
    /// fold into the step's scalars.
    fn set_norms(&self, _s: &mut Self::Step, _norms: TensorNorms) {}

    /// The state slots kept for a parameter of shape `dims`, in storage order. The default
    /// is [`Rule::slots`] for every parameter; Adafactor keeps factored row and column
    /// moments for a matrix and a full one for a vector.
    fn slots_for(&self, _dims: &[usize]) -> &'static [Self::Slot] {
        self.slots()
    }

    /// The shape of `slot`'s tensor for a parameter of shape `dims` (default: the
    /// parameter's own; Adafactor's `row_var` is `dims` with the last axis 1).
    fn state_shape(&self, _slot: Self::Slot, dims: &[usize]) -> Vec<usize> {
        dims.to_vec()
    }

    /// Checks that this rule can update parameter `name` of shape `dims` (Muon takes only
    /// matrices); called for every parameter when an optimizer or group is built.
    fn check_param(&self, _name: &str, _dims: &[usize]) -> Result<()> {
        Ok(())
    }

    /// Whether a parameter of shape `dims` is stepped whole by [`Rule::tensor_step`]
    /// (reductions along axes, matrix products) rather than element by element. Such
    /// parameters take candle tensor ops on every device; no fused loop or generated kernel
    /// applies. Default false.
    fn whole_tensor(&self, _dims: &[usize]) -> bool {
        false
    }

    /// The step of a [`Rule::whole_tensor`] parameter, from the same inputs as
    /// [`Rule::apply`] (shared options already applied), as candle tensor ops. The default
    /// is `apply` over tensors.
    fn tensor_step(
        &self,
        s: &Self::Step,
        p: &Tensor,
        g: &Tensor,
        state: &mut Slots<'_, Tensor, Self::Slot>,
    ) -> candle_core::Result<Tensor> {
        self.apply(s, p, g, state)
    }

    /// The momentum-like coefficient schedules may cycle (SGD's and RMSprop's momentum,
    /// the Adam family's β₁), if the algorithm has one; `None` when it has none (Adagrad),
    /// which is what makes OneCycleLR and CyclicLR refuse to cycle momentum on it, as
    /// PyTorch does. A rule whose momentum is off but could be on (PyTorch's `SGD(lr)`, whose
    /// group holds `momentum = 0`) returns `Some(0.0)`.
    fn momentum_coefficient(&self) -> Option<f64> {
        None
    }

    /// Sets that coefficient as PyTorch's schedulers write `group['momentum']` or
    /// `group['betas'][0]` (on plain SGD this turns heavy-ball momentum on, without
    /// dampening); false, changing nothing, when the algorithm has none.
    fn set_momentum_coefficient(&mut self, _m: f64) -> bool {
        false
    }
}

/// The 2-norms of one parameter tensor and of its update quantity, for rules that scale
/// by their ratio ([`Rule::needs_norms`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorNorms {
    /// ‖θ‖₂ of the parameter, before this step.
    pub param: f64,
    /// ‖u‖₂ of [`Rule::normed`]'s u.
    pub update: f64,
    /// The number of elements (for RMS = ‖·‖ / √len).
    pub len: usize,
}

impl TensorNorms {
    /// The trust ratio φ·‖θ‖ / (‖u‖ + ε), or 1 where either norm is 0, as optax's
    /// `scale_by_trust_ratio(trust_coefficient = φ, eps = ε)` computes it (LAMB: φ = 1, ε = 0).
    pub fn trust_ratio(&self, coefficient: f64, eps: f64) -> f64 {
        if self.param == 0.0 || self.update == 0.0 {
            1.0
        } else {
            coefficient * self.param / (self.update + eps)
        }
    }
}

/// One update of one parameter, composed from the shared options and the rule's step:
/// negate for `maximize`, add coupled L2 to the gradient or shrink θ for decoupled decay,
/// then [`Rule::apply`] (θ ← θ − direction unless the rule composes its own). Both
/// execution paths and the generated kernels run exactly this.
#[inline(always)]
pub fn update<R: Rule, L: Lane>(
    rule: &R,
    s: &R::Step,
    p: &L,
    g: &L,
    state: &mut [L],
) -> std::result::Result<L, L::Err> {
    let (p, g) = shared_options(rule, p, g)?;
    rule.apply(s, &p, &g, &mut Slots::new(state))
}

/// [`update`] for a [`Rule::whole_tensor`] parameter: the shared options, then
/// [`Rule::tensor_step`].
pub(crate) fn update_tensor<R: Rule>(
    rule: &R,
    s: &R::Step,
    p: &Tensor,
    g: &Tensor,
    state: &mut [Tensor],
) -> candle_core::Result<Tensor> {
    let (p, g) = shared_options(rule, p, g)?;
    rule.tensor_step(s, &p, &g, &mut Slots::new(state))
}

/// The quantity [`Rule::normed`] reduces, from the same inputs as [`update`]; `state` is a
/// scratch copy.
#[inline(always)]
pub(crate) fn normed<R: Rule, L: Lane>(
    rule: &R,
    s: &R::Step,
    p: &L,
    g: &L,
    state: &mut [L],
) -> std::result::Result<L, L::Err> {
    let (p, g) = shared_options(rule, p, g)?;
    rule.normed(s, &p, &g, &mut Slots::new(state))
}

/// `maximize` and weight decay: the parameter and gradient a rule's step sees.
#[inline(always)]
fn shared_options<R: Rule, L: Lane>(rule: &R, p: &L, g: &L) -> std::result::Result<(L, L), L::Err> {
    let c = rule.common();
    let mut g = if c.maximize {
        g.scale(-1.0)?
    } else {
        g.clone()
    };
    let mut p = p.clone();
    match c.weight_decay {
        WeightDecay::L2(wd) if wd != 0.0 => g = g.add(&p.scale(wd)?)?,
        WeightDecay::Decoupled(wd) if wd != 0.0 => p = p.scale(1.0 - c.lr * wd)?,
        _ => {}
    }
    Ok((p, g))
}

/// Implements [`Rule::common`] and [`Rule::common_mut`] for a rule that keeps its
/// [`SharedOptions`] hyperparameters in a field named `common`.
macro_rules! common_field {
    () => {
        fn common(&self) -> &$crate::engine::rule::SharedOptions {
            &self.common
        }

        fn common_mut(&mut self) -> &mut $crate::engine::rule::SharedOptions {
            &mut self.common
        }
    };
}
pub(crate) use common_field;

/// The builders every optimizer configuration has, for a rule whose [`SharedOptions`] live
/// in a field named `common`: `lr`, `weight_decay` and `maximize`, each taking and returning
/// the configuration. Put it inside the rule's inherent `impl` block (`common_builders!();`);
/// rules whose own hyperparameter is called `weight_decay` (LAMB, LARS) use
/// `common_builders!(no_weight_decay)` and set the shared decay through `common`.
///
/// ```
/// use taper_optim::{common_builders, SharedOptions};
///
/// #[derive(Debug, Clone)]
/// struct MyRule {
///     common: SharedOptions,
/// }
///
/// impl MyRule {
///     common_builders!();
/// }
///
/// let r = MyRule { common: SharedOptions::new(0.1) }.lr(0.5).maximize(true);
/// assert_eq!((r.common.lr, r.common.maximize), (0.5, true));
/// ```
#[macro_export]
macro_rules! common_builders {
    () => {
        $crate::common_builders!(no_weight_decay);

        /// Builder: weight decay, coupled (`WeightDecay::L2`, PyTorch's `weight_decay` for
        /// SGD, Adam, Adagrad, RMSprop, …) or decoupled (`WeightDecay::Decoupled`, AdamW's).
        pub fn weight_decay(mut self, weight_decay: $crate::WeightDecay) -> Self {
            self.common.weight_decay = weight_decay;
            self
        }
    };
    (no_weight_decay) => {
        /// Builder: the learning rate η.
        pub fn lr(mut self, lr: f64) -> Self {
            self.common.lr = lr;
            self
        }

        /// Builder: maximize the objective instead of minimizing it (PyTorch's `maximize`).
        pub fn maximize(mut self, maximize: bool) -> Self {
            self.common.maximize = maximize;
            self
        }
    };
}

/// The `betas(β₁, β₂)` builder of the Adam family (fields `beta1`, `beta2`).
macro_rules! betas_builder {
    () => {
        /// Builder: (β₁, β₂).
        pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
            self.beta1 = beta1;
            self.beta2 = beta2;
            self
        }
    };
}
pub(crate) use betas_builder;

/// The `eps(ε)` builder of rules with an `eps` field (the Adam family).
macro_rules! eps_builder {
    () => {
        /// Builder: ε, the denominator's guard.
        pub fn eps(mut self, eps: f64) -> Self {
            self.eps = eps;
            self
        }
    };
}
pub(crate) use eps_builder;

/// The builders of the trust-ratio rules (LAMB, LARS; fields `weight_decay` and
/// `trust_ratio`): `weight_decay`, `trust_ratio` and `excluded`, the configuration for parameters
/// excluded by name, as optax's masks exclude them.
macro_rules! trust_ratio_builders {
    () => {
        /// Builder: λ, the decayed weights added to the update inside the trust ratio
        /// (optax's `weight_decay`; the shared, outside decay is `common.weight_decay`).
        pub fn weight_decay(mut self, weight_decay: f64) -> Self {
            self.weight_decay = weight_decay;
            self
        }

        /// Builder: scale by the trust ratio or not.
        pub fn trust_ratio(mut self, on: bool) -> Self {
            self.trust_ratio = on;
            self
        }

        /// This configuration for parameters excluded by name (biases, normalization): no
        /// weight decay and no trust ratio. Give it to a group:
        /// `opt.add_group("excluded", |n| n.ends_with("bias"), rule.excluded())`.
        pub fn excluded(self) -> Self {
            self.weight_decay(0.0).trust_ratio(false)
        }
    };
}
pub(crate) use trust_ratio_builders;
