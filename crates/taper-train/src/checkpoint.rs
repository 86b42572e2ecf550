//! Full training checkpoints: weights, optimizer state, the state of every other stateful
//! piece (schedulers, learning-rate controllers, early stopping), counters, the RNG and the
//! data loader's position, in one directory.
//!
//! A checkpoint directory holds:
//!
//! - `model.safetensors`: the weights under PyTorch's state_dict names (PyTorch's
//!   `safetensors.torch.load_file` reads it);
//! - `optimizer.safetensors`: the optimizer's state, including each group's current
//!   learning rate, momentum and weight decay;
//! - `state.safetensors`: every piece added with [`Checkpoint::add_state`], by name;
//! - `trainer.json`: the format version, the counters, the loader's seed and epoch length,
//!   the RNG position, user metadata, and the SHA-256 of each file and of itself.
//!
//! **Guarantees.** A save writes a hidden sibling directory, syncs it, and puts it in place
//! with one atomic rename (or exchange, when replacing), so a kill at any instruction
//! leaves either the old checkpoint or the new one, whole; a save that fails (a full disk)
//! removes what it wrote. A load verifies every checksum (a flipped bit is an error, not
//! different weights) and validates every counter and scalar. [`Checkpoint::restore`]
//! checks the weights, the optimizer state and every piece first and changes nothing unless
//! all of them fit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use taper_optim::{AnyOptimizer, OptimizerState};
use taper_tensor::{
    parse_safetensors, publish_dir, rng_state, serialize_safetensors, set_rng_state, sync_dir,
    temp_sibling, write_atomic, LoadMode, ParamStore, StateDict, Stateful,
};

use crate::error::{Error, Result};
use crate::json_guard::NoDuplicateKeys;
use crate::train_state::{is_hex, TrainState};

/// The format tag written in every `trainer.json`.
pub const CHECKPOINT_FORMAT: &str = "taper-checkpoint/2";

/// The first format: no checksums, scheduler state inside the optimizer file. Still read.
const FORMAT_V1: &str = "taper-checkpoint/1";

const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.safetensors";
const TRAINER: &str = "trainer.json";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The checksum of `trainer.json`'s content: SHA-256 of its compact, key-sorted form
/// without the `sha256` field.
fn json_digest(v: &Value) -> Result<String> {
    let mut obj = v.as_object().cloned().unwrap_or_default();
    obj.remove("sha256");
    let bytes = serde_json::to_vec(&Value::Object(obj)).map_err(|e| Error::Checkpoint {
        path: TRAINER.into(),
        reason: e.to_string(),
    })?;
    Ok(sha256_hex(&bytes))
}

/// Everything needed to resume training.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Parameters and buffers by state_dict name (copies, safe to keep).
    pub weights: HashMap<String, Tensor>,
    /// Optimizer state, with each group's current hyperparameters.
    pub optimizer: OptimizerState,
    /// The states of the pieces added with [`Checkpoint::add_state`], under their names.
    pub states: StateDict,
    /// Counters, RNG, data order, metadata.
    pub train: TrainState,
}

impl Checkpoint {
    /// Captures the model, the optimizer (any: a rule's `Optimizer`, `Lookahead`, L-BFGS, an
    /// `OptimizerSet`, …) and the RNG's position now (weights and state are copied). Add
    /// schedulers, controllers, early stopping and weight averages with
    /// [`Checkpoint::add_state`].
    pub fn capture(
        store: &ParamStore,
        opt: &dyn AnyOptimizer,
        mut train: TrainState,
    ) -> Result<Self> {
        let weights = store
            .state_dict()
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<_>>()?;
        let mut optimizer = opt.state_dict()?;
        for t in optimizer.tensors.values_mut() {
            *t = t.copy()?;
        }
        train.rng = rng_state();
        Ok(Self {
            weights,
            optimizer,
            states: StateDict::default(),
            train,
        })
    }

