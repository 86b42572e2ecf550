//! Optimizer state as data: named tensors and scalars, saved and loaded through safetensors.
//!
//! Tensors are named `{param}.{field}` (e.g. `0.weight.exp_avg`); scalars are `steps`,
//! `{param}.step`, the rule's per-parameter scalars (`{param}.mu_product`) and each group's
//! current `group.{i}.lr`, `group.{i}.momentum` and `group.{i}.weight_decay`.
//! In a file, scalars go in the safetensors metadata, written with Rust's round-trip float
//! formatting, so a resumed run continues bit for bit. Loading validates everything before
//! anything changes. An optimizer is also [`Stateful`], like schedulers and every other
//! piece: the same keys under a prefix of a [`taper_tensor::StateDict`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use candle_core::Tensor;
use taper_tensor::{checked_counter, StateDict, Stateful};

use crate::engine::optimizer::{init_state, Optimizer, ParamState};
use crate::engine::rule::{Rule, WeightDecay};
use crate::engine::slot::StateSlot;
use crate::{error::Error, error::Result};

/// Format tag stored in every state file.
pub const STATE_FORMAT: &str = "taper-optim-state/1";

/// An optimizer's complete state.
#[derive(Debug, Clone, Default)]
pub struct OptimizerState {
    /// The algorithm's name (`Rule::NAME`).
    pub optimizer: String,
    /// Per-parameter state tensors, `{param}.{field}`.
    pub tensors: BTreeMap<String, Tensor>,
    /// Step counts, per-parameter scalars and group learning rates.
    pub scalars: BTreeMap<String, f64>,
}

/// An optimizer state checked and converted by [`Optimizer::stage_state_dict`], ready to
/// be swapped in by [`Optimizer::commit_state`], which cannot fail.
#[derive(Debug)]
pub struct StagedState<R> {
    rules: Vec<R>,
    state: HashMap<String, ParamState>,
    steps: u64,
}

impl<R: Rule> Optimizer<R> {
    /// A copy of the state (tensors are shared, not copied: save before the next step): the
    /// [`Stateful`] state under no prefix, with the algorithm's name.
    ///
    /// Besides the per-parameter state it holds each group's current hyperparameters that
    /// schedules change (`group.{i}.lr`, `group.{i}.momentum` where the rule has one,
    /// `group.{i}.weight_decay`), so a resumed run continues with the learning rate and the
    /// momentum (SGD's, or Adam's β₁, as OneCycle cycles them) it had. A step count past
    /// 2⁵³ cannot be saved exactly and is an error ([`taper_tensor::MAX_COUNTER`]).
    pub fn state_dict(&self) -> Result<OptimizerState> {
        let mut sd = StateDict::default();
        self.write_state("", &mut sd)?;
        Ok(OptimizerState {
            optimizer: R::NAME.to_string(),
            tensors: sd.tensors,
            scalars: sd.scalars,
        })
    }

    /// Writes the state under `prefix` (see [`Optimizer::state_dict`]).
    fn write_state(&self, prefix: &str, out: &mut StateDict) -> Result<()> {
        out.set_counter(prefix, "steps", self.steps())?;
        for (i, g) in self.groups().iter().enumerate() {
            let c = g.rule.common();
            out.set_scalar(prefix, &format!("group.{i}.lr"), c.lr);
            let wd = c.weight_decay.value();
            out.set_scalar(prefix, &format!("group.{i}.weight_decay"), wd);
            if let Some(m) = g.rule.momentum_coefficient() {
                out.set_scalar(prefix, &format!("group.{i}.momentum"), m);
            }
        }
        for (name, var, gi) in self.params() {
            let Some(st) = self.state_map().get(name) else {
                continue;
            };
            let rule = &self.groups()[gi].rule;
            out.set_counter(prefix, &format!("{name}.step"), st.step)?;
            for (slot, v) in rule.scalars().iter().zip(&st.scalars) {
                out.set_scalar(prefix, &format!("{name}.{}", slot.name()), *v);
            }
            for (slot, t) in rule.slots_for(var.dims()).iter().zip(&st.tensors) {
                out.set_tensor(prefix, &format!("{name}.{}", slot.name()), t);
            }
        }
        Ok(())
    }

    /// Checks `state` against this optimizer and builds what loading it would set, changing
    /// nothing ([`Optimizer::commit_state`] swaps it in). Counters must be whole numbers in
    /// range, scalars finite, tensors float and of their parameter's shape, group
    /// hyperparameters valid for the rule; every entry must belong to a parameter or group
    /// of this optimizer.
    pub fn stage_state_dict(&self, state: &OptimizerState) -> Result<StagedState<R>> {
        if state.optimizer != R::NAME {
            return Err(Error::StateMismatch(format!(
                "state is for {}, this optimizer is {}",
                state.optimizer,
                R::NAME
            )));
        }
        let sd = StateDict {
            tensors: state.tensors.clone(),
            scalars: state.scalars.clone(),
        };
        self.stage("", &sd)
    }

