//! `OptimizerSet`: several optimizers as one, each over its own named parameters, with its
//! own algorithm, clipping and schedules: Muon for the matrices and AdamW for the rest, or
//! SGD for a backbone and Adam for a head. It is an [`AnyOptimizer`], so it trains, is
//! driven by learning-rate controllers and is checkpointed as one piece, and `Fit` takes it.
//!
//! **Clipping has two scopes.** A member's own [`Clip`] (`Optimizer::clip`) sees only that
//! member's gradients: each member is handed the gradients of its parameters alone. The
//! set's [`OptimizerSet::clip`] sees every member's gradients together, as
//! `clip_grad_norm_(model.parameters())` does, and runs first. (One `Optimizer` given a
//! `Gradients` with other parameters' gradients clips by all of them; the set never gives it
//! any.)
//!
//! **Schedules** drive all members (`LrScheduler::new(schedule, &mut set)`: the set's groups
//! are its members' groups, in order) or one ([`OptimizerSet::groups_of`] with
//! `LrScheduler::for_groups`).

use std::collections::HashSet;

use candle_core::Var;
use taper_tensor::{Gradients, StateDict, Stateful};

use crate::engine::any::AnyOptimizer;
use crate::engine::optimizer::{Clip, StepReport};
use crate::error::{Error, Result};
use crate::lr::control::{LrGroups, LrTarget};

/// One member: its name (a prefix in the saved state), its optimizer and its parameters'
/// names.
struct Member {
    name: String,
    opt: Box<dyn AnyOptimizer>,
    params: HashSet<String>,
}

/// Several optimizers over disjoint parameters, stepped as one.
///
/// ```
/// use taper_optim::{Adam, AnyOptimizer, LrTarget, Muon, Optimizer, OptimizerSet};
/// use taper_tensor::{DType, Device, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let w = store.parameter("w", (4, 4), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
/// let b = store.parameter("b", 4, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
/// let (matrices, rest): (Vec<_>, Vec<_>) = store.trainable().into_iter().partition(|(_, v)| v.rank() == 2);
/// let mut opt = OptimizerSet::new()
///     .add("muon", Optimizer::from_vars(Muon::new(0.02), matrices)?)?
///     .add("adamw", Optimizer::from_vars(Adam::adamw(1e-3), rest)?)?;
/// let loss = w.sum_all()?.add(&b.sum_all()?)?;
/// opt.backward_step(&loss)?;
/// assert_eq!(opt.name(), "OptimizerSet(muon: Muon, adamw: Adam)");
/// assert_eq!((opt.steps(), opt.group_count()), (1, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct OptimizerSet {
    members: Vec<Member>,
    clip: Clip,
    steps: u64,
}

impl std::fmt::Debug for OptimizerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizerSet")
            .field("members", &self.name())
            .field("clip", &self.clip)
            .field("steps", &self.steps)
            .finish()
    }
}

impl OptimizerSet {
    /// An empty set; add members with [`OptimizerSet::add`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder: adds `opt` as the member `name` (its state is saved under `name.`). The
    /// name must be new, non-empty and without dots; the member's parameters must be new to
    /// the set (a parameter updated by two optimizers would be stepped twice); and an
    /// optimizer that re-evaluates the loss (L-BFGS) cannot be a member.
    pub fn add(mut self, name: &str, opt: impl AnyOptimizer + 'static) -> Result<Self> {
        let bad_name = name.is_empty()
            || name.contains('.')
            || name == "steps"
            || self.members.iter().any(|m| m.name == name);
        if bad_name {
            return Err(Error::InvalidHyperparameter {
                owner: "OptimizerSet",
                field: "member name",
                value: format!("`{name}`"),
                expected: "a new, non-empty name without dots (and not `steps`)",
            });
        }
        if opt.needs_closure() {
            return Err(Error::InvalidHyperparameter {
                owner: "OptimizerSet",
                field: "member",
                value: format!("`{name}`: {}", opt.name()),
                expected: "an optimizer that steps from gradients (L-BFGS re-evaluates the loss)",
            });
        }
        let params: HashSet<String> = opt.params().into_iter().map(|(n, _)| n).collect();
        if let Some((other, p)) = self.members.iter().find_map(|m| {
            params
                .iter()
                .find(|p| m.params.contains(*p))
                .map(|p| (m, p))
        }) {
            return Err(Error::InvalidHyperparameter {
                owner: "OptimizerSet",
                field: "member",
                value: format!("`{name}` and `{}` both update `{p}`", other.name),
                expected: "members over disjoint parameters",
            });
        }
        self.members.push(Member {
            name: name.to_string(),
            opt: Box::new(opt),
            params,
        });
        Ok(self)
    }

    /// Builder: clips every member's gradients together before any member steps (the
    /// global scope; each member's own clip still applies to its own gradients after).
    pub fn clip(mut self, clip: Clip) -> Result<Self> {
        clip.validate("OptimizerSet")?;
        self.clip = clip;
        Ok(self)
    }

