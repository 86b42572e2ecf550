//! `Optimizer`: runs a [`Rule`] over named parameters, in groups, keeping per-parameter state.
//!
//! State is keyed by parameter name (never by candle's per-process `TensorId`), counted per
//! parameter as torch.optim does (a parameter that gets no gradient in a step does not
//! advance), and stored as plain tensors and scalars ([`ParamState`]).

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
use taper_tensor::{Gradients, NonFinite, Norm, ParamStore};

use crate::engine::rule::{update, update_tensor, Rule, TensorNorms};
use crate::engine::slot::Slots;
use crate::{backends::fused, error::Error, error::Result};

/// Which implementation runs the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Path {
    /// The fused in-place CPU loop where it applies (CPU, f32/f64, contiguous), else tensor ops.
    #[default]
    Auto,
    /// Always candle tensor ops (works on every device and dtype).
    Generic,
}

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
/// state tensors, or [`Path::Generic`]) shows it instead of slowing down quietly.
#[derive(Clone)]
pub struct Optimizer<R: Rule> {
    groups: Vec<Group<R>>,
    state: HashMap<String, ParamState>,
    steps: u64,
    path: Path,
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
    /// (one line per group, in group order; a group with a parameter off the CPU is judged
    /// by that parameter's device).
    ///
    /// ```
    /// use taper_optim::{Adam, Optimizer, Path};
    /// use taper_tensor::{DType, Device, ParamStore};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// store.parameter("w", 4, |s, dt, d| Ok(taper_tensor::Tensor::zeros(s, dt, d)?))?;
    /// let opt = Optimizer::new(Adam::new(1e-3), &store)?;
    /// assert_eq!(opt.execution(), ["default: fused CPU loop (2 state tensors)"]);
    /// let generic = opt.with_path(Path::Generic);
    /// assert_eq!(generic.execution(), ["default: tensor ops (Path::Generic was chosen)"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execution(&self) -> Vec<String> {
        self.groups
            .iter()
            .map(|g| {
                let k = g.rule.slots().len();
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
                } else if self.path == Path::Generic {
                    "tensor ops (Path::Generic was chosen)".to_string()
                } else if let Some((_, v)) = g
                    .params
                    .iter()
                    .find(|(_, v)| !matches!(v.dtype(), DType::F32 | DType::F64))
                {
                    format!("tensor ops: {:?} parameters have no fused path", v.dtype())
                } else if let Some((_, v)) = g.params.iter().find(|(_, v)| !v.device().is_cpu()) {
                    if cfg!(feature = "cuda") && v.device().is_cuda() {
                        format!("fused CUDA kernel, NVRTC ({k} state tensors)")
                    } else {
                        format!("tensor ops: {:?} has no fused path", v.device().location())
                    }
                } else if k > fused::MAX_FUSED_STATE {
                    format!(
                        "tensor ops: {} keeps {k} state tensors, more than the fused loop's \
                         MAX_FUSED_STATE = {}",
                        R::NAME,
                        fused::MAX_FUSED_STATE
                    )
                } else {
                    format!("fused CPU loop ({k} state tensors)")
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
            path: Path::Auto,
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

    /// Chooses the execution path (default [`Path::Auto`]).
    pub fn with_path(mut self, path: Path) -> Self {
        self.path = path;
        self
    }

    /// Chooses what happens on non-finite gradients (default [`NonFiniteGrads::Apply`]).
    pub fn with_non_finite(mut self, policy: NonFiniteGrads) -> Self {
        self.non_finite = policy;
        self
    }

    /// Clips gradients before every step (default [`Clip::None`]).
    pub fn with_clip(mut self, clip: Clip) -> Result<Self> {
        let bad = match clip {
            Clip::None => None,
            Clip::Norm {
                norm: Norm::P(p), ..
            } if !(p >= 1.0 && p.is_finite()) => {
                return Err(Error::InvalidHyperparameter {
                    optimizer: R::NAME,
                    field: "norm_type",
                    value: p.to_string(),
                    expected: "a finite p >= 1 (use Norm::Inf for the max norm)",
                })
            }
            Clip::Norm { max_norm, .. } => (!(max_norm >= 0.0)).then_some(("max_norm", max_norm)),
            Clip::Value(v) => (!(v >= 0.0)).then_some(("clip_value", v)),
        };
        if let Some((field, v)) = bad {
            return Err(Error::InvalidHyperparameter {
                optimizer: R::NAME,
                field,
                value: v.to_string(),
                expected: "a clipping bound >= 0",
            });
        }
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
        group.rule = rule;
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
        let clipped;
        let grads = match self.clip {
            Clip::None => grads,
            Clip::Norm { max_norm, norm } => {
                let mut g = grads.clone();
                report.grad_norm = Some(g.clip_norm(max_norm, norm, NonFinite::Allow)?);
                clipped = g;
                &clipped
            }
            Clip::Value(v) => {
                let mut g = grads.clone();
                g.clip_value(v)?;
                clipped = g;
                &clipped
            }
        };
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

pub(crate) fn init_state<R: Rule>(rule: &R, var: &Var) -> Result<ParamState> {
    let tensors = rule
        .slots_for(var.dims())
        .iter()
        .map(|&slot| {
            let shape = rule.state_shape(slot, var.dims());
            Ok(Tensor::ones(shape, var.dtype(), var.device())?
                .affine(rule.initial_state(slot), 0.0)?)
        })
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

fn apply<R: Rule>(rule: &R, path: Path, var: &Var, g: &Tensor, st: &mut ParamState) -> Result<()> {
    st.step += 1;
    let mut s = rule.prepare(st.step, &mut Slots::new(&mut st.scalars));
    let p = var.as_tensor();
    let whole = rule.whole_tensor(p.dims());
    let fused = !whole && path == Path::Auto && fused::eligible(p, g, &st.tensors);
    #[cfg(feature = "cuda")]
    let on_gpu = !whole && path == Path::Auto && crate::backends::cuda::eligible(p, g, &st.tensors);
    if rule.needs_norms() {
        let norms = if fused {
            fused::norms(rule, &s, p, g, &st.tensors)?
        } else {
            tensor_norms(rule, &s, p, g, &st.tensors)?
        };
        rule.set_norms(&mut s, norms);
    }
    if fused {
        return fused::step(rule, &s, p, g, &st.tensors);
    }
    #[cfg(feature = "cuda")]
    if on_gpu && crate::backends::cuda::step(rule, &s, p, g, &st.tensors)? {
        return Ok(());
    }
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