    /// The staging of [`Optimizer::stage_state_dict`] for the entries under `prefix`.
    fn stage(&self, prefix: &str, state: &StateDict) -> Result<StagedState<R>> {
        let key = |field: &str| {
            if prefix.is_empty() {
                field.to_string()
            } else {
                format!("{prefix}.{field}")
            }
        };
        let mut used: HashSet<String> = HashSet::new();
        let scalar = |k: &str, used: &mut HashSet<String>| -> Result<f64> {
            let v = state
                .scalars
                .get(k)
                .ok_or_else(|| Error::StateMismatch(format!("missing scalar `{k}`")))?;
            used.insert(k.to_string());
            Ok(*v)
        };
        let finite = |k: &str, v: f64| -> Result<f64> {
            if v.is_finite() {
                Ok(v)
            } else {
                Err(Error::StateMismatch(format!(
                    "scalar `{k}` is {v}; expected a finite number"
                )))
            }
        };
        let mut rules = Vec::new();
        for (i, g) in self.groups().iter().enumerate() {
            let mut rule = g.rule.clone();
            let group_key = |k: &str| key(&format!("group.{i}.{k}"));
            let opt = |k: &str| state.scalars.get(&group_key(k)).copied();
            if let Some(lr) = opt("lr") {
                used.insert(group_key("lr"));
                rule.common_mut().lr = lr;
            }
            if let Some(wd) = opt("weight_decay") {
                used.insert(group_key("weight_decay"));
                let c = rule.common_mut();
                c.weight_decay = match c.weight_decay {
                    WeightDecay::None if wd == 0.0 => WeightDecay::None,
                    WeightDecay::L2(_) => WeightDecay::L2(wd),
                    WeightDecay::Decoupled(_) => WeightDecay::Decoupled(wd),
                    WeightDecay::None => {
                        return Err(Error::StateMismatch(format!(
                            "`{}` = {wd}, but group {i} has no weight decay",
                            group_key("weight_decay")
                        )))
                    }
                };
            }
            if let Some(m) = opt("momentum") {
                used.insert(group_key("momentum"));
                if !rule.set_momentum_coefficient(m) {
                    return Err(Error::StateMismatch(format!(
                        "`{}` is saved, but {} group {i} has no momentum",
                        group_key("momentum"),
                        R::NAME
                    )));
                }
            }
            rule.common().validate(R::NAME)?;
            rule.validate()?;
            rules.push(rule);
        }
        let steps_key = key("steps");
        let steps = checked_counter(&steps_key, scalar(&steps_key, &mut used)?)?;
        let mut new_state = HashMap::new();
        for (name, var, gi) in self.params() {
            let step_key = key(&format!("{name}.step"));
            if !state.scalars.contains_key(&step_key) {
                continue; // never updated
            }
            // The staged rule: the saved group hyperparameters can add state (SGD's
            // momentum, turned on by OneCycle), which the saved tensors then hold.
            let rule = &rules[gi];
            let mut st: ParamState = init_state(rule, var)?;
            st.step = checked_counter(&step_key, scalar(&step_key, &mut used)?)?;
            if st.step > steps {
                return Err(Error::StateMismatch(format!(
                    "`{step_key}` = {} exceeds the optimizer's `{steps_key}` = {steps}",
                    st.step
                )));
            }
            for (i, slot) in rule.scalars().iter().enumerate() {
                let k = key(&format!("{name}.{}", slot.name()));
                st.scalars[i] = finite(&k, scalar(&k, &mut used)?)?;
            }
            for (i, &slot) in rule.slots_for(var.dims()).iter().enumerate() {
                let k = key(&format!("{name}.{}", slot.name()));
                let t = state
                    .tensors
                    .get(&k)
                    .ok_or_else(|| Error::StateMismatch(format!("missing tensor `{k}`")))?;
                let shape = rule.state_shape(slot, var.dims());
                if t.dims() != shape {
                    return Err(Error::StateMismatch(format!(
                        "`{k}` has shape {:?}; expected {shape:?} for parameter `{name}` of \
                         shape {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                if !t.dtype().is_float() {
                    return Err(Error::StateMismatch(format!(
                        "`{k}` is {:?}; expected a float tensor",
                        t.dtype()
                    )));
                }
                used.insert(k);
                st.tensors[i] = t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?;
            }
            new_state.insert(name.to_string(), st);
        }
        let head = key("");
        let unknown: Vec<&str> = state
            .tensors
            .keys()
            .chain(state.scalars.keys())
            .map(String::as_str)
            .filter(|k| prefix.is_empty() || k.starts_with(&head))
            .filter(|k| !used.contains(*k))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::StateMismatch(format!(
                "entries for parameters or groups this optimizer does not have: {}",
                unknown.join(", ")
            )));
        }
        Ok(StagedState {
            rules,
            state: new_state,
            steps,
        })
    }

    /// Swaps in a state built by [`Optimizer::stage_state_dict`]; cannot fail.
    pub fn commit_state(&mut self, staged: StagedState<R>) {
        for (g, rule) in self.groups_mut().iter_mut().zip(staged.rules) {
            g.rule = rule;
        }
        *self.state_map_mut() = staged.state;
        self.set_steps(staged.steps);
    }

    /// Checks that [`Optimizer::load_state_dict`] would accept `state`, changing nothing.
    pub fn check_state_dict(&self, state: &OptimizerState) -> Result<()> {
        self.stage_state_dict(state).map(|_| ())
    }

    /// Replaces the state with `state`. Everything is checked before anything changes (see
    /// [`Optimizer::check_state_dict`]): a different algorithm, a missing field, a counter
    /// out of range, a non-finite scalar, a wrong shape or a name this optimizer does not
    /// have is an error naming it, and the optimizer is left as it was.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        let staged = self.stage_state_dict(state)?;
        self.commit_state(staged);
        Ok(())
    }

