//! `Optimizer`: runs a [`Rule`] over named parameters, in groups, keeping per-parameter state.
//!
//! State is keyed by parameter name (never by candle's per-process `TensorId`), counted per
//! parameter as torch.optim does (a parameter that gets no gradient in a step does not
//! advance), and stored as plain tensors and scalars ([`ParamState`]).

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use taper_tensor::{Gradients, NonFinite, Norm, ParamStore};

use crate::engine::execution::{decide, Execution, UpdatePath};
use crate::engine::rule::{update, update_tensor, Rule, TensorNorms};
use crate::engine::slot::Slots;
use crate::{backends::fused, error::Error, error::Result};

/// What `step` does when a gradient holds NaN or infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFiniteGrads {
    /// Update anyway, as torch.optim does (state may become NaN).
    #[default]
    Apply,
    /// Check every gradient first; if any is not finite, skip the whole step (no parameter,
    /// state or step count changes) and name the offenders in the [`StepReport`]. Costs one
    /// extra pass over the gradients.
    Skip,
}

/// Gradient clipping applied before every step (the user's gradients are not modified).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Clip {
    /// No clipping (default).
    #[default]
    None,
    /// Rescale all gradients together so their total norm is at most `max_norm`, exactly as
    /// `torch.nn.utils.clip_grad_norm_`; the pre-clip norm is reported.
    Norm {
        /// The largest total norm allowed.
        max_norm: f64,
        /// Which norm.
        norm: Norm,
    },
    /// Clamp every element to [−v, v] (`clip_grad_value_`).
    Value(f64),
}

impl Clip {
    /// Checks the bound, naming `owner` (the optimizer) in the error.
    pub(crate) fn validate(self, owner: &'static str) -> Result<()> {
        let bad = match self {
            Clip::None => None,
            Clip::Norm {
                norm: Norm::P(p), ..
            } if !(p >= 1.0 && p.is_finite()) => {
                return Err(Error::InvalidHyperparameter {
                    owner,
                    field: "norm_type",
                    value: p.to_string(),
                    expected: "a finite p >= 1 (use Norm::Inf for the max norm)",
                })
            }
            Clip::Norm { max_norm, .. } => (!(max_norm >= 0.0)).then_some(("max_norm", max_norm)),
            Clip::Value(v) => (!(v >= 0.0)).then_some(("clip_value", v)),
        };
        match bad {
            Some((field, v)) => Err(Error::InvalidHyperparameter {
                owner,
                field,
                value: v.to_string(),
                expected: "a clipping bound >= 0",
            }),
            None => Ok(()),
        }
    }

    /// The clipped copy of `grads` (`None` without clipping; the caller's gradients are
    /// never modified), and with `Clip::Norm` the total norm before clipping.
    pub(crate) fn apply(self, grads: &Gradients) -> Result<(Option<Gradients>, Option<f64>)> {
        match self {
            Clip::None => Ok((None, None)),
            Clip::Norm { max_norm, norm } => {
                let mut g = grads.clone();
                let total = g.clip_norm(max_norm, norm, NonFinite::Allow)?;
                Ok((Some(g), Some(total)))
            }
            Clip::Value(v) => {
                let mut g = grads.clone();
                g.clip_value(v)?;
                Ok((Some(g), None))
            }
        }
    }
}

/// What one `step` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Number of parameters updated.
    pub updated: usize,
    /// Parameters of the optimizer that received no gradient (not updated).
    pub missing: Vec<String>,
    /// With [`NonFiniteGrads::Skip`]: the parameters whose gradients were not finite.
    pub non_finite: Vec<String>,
    /// True when the step was skipped because of non-finite gradients.
    pub skipped: bool,
    /// With [`Clip::Norm`]: the total gradient norm before clipping.
    pub grad_norm: Option<f64>,
}

/// A set of parameters sharing one configuration of the rule.
#[derive(Debug, Clone)]
pub struct Group<R> {
    /// The group's hyperparameters.
    pub rule: R,
    label: String,
    params: Vec<(String, Var)>,
}