    /// The members' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    /// Member `name`.
    pub fn member(&self, name: &str) -> Option<&dyn AnyOptimizer> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.opt.as_ref())
    }

    /// Member `name`, mutably (to change its hyperparameters).
    pub fn member_mut(&mut self, name: &str) -> Option<&mut (dyn AnyOptimizer + 'static)> {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .map(|m| m.opt.as_mut())
    }

    /// The set's groups that belong to member `name`, for a controller that drives that
    /// member only (`LrScheduler::for_groups(schedule, &mut set, set.groups_of("adamw")?)`).
    pub fn groups_of(&self, name: &str) -> Result<LrGroups> {
        let mut start = 0;
        for m in &self.members {
            let n = m.opt.group_count();
            if m.name == name {
                return Ok(LrGroups::Range {
                    start,
                    end: start + n,
                });
            }
            start += n;
        }
        Err(Error::EmptyGroup {
            group: format!("member `{name}` (the set has {})", self.name()),
        })
    }

    /// The member holding the set's group `group`, and the group's index in it.
    fn locate(&self, mut group: usize) -> Option<(usize, usize)> {
        for (i, m) in self.members.iter().enumerate() {
            let n = m.opt.group_count();
            if group < n {
                return Some((i, group));
            }
            group -= n;
        }
        None
    }

    fn member_prefix(prefix: &str, member: &str) -> String {
        if prefix.is_empty() {
            member.to_string()
        } else {
            format!("{prefix}.{member}")
        }
    }
}

impl LrTarget for OptimizerSet {
    fn group_count(&self) -> usize {
        self.members.iter().map(|m| m.opt.group_count()).sum()
    }

    fn group_lr(&self, group: usize) -> Option<f64> {
        let (m, g) = self.locate(group)?;
        self.members[m].opt.group_lr(g)
    }

    fn set_group_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        let (m, g) = self.locate(group).ok_or_else(|| Error::EmptyGroup {
            group: format!("#{group} (the set has {} groups)", self.group_count()),
        })?;
        self.members[m].opt.set_group_lr(g, lr)
    }

    fn group_momentum(&self, group: usize) -> Option<f64> {
        let (m, g) = self.locate(group)?;
        self.members[m].opt.group_momentum(g)
    }

    fn set_group_momentum(&mut self, group: usize, momentum: f64) -> Result<bool> {
        match self.locate(group) {
            Some((m, g)) => self.members[m].opt.set_group_momentum(g, momentum),
            None => Ok(false),
        }
    }
}

/// The set's state: `{prefix}.steps`, and each member's state under `{prefix}.{member}`.
impl Stateful for OptimizerSet {
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        out.set_counter(prefix, "steps", self.steps)?;
        for m in &self.members {
            m.opt
                .save_state(&Self::member_prefix(prefix, &m.name), out)?;
        }
        Ok(())
    }

    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        state.counter(prefix, "steps")?;
        for m in &self.members {
            m.opt
                .check_state(&Self::member_prefix(prefix, &m.name), state)?;
        }
        // Every entry under the set's prefix must belong to the set or a member.
        let head = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}.")
        };
        let steps = format!("{head}steps");
        let owned = |k: &str| {
            k == steps
                || self
                    .members
                    .iter()
                    .any(|m| k.starts_with(&format!("{head}{}.", m.name)))
        };
        let stray = state
            .scalars
            .keys()
            .chain(state.tensors.keys())
            .filter(|k| k.starts_with(&head) && !owned(k))
            .cloned()
            .collect::<Vec<_>>();
        if !stray.is_empty() {
            return Err(taper_tensor::Error::State {
                key: if prefix.is_empty() {
                    "OptimizerSet".into()
                } else {
                    prefix.to_string()
                },
                reason: format!(
                    "holds entries of no member ({}): the saved set had other members",
                    stray.join(", ")
                ),
            });
        }
        Ok(())
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        // Everything is checked first: a member's load cannot fail afterwards.
        self.check_state(prefix, state)?;
        for m in &mut self.members {
            m.opt
                .load_state(&Self::member_prefix(prefix, &m.name), state)?;
        }
        self.steps = state.counter(prefix, "steps")?;
        Ok(())
    }
}

impl AnyOptimizer for OptimizerSet {
    fn name(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}: {}", m.name, m.opt.name()))
            .collect();
        format!("OptimizerSet({})", members.join(", "))
    }

    fn params(&self) -> Vec<(String, Var)> {
        self.members.iter().flat_map(|m| m.opt.params()).collect()
    }

    /// The set's clip over every member's gradients, then each member's step with the
    /// gradients of its own parameters. The report adds the members' up; it is `skipped`
    /// when every member skipped (non-finite gradients), and the set's step count then does
    /// not move.
    fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        let ours = |keep: &dyn Fn(&str) -> bool| {
            let mut g = Gradients::default();
            for (n, t) in grads.iter().filter(|(n, _)| keep(n)) {
                g.insert(n, t.clone());
            }
            g
        };
        let all = ours(&|n| self.members.iter().any(|m| m.params.contains(n)));
        let (clipped, grad_norm) = self.clip.apply(&all)?;
        let all = clipped.unwrap_or(all);
        let mut report = StepReport {
            grad_norm,
            skipped: !self.members.is_empty(),
            ..Default::default()
        };
        for m in &mut self.members {
            let mut own = Gradients::default();
            for (n, t) in all.iter().filter(|(n, _)| m.params.contains(*n)) {
                own.insert(n, t.clone());
            }
            let r = m.opt.step(&own)?;
            report.updated += r.updated;
            report.missing.extend(r.missing);
            report.non_finite.extend(r.non_finite);
            report.skipped &= r.skipped;
        }
        if !report.skipped {
            self.steps += 1;
        }
        Ok(report)
    }

    fn steps(&self) -> u64 {
        self.steps
    }
}