    /// Saves [`Optimizer::state_dict`] to a safetensors file (see [`OptimizerState::save`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.state_dict()?.save(path)
    }

    /// Loads state saved by [`Optimizer::save`]; see [`Optimizer::load_state_dict`].
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_state_dict(&OptimizerState::load(path)?)
    }
}

/// An optimizer is a stateful piece like any other: under a prefix in a [`StateDict`]
/// (`Checkpoint::add_state("opt2", &opt)` keeps a second optimizer beside the main one),
/// with the keys of [`Optimizer::state_dict`] below it. The algorithm's name is not part of
/// the dict; a state of another algorithm fails on its slot names instead.
impl<R: Rule> Stateful for Optimizer<R> {
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        self.write_state(prefix, out)
            .map_err(|e| as_state_error(prefix, e))
    }

    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.stage(prefix, state)
            .map(|_| ())
            .map_err(|e| as_state_error(prefix, e))
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        let staged = self
            .stage(prefix, state)
            .map_err(|e| as_state_error(prefix, e))?;
        self.commit_state(staged);
        Ok(())
    }
}

/// An optimizer error as the state protocol's error, naming the optimizer's prefix.
pub(crate) fn as_state_error(prefix: &str, e: Error) -> taper_tensor::Error {
    match e {
        Error::Tensor(t) => t,
        other => taper_tensor::Error::State {
            key: if prefix.is_empty() {
                "optimizer".into()
            } else {
                prefix.to_string()
            },
            reason: other.to_string(),
        },
    }
}

impl OptimizerState {
    /// Encodes as safetensors bytes: tensors as tensors; scalars, the format tag and the
    /// algorithm's name in the metadata.
    pub fn to_bytes(&self, origin: &Path) -> Result<Vec<u8>> {
        let sd = StateDict {
            tensors: self.tensors.clone(),
            scalars: self.scalars.clone(),
        };
        Ok(sd.to_bytes_tagged(STATE_FORMAT, &[("optimizer", &self.optimizer)], origin)?)
    }

    /// Saves to a safetensors file, atomically (see [`taper_tensor::write_atomic`]), so a
    /// crash never leaves a half-written file in place of a good one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        Ok(taper_tensor::write_atomic(path, &self.to_bytes(path)?)?)
    }

    /// Reads a file written by [`OptimizerState::save`] (see [`OptimizerState::from_bytes`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::StateFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Decodes [`OptimizerState::to_bytes`]'s output, checking the format tag and that every
    /// scalar is a number (whether it fits an optimizer is checked when it is loaded into
    /// one); `origin` names the source in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let (sd, extra) = StateDict::from_bytes_tagged(bytes, origin, STATE_FORMAT, &["optimizer"])
            .map_err(|e| match e {
                taper_tensor::Error::File { reason, .. } => Error::StateFile {
                    path: origin.display().to_string(),
                    reason: reason.replace("not a Taper state file", "not a Taper optimizer state"),
                },
                other => Error::Tensor(other),
            })?;
        let [optimizer]: [Option<String>; 1] = extra.try_into().expect("one extra key asked for");
        Ok(OptimizerState {
            optimizer: optimizer.unwrap_or_default(),
            tensors: sd.tensors,
            scalars: sd.scalars,
        })
    }
}