impl<R> Group<R> {
    /// The group's label (`default` or the one given to `add_group`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The names of the group's parameters, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }
}

/// Per-parameter optimizer state: the step count, the rule's scalars and its tensors.
#[derive(Debug, Clone)]
pub struct ParamState {
    /// How many updates this parameter has received.
    pub step: u64,
    /// Scalar state, in the order of `Rule::scalars`.
    pub scalars: Vec<f64>,
    /// State tensors, in the order of `Rule::slots`.
    pub tensors: Vec<Tensor>,
}

/// An optimizer: a rule applied to groups of named parameters.
///
/// ```
/// use taper_optim::{Adam, Optimizer, Rule};
/// use taper_tensor::{Gradients, ParamStore, Tensor, DType, Device};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let w = store.parameter("w", 2, |_, _, d| Ok(Tensor::new(&[1f32, -1.], d)?))?;
/// let mut opt = Optimizer::new(Adam::new(0.1), &store)?;
/// for _ in 0..100 {
///     let loss = w.sqr()?.sum_all()?;
///     opt.step(&Gradients::compute(&loss, &store)?)?;
/// }
/// assert!(w.abs()?.max_all()?.to_scalar::<f32>()? < 0.05);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Its `Debug` output names the execution path each group takes (`execution`), so a rule
/// that cannot take the fused CPU loop (more than [`MAX_FUSED_STATE`](crate::MAX_FUSED_STATE)
/// state tensors, or [`UpdatePath::Generic`]) shows it instead of slowing down quietly.
#[derive(Clone)]
pub struct Optimizer<R: Rule> {
    groups: Vec<Group<R>>,
    state: HashMap<String, ParamState>,
    steps: u64,
    path: UpdatePath,
    non_finite: NonFiniteGrads,
    clip: Clip,
}

impl<R: Rule> std::fmt::Debug for Optimizer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("groups", &self.groups)
            .field("execution", &self.execution())
            .field("steps", &self.steps)
            .field("path", &self.path)
            .field("non_finite", &self.non_finite)
            .field("clip", &self.clip)
            .field("state", &self.state)
            .finish()
    }
}

