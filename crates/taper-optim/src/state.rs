//! Optimizer state as data: named tensors and scalars, saved and loaded through safetensors.
//!
//! Tensors are named `{param}.{field}` (e.g. `0.weight.exp_avg`); scalars are `steps`,
//! `{param}.step`, the rule's per-parameter scalars (`{param}.mu_product`) and each group's
//! `group.{i}.lr`. In a file, scalars go in the safetensors metadata, written with Rust's
//! round-trip float formatting, so a resumed run continues bit for bit. Keys starting with
//! `scheduler.` belong to learning-rate schedulers saved in the same file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use candle_core::Tensor;

use crate::optimizer::{init_state, Optimizer, ParamState};
use crate::rule::Rule;
use crate::{Error, Result};

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

impl<R: Rule> Optimizer<R> {
    /// A copy of the state (tensors are shared, not copied: save before the next step).
    pub fn state_dict(&self) -> OptimizerState {
        let mut out = OptimizerState {
            optimizer: R::NAME.to_string(),
            ..Default::default()
        };
        out.scalars.insert("steps".into(), self.steps() as f64);
        for (i, g) in self.groups().iter().enumerate() {
            out.scalars
                .insert(format!("group.{i}.lr"), g.rule.common().lr);
        }
        for (name, _, gi) in self.params() {
            let Some(st) = self.state_map().get(name) else {
                continue;
            };
            let rule = &self.groups()[gi].rule;
            out.scalars.insert(format!("{name}.step"), st.step as f64);
            for (field, v) in rule.scalar_names().iter().zip(&st.scalars) {
                out.scalars.insert(format!("{name}.{field}"), *v);
            }
            for (field, t) in rule.state_names().iter().zip(&st.tensors) {
                out.tensors.insert(format!("{name}.{field}"), t.clone());
            }
        }
        out
    }

    /// Replaces the state with `state`. Everything is checked before anything changes: a
    /// different algorithm, a missing field, a wrong shape or a name this optimizer does
    /// not have is an error naming it.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        if state.optimizer != R::NAME {
            return Err(Error::StateMismatch(format!(
                "state is for {}, this optimizer is {}",
                state.optimizer,
                R::NAME
            )));
        }
        let mut used: HashSet<String> = HashSet::new();
        let mut new_state = HashMap::new();
        let scalar = |key: &str, used: &mut HashSet<String>| -> Result<f64> {
            let v = state
                .scalars
                .get(key)
                .ok_or_else(|| Error::StateMismatch(format!("missing scalar `{key}`")))?;
            used.insert(key.to_string());
            Ok(*v)
        };
        let steps = scalar("steps", &mut used)?;
        for (name, var, gi) in self.params() {
            if !state.scalars.contains_key(&format!("{name}.step")) {
                continue; // never updated
            }
            let rule = &self.groups()[gi].rule;
            let mut st: ParamState = init_state(rule, var)?;
            st.step = scalar(&format!("{name}.step"), &mut used)? as u64;
            for (i, field) in rule.scalar_names().iter().enumerate() {
                st.scalars[i] = scalar(&format!("{name}.{field}"), &mut used)?;
            }
            for (i, field) in rule.state_names().iter().enumerate() {
                let key = format!("{name}.{field}");
                let t = state
                    .tensors
                    .get(&key)
                    .ok_or_else(|| Error::StateMismatch(format!("missing tensor `{key}`")))?;
                if t.dims() != var.dims() {
                    return Err(Error::StateMismatch(format!(
                        "`{key}` has shape {:?}, parameter `{name}` has {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                used.insert(key);
                st.tensors[i] = t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?;
            }
            new_state.insert(name.to_string(), st);
        }
        let mut lrs = Vec::new();
        for i in 0..self.groups().len() {
            let key = format!("group.{i}.lr");
            if let Some(lr) = state.scalars.get(&key) {
                lrs.push((i, *lr));
                used.insert(key);
            }
        }
        let unknown: Vec<&str> = state
            .tensors
            .keys()
            .chain(state.scalars.keys())
            .map(String::as_str)
            .filter(|k| !used.contains(*k) && !k.starts_with("scheduler."))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::StateMismatch(format!(
                "entries for parameters this optimizer does not have: {}",
                unknown.join(", ")
            )));
        }
        for (i, lr) in lrs {
            self.update_group(i, |r| r.common_mut().lr = lr)?;
        }
        *self.state_map_mut() = new_state;
        self.set_steps(steps as u64);
        Ok(())
    }

    /// Saves [`Optimizer::state_dict`] to a safetensors file (see [`OptimizerState::save`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.state_dict().save(path)
    }

    /// Loads state saved by [`Optimizer::save`]; see [`Optimizer::load_state_dict`].
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_state_dict(&OptimizerState::load(path)?)
    }
}

impl OptimizerState {
    /// Saves to a safetensors file, atomically (see [`taper_tensor::write_atomic`]), so a
    /// crash never leaves a half-written file in place of a good one. Scalars go in the
    /// metadata.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut meta: HashMap<String, String> = self
            .scalars
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:?}")))
            .collect();
        meta.insert("format".into(), STATE_FORMAT.into());
        meta.insert("optimizer".into(), self.optimizer.clone());
        Ok(taper_tensor::save_safetensors(
            path,
            self.tensors.iter().map(|(k, t)| (k.as_str(), t)),
            meta,
        )?)
    }

    /// Reads a file written by [`OptimizerState::save`], checking its format tag.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let err = |reason: String| Error::StateFile {
            path: path.display().to_string(),
            reason,
        };
        let (tensors, meta) = taper_tensor::read_safetensors(path).map_err(|e| match e {
            taper_tensor::Error::File { reason, .. } => err(reason),
            other => Error::Tensor(other),
        })?;
        if meta.get("format").map(String::as_str) != Some(STATE_FORMAT) {
            return Err(err(format!(
                "not a Taper optimizer state (expected format `{STATE_FORMAT}`)"
            )));
        }
        let mut st = OptimizerState {
            optimizer: meta.get("optimizer").cloned().unwrap_or_default(),
            tensors: tensors.into_iter().collect(),
            ..Default::default()
        };
        for (k, v) in meta
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "format" | "optimizer"))
        {
            let x: f64 = v
                .parse()
                .map_err(|_| err(format!("scalar `{k}` = `{v}` is not a number")))?;
            st.scalars.insert(k.clone(), x);
        }
        Ok(st)
    }
}