    /// Adds the state of `part` under `name` (tensors are copied). The same name must be
    /// given to [`Checkpoint::restore`].
    ///
    /// ```
    /// use taper_optim::{CosineAnnealingLr, LrScheduler, Optimizer, Sgd};
    /// use taper_tensor::{DType, Device, ParamStore, Tensor};
    /// use taper_train::{Checkpoint, TrainState};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// store.parameter("w", 2, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
    /// let mut opt = Optimizer::new(Sgd::new(0.1), &store)?;
    /// let mut sched = LrScheduler::new(CosineAnnealingLr::new(10), &mut opt)?;
    /// sched.step(&mut opt)?;
    /// let ckpt = Checkpoint::capture(&store, &opt, TrainState::new(0))?
    ///     .add_state("scheduler", &sched)?;
    ///
    /// let mut sched2 = LrScheduler::new(CosineAnnealingLr::new(10), &mut opt)?;
    /// ckpt.restore(&store, &mut opt, &mut [("scheduler", &mut sched2)])?;
    /// assert_eq!(sched2.steps(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_state(mut self, name: &str, part: &dyn Stateful) -> Result<Self> {
        if name.is_empty() || name.contains('.') || self.states.has(name) {
            return Err(Error::InvalidValue {
                field: "state name",
                value: format!("`{name}`"),
                expected: "a non-empty name without dots, used once per checkpoint",
            });
        }
        let mut part_state = StateDict::default();
        part.save_state(name, &mut part_state)?;
        for (k, t) in part_state.tensors {
            self.states.tensors.insert(k, t.copy()?);
        }
        self.states.scalars.extend(part_state.scalars);
        Ok(self)
    }

    /// Restores the model (strictly: every weight must fit), the optimizer, each named
    /// piece and the RNG.
    ///
    /// Everything is checked first: the weights against the model, the optimizer state
    /// against the optimizer, each piece's state, and that every state in the checkpoint
    /// has a piece to go to (forgetting one would silently change how training continues).
    /// If anything does not fit, this is an error and nothing has changed.
    pub fn restore(
        &self,
        store: &ParamStore,
        opt: &mut dyn AnyOptimizer,
        parts: &mut [(&str, &mut dyn Stateful)],
    ) -> Result<()> {
        let weights = store.stage_state_dict(&self.weights, LoadMode::Strict)?;
        opt.check_state_dict(&self.optimizer)?;
        let names: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
        let unclaimed = self.states.unclaimed(&names);
        if !unclaimed.is_empty() {
            let mut owners: Vec<&str> = unclaimed
                .iter()
                .map(|k| k.split('.').next().unwrap_or(k))
                .collect();
            owners.dedup();
            return Err(Error::Checkpoint {
                path: "restore".into(),
                reason: format!(
                    "the checkpoint holds the state of {}, which nothing was given to restore \
                     (pass it as (name, &mut piece))",
                    owners
                        .iter()
                        .map(|o| format!("`{o}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for (name, part) in parts.iter() {
            part.check_state(name, &self.states)?;
        }
        weights.commit();
        // Checked above: loading cannot fail now (`check_state` succeeds exactly when
        // `load_state` would).
        opt.load_state_dict(&self.optimizer)?;
        for (name, part) in parts.iter_mut() {
            part.load_state(name, &self.states)?;
        }
        set_rng_state(&self.train.rng);
        Ok(())
    }

    fn trainer_json(&self, files: &BTreeMap<&str, String>) -> Result<Vec<u8>> {
        let mut v = self.train.to_json();
        let obj = v.as_object_mut().expect("to_json gives an object");
        obj.insert("format".into(), Value::String(CHECKPOINT_FORMAT.into()));
        obj.insert(
            "files".into(),
            Value::Object(
                files
                    .iter()
                    .map(|(k, h)| (k.to_string(), Value::String(h.clone())))
                    .collect::<Map<_, _>>(),
            ),
        );
        let digest = json_digest(&v)?;
        v.as_object_mut()
            .expect("to_json gives an object")
            .insert("sha256".into(), Value::String(digest));
        serde_json::to_vec_pretty(&v).map_err(|e| Error::Checkpoint {
            path: TRAINER.into(),
            reason: e.to_string(),
        })
    }

    /// Writes the checkpoint directory (see the module docs for what survives a crash).
    /// On failure, nothing it wrote is left behind and an existing checkpoint at `dir` is
    /// untouched.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let err = |reason: String| Error::Checkpoint {
            path: dir.display().to_string(),
            reason,
        };
        if dir.file_name().is_none() {
            return Err(err("needs a directory name".into()));
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| err(e.to_string()))?;
        let tmp = temp_sibling(dir, "tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let written = self
            .write_into(&tmp)
            .and_then(|()| publish_dir(&tmp, dir).map_err(Error::from));
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written
    }

    fn write_into(&self, tmp: &Path) -> Result<()> {
        std::fs::create_dir(tmp).map_err(|e| Error::Checkpoint {
            path: tmp.display().to_string(),
            reason: format!("creating: {e}"),
        })?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let model = serialize_safetensors(
            self.weights.iter().map(|(n, t)| (n.as_str(), t)),
            meta,
            &tmp.join(MODEL),
        )?;
        let optimizer = self.optimizer.to_bytes(&tmp.join(OPTIMIZER))?;
        let states = self.states.to_bytes(&tmp.join(STATE))?;
        let mut files = BTreeMap::new();
        for (name, bytes) in [(MODEL, &model), (OPTIMIZER, &optimizer), (STATE, &states)] {
            write_atomic(tmp.join(name), bytes)?;
            files.insert(name, sha256_hex(bytes));
        }
        write_atomic(tmp.join(TRAINER), &self.trainer_json(&files)?)?;
        sync_dir(tmp)?;
        Ok(())
    }

    /// Reads a checkpoint directory: checks its format version, verifies the SHA-256 of
    /// every file and of `trainer.json` itself, and validates every counter and scalar.
    /// Checkpoints of the first format (`taper-checkpoint/1`, no checksums, scheduler state
    /// inside the optimizer file under `scheduler.`) are read too.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let err = |reason: String| Error::Checkpoint {
            path: dir.display().to_string(),
            reason,
        };
        let json = std::fs::read(dir.join(TRAINER)).map_err(|e| err(format!("{TRAINER}: {e}")))?;
        serde_json::from_slice::<NoDuplicateKeys>(&json)
            .map_err(|e| err(format!("{TRAINER} is not valid JSON: {e}")))?;
        let v: Value = serde_json::from_slice(&json)
            .map_err(|e| err(format!("{TRAINER} is not valid JSON: {e}")))?;
        let format = v.get("format").and_then(Value::as_str);
        let v1 = match format {
            Some(CHECKPOINT_FORMAT) => false,
            Some(FORMAT_V1) => true,
            Some(other) => {
                return Err(err(format!(
                    "{TRAINER}: format `{other}` is not supported (this Taper reads \
                     `{CHECKPOINT_FORMAT}` and `{FORMAT_V1}`)"
                )))
            }
            None => {
                return Err(err(format!(
                    "{TRAINER}: no `format` field: not a Taper checkpoint"
                )))
            }
        };
        let read = |name: &str| -> Result<Vec<u8>> {
            let bytes = std::fs::read(dir.join(name)).map_err(|e| err(format!("{name}: {e}")))?;
            if !v1 {
                let want = v
                    .get("files")
                    .and_then(|f| f.get(name))
                    .and_then(Value::as_str)
                    .filter(|h| is_hex(h, 64))
                    .ok_or_else(|| err(format!("{TRAINER}: no valid SHA-256 for {name}")))?;
                if sha256_hex(&bytes) != want.to_ascii_lowercase() {
                    return Err(err(format!(
                        "{name} does not match its SHA-256 in {TRAINER}: the file is damaged"
                    )));
                }
            }
            Ok(bytes)
        };
        if !v1 {
            let want = v
                .get("sha256")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("{TRAINER}: no `sha256`")))?;
            if json_digest(&v)? != want {
                return Err(err(format!(
                    "{TRAINER} does not match its own SHA-256: the file is damaged"
                )));
            }
            if let Some(files) = v.get("files").and_then(Value::as_object) {
                if let Some(extra) = files
                    .keys()
                    .find(|k| ![MODEL, OPTIMIZER, STATE].contains(&k.as_str()))
                {
                    return Err(err(format!("{TRAINER}: unknown file `{extra}` in `files`")));
                }
            }
        }
        let train = TrainState::from_json(&v, dir)?;
        let (weights, _) = parse_safetensors(&read(MODEL)?, &dir.join(MODEL))?;
        let mut optimizer = OptimizerState::from_bytes(&read(OPTIMIZER)?, &dir.join(OPTIMIZER))?;
        let states = if v1 {
            // Format 1 kept scheduler states in the optimizer file as `scheduler.{name}.*`.
            let mut states = StateDict::default();
            let keys: Vec<String> = optimizer
                .scalars
                .keys()
                .filter(|k| k.starts_with("scheduler."))
                .cloned()
                .collect();
            for k in keys {
                let x = optimizer.scalars.remove(&k).expect("listed above");
                states
                    .scalars
                    .insert(k["scheduler.".len()..].to_string(), x);
            }
            states
        } else {
            StateDict::from_bytes(&read(STATE)?, &dir.join(STATE))?
        };
        Ok(Self {
            weights,
            optimizer,
            states,
            train,
        })
    }
}