impl<R: Rule> Optimizer<R> {
    /// How each group's parameters are updated: the fused in-place CPU loop, the fused CUDA
    /// kernel (feature `cuda`, parameters on a CUDA device), or candle tensor ops and why
    /// (one line per group, in group order). Each parameter's path comes from the same
    /// decision the step makes ([`Execution`]), with its current state (or the state its
    /// first step would create) and a gradient like the parameter; a group reports the
    /// first parameter that cannot take the fused path, else the fused path.
    ///
    /// ```
    /// use taper_optim::{Adam, Optimizer, UpdatePath};
    /// use taper_tensor::{DType, Device, ParamStore};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// store.parameter("w", 4, |s, dt, d| Ok(taper_tensor::Tensor::zeros(s, dt, d)?))?;
    /// let opt = Optimizer::new(Adam::new(1e-3), &store)?;
    /// assert_eq!(opt.execution(), ["default: fused CPU loop (2 state tensors)"]);
    /// let generic = opt.update_path(UpdatePath::Generic);
    /// assert_eq!(generic.execution(), ["default: tensor ops (UpdatePath::Generic was chosen)"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execution(&self) -> Vec<String> {
        self.report_execution(None)
    }

    /// [`Optimizer::execution`] for a step with `grads`: the path each group takes with
    /// these gradients, by the same decision the step makes (a gradient of another dtype,
    /// or not contiguous, takes tensor ops).
    ///
    /// ```
    /// use taper_optim::{Adam, Optimizer};
    /// use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// store.parameter("w", 4, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
    /// let opt = Optimizer::new(Adam::new(1e-3), &store)?;
    /// let mut grads = Gradients::default();
    /// grads.insert("w", Tensor::ones(4, DType::F64, &Device::Cpu)?); // an f64 gradient
    /// assert!(opt.execution_with(&grads)[0].starts_with("default: tensor ops: the gradient"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execution_with(&self, grads: &Gradients) -> Vec<String> {
        self.report_execution(Some(grads))
    }

    /// One line per group: the first parameter that cannot take the fused path, else the
    /// fused path, each decided by [`decide`].
    fn report_execution(&self, grads: Option<&Gradients>) -> Vec<String> {
        self.groups
            .iter()
            .map(|g| {
                let paths: Vec<Execution> = g
                    .params
                    .iter()
                    .map(|(name, v)| {
                        let state = self.state.get(name).map(|st| st.tensors.as_slice());
                        let grad = grads.and_then(|gs| gs.get(name));
                        decide(&g.rule, self.path, v.as_tensor(), grad, state)
                    })
                    .collect();
                let whole = g
                    .params
                    .iter()
                    .filter(|(_, v)| g.rule.whole_tensor(v.dims()))
                    .count();
                let how = if whole > 0 {
                    format!(
                        "tensor ops: {} steps whole tensors ({whole} of {} parameters)",
                        R::NAME,
                        g.params.len()
                    )
                } else {
                    let first = paths.iter().find(|e| !e.is_fused()).or(paths.first());
                    first.map_or_else(String::new, Execution::to_string)
                };
                format!("{}: {how}", g.label)
            })
            .collect()
    }

    /// An optimizer over the trainable parameters of `store` (frozen ones and buffers
    /// excluded), all in one group with `rule`'s hyperparameters.
    pub fn new(rule: R, store: &ParamStore) -> Result<Self> {
        Self::from_vars(rule, store.trainable())
    }

    /// An optimizer over any named candle variables (e.g. a candle-nn `VarMap`'s).
    ///
    /// An empty list is an error, as in PyTorch ("optimizer got an empty parameter list"):
    /// such an optimizer would train nothing and say nothing.
    pub fn from_vars(rule: R, params: Vec<(String, Var)>) -> Result<Self> {
        validate(&rule)?;
        if params.is_empty() {
            return Err(Error::NoParameters { optimizer: R::NAME });
        }
        for (name, var) in &params {
            rule.check_param(name, var.dims())?;
        }
        Ok(Self {
            groups: vec![Group {
                rule,
                label: "default".into(),
                params,
            }],
            state: HashMap::new(),
            steps: 0,
            path: UpdatePath::Auto,
            non_finite: NonFiniteGrads::Apply,
            clip: Clip::None,
        })
    }

    /// Moves the parameters whose names satisfy `select` into a new group with its own
    /// hyperparameters (e.g. no weight decay on biases). Returns how many moved; selecting
    /// none is an error.
    pub fn add_group(
        &mut self,
        label: &str,
        select: impl Fn(&str) -> bool,
        rule: R,
    ) -> Result<usize> {
        validate(&rule)?;
        for (name, var, _) in self.params().filter(|(n, _, _)| select(n)) {
            rule.check_param(name, var.dims())?;
        }
        let mut moved = Vec::new();
        for g in &mut self.groups {
            let (take, keep): (Vec<_>, Vec<_>) = g.params.drain(..).partition(|(n, _)| select(n));
            g.params = keep;
            moved.extend(take);
        }
        if moved.is_empty() {
            return Err(Error::EmptyGroup {
                group: label.to_string(),
            });
        }
        let n = moved.len();
        self.groups.push(Group {
            rule,
            label: label.to_string(),
            params: moved,
        });
        Ok(n)
    }

    /// Builder: which update paths may run (default [`UpdatePath::Auto`]).
    pub fn update_path(mut self, path: UpdatePath) -> Self {
        self.path = path;
        self
    }

    /// Builder: what happens on non-finite gradients (default [`NonFiniteGrads::Apply`]).
    pub fn non_finite(mut self, policy: NonFiniteGrads) -> Self {
        self.non_finite = policy;
        self
    }

    /// Builder: clips gradients before every step (default [`Clip::None`]). The clip sees
    /// the gradients given to [`Optimizer::step`]: with one optimizer over the whole model
    /// that is every parameter's, as `clip_grad_norm_(model.parameters())`; to clip each
    /// part of a model by its own norm, give each its own optimizer in an
    /// [`OptimizerSet`](crate::OptimizerSet), which hands every member only its gradients.
    /// An out-of-range bound is an error naming it.
    pub fn clip(mut self, clip: Clip) -> Result<Self> {
        clip.validate(R::NAME)?;
        self.clip = clip;
        Ok(self)
    }

    /// The groups, in order (the first is `default`).
    pub fn groups(&self) -> &[Group<R>] {
        &self.groups
    }

    /// Changes group `i`'s hyperparameters through `f`, then validates them; an invalid
    /// change is rolled back and returned as the error.
    pub fn update_group(&mut self, i: usize, f: impl FnOnce(&mut R)) -> Result<()> {
        let Some(group) = self.groups.get_mut(i) else {
            return Err(Error::EmptyGroup {
                group: format!("#{i}"),
            });
        };
        let mut rule = group.rule.clone();
        f(&mut rule);
        validate(&rule)?;
        // A change can add or drop state tensors (OneCycle turning plain SGD's momentum on
        // adds its buffer): carry each parameter's state over by slot, before anything moves.
        let mut carried = Vec::new();
        for (name, var) in &group.params {
            if let Some(st) = self.state.get(name) {
                if group.rule.slots_for(var.dims()) != rule.slots_for(var.dims()) {
                    carried.push((name.clone(), carry_state(&group.rule, &rule, var, st)?));
                }
            }
        }
        group.rule = rule;
        self.state.extend(carried);
        Ok(())
    }

    /// The learning rate of the first group.
    pub fn lr(&self) -> f64 {
        self.groups[0].rule.common().lr
    }

    /// Sets the learning rate of every group.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        for i in 0..self.groups.len() {
            self.update_group(i, |r| r.common_mut().lr = lr)?;
        }
        Ok(())
    }

    /// Number of steps taken (skipped ones not counted).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state of parameter `name`, once it has been updated.
    pub fn state(&self, name: &str) -> Option<&ParamState> {
        self.state.get(name)
    }

    pub(crate) fn groups_mut(&mut self) -> &mut [Group<R>] {
        &mut self.groups
    }

    pub(crate) fn state_map(&self) -> &HashMap<String, ParamState> {
        &self.state
    }

    pub(crate) fn state_map_mut(&mut self) -> &mut HashMap<String, ParamState> {
        &mut self.state
    }

    pub(crate) fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// All (name, variable, group index) triples, in order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Var, usize)> {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.params.iter().map(move |(n, v)| (n.as_str(), v, i)))
    }

    /// Computes the gradients of `loss` for this optimizer's parameters and steps.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<StepReport> {
        let grads = loss.backward()?;
        let params: Vec<(String, Var)> = self
            .params()
            .map(|(n, v, _)| (n.to_string(), v.clone()))
            .collect();
        self.step(&Gradients::from_grad_store(&grads, &params))
    }

    /// Updates every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        let mut report = StepReport::default();
        if self.non_finite == NonFiniteGrads::Skip {
            report.non_finite = grads.non_finite()?;
            if !report.non_finite.is_empty() {
                report.skipped = true;
                return Ok(report);
            }
        }
        let (clipped, grad_norm) = self.clip.apply(grads)?;
        report.grad_norm = grad_norm;
        let grads = clipped.as_ref().unwrap_or(grads);
        for group in &self.groups {
            for (name, var) in &group.params {
                let Some(g) = grads.get(name) else {
                    report.missing.push(name.clone());
                    continue;
                };
                if g.dims() != var.dims() {
                    return Err(Error::GradientShape {
                        name: name.clone(),
                        expected: var.dims().to_vec(),
                        actual: g.dims().to_vec(),
                    });
                }
                let st = match self.state.get_mut(name) {
                    Some(st) => st,
                    None => self
                        .state
                        .entry(name.clone())
                        .or_insert(init_state(&group.rule, var)?),
                };
                apply(&group.rule, self.path, var, g, st)?;
                report.updated += 1;
            }
        }
        self.steps += 1;
        Ok(report)
    }
}

fn validate<R: Rule>(rule: &R) -> Result<()> {
    rule.common().validate(R::NAME)?;
    rule.validate()?;
    crate::engine::slot::check_layout(R::NAME, rule.slots())?;
    crate::engine::slot::check_layout(R::NAME, rule.scalars())
}

/// `st` (kept under `old`) as `new` keeps it: the tensors of the slots both have, and the
/// slots only `new` has initialized as a first step would create them.
fn carry_state<R: Rule>(old: &R, new: &R, var: &Var, st: &ParamState) -> Result<ParamState> {
    let before = old.slots_for(var.dims());
    let tensors = new
        .slots_for(var.dims())
        .iter()
        .map(|&slot| match before.iter().position(|&s| s == slot) {
            Some(i) => Ok(st.tensors[i].clone()),
            None => initial_tensor(new, slot, var),
        })
        .collect::<Result<_>>()?;
    Ok(ParamState {
        tensors,
        ..st.clone()
    })
}

/// The tensor of `slot` for parameter `var` before its first update.
fn initial_tensor<R: Rule>(rule: &R, slot: R::Slot, var: &Var) -> Result<Tensor> {
    let shape = rule.state_shape(slot, var.dims());
    Ok(Tensor::ones(shape, var.dtype(), var.device())?.affine(rule.initial_state(slot), 0.0)?)
}

pub(crate) fn init_state<R: Rule>(rule: &R, var: &Var) -> Result<ParamState> {
    let tensors = rule
        .slots_for(var.dims())
        .iter()
        .map(|&slot| initial_tensor(rule, slot, var))
        .collect::<Result<_>>()?;
    let scalars = rule
        .scalars()
        .iter()
        .map(|&slot| rule.initial_scalar(slot))
        .collect();
    Ok(ParamState {
        step: 0,
        scalars,
        tensors,
    })
}

fn apply<R: Rule>(
    rule: &R,
    path: UpdatePath,
    var: &Var,
    g: &Tensor,
    st: &mut ParamState,
) -> Result<()> {
    st.step += 1;
    let mut s = rule.prepare(st.step, &mut Slots::new(&mut st.scalars));
    let p = var.as_tensor();
    let execution = decide(rule, path, p, Some(g), Some(&st.tensors));
    if rule.needs_norms() {
        let norms = match execution {
            Execution::FusedCpu { .. } => fused::norms(rule, &s, p, g, &st.tensors)?,
            _ => tensor_norms(rule, &s, p, g, &st.tensors)?,
        };
        rule.set_norms(&mut s, norms);
    }
    match execution {
        Execution::FusedCpu { .. } => return fused::step(rule, &s, p, g, &st.tensors),
        #[cfg(feature = "cuda")]
        Execution::FusedCuda { .. }
            if crate::backends::cuda::step(rule, &s, p, g, &st.tensors)? =>
        {
            return Ok(());
        }
        _ => {}
    }
    let whole = matches!(
        execution,
        Execution::TensorOps(crate::engine::execution::TensorOpsReason::WholeTensor { .. })
    );
    let g = g.to_dtype(p.dtype())?.detach();
    let new = if whole {
        update_tensor(rule, &s, &p.detach(), &g, &mut st.tensors)?
    } else {
        update(rule, &s, &p.detach(), &g, &mut st.tensors)?
    };
    var.set(&new)?;
    Ok(())
}

/// The generic path's norm pass: [`Rule::normed`] on a scratch copy of the state (candle
/// tensors are values, so the real state is untouched), reduced in float64.
fn tensor_norms<R: Rule>(
    rule: &R,
    s: &R::Step,
    p: &Tensor,
    g: &Tensor,
    state: &[Tensor],
) -> Result<TensorNorms> {
    let p = p.detach();
    let g = g.to_dtype(p.dtype())?.detach();
    let mut scratch = state.to_vec();
    let u = crate::engine::rule::normed(rule, s, &p, &g, &mut scratch)?;
    let norm = |t: &Tensor| -> Result<f64> { Ok(fused::sum_squares(t)?.sqrt()) };
    Ok(TensorNorms {
        param: norm(&p)?,
        update: norm(&u)?,
        len: p.elem_count(),
    })
}
