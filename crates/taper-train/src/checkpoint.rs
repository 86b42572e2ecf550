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
//! - `state.safetensors`: every piece added with [`Checkpoint::with_state`], by name;
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use taper_data::{Batches, DataLoader, Dataset};
use taper_optim::{Optimizer, OptimizerState, Rule};
use taper_tensor::{
    parse_safetensors, publish_dir, rng_state, serialize_safetensors, set_rng_state, sync_dir,
    temp_sibling, write_atomic, LoadMode, ParamStore, RngState, StateDict, Stateful, MAX_COUNTER,
};

use crate::{Error, Result};

/// The format tag written in every `trainer.json`.
pub const CHECKPOINT_FORMAT: &str = "taper-checkpoint/2";

/// The first format: no checksums, scheduler state inside the optimizer file. Still read.
const FORMAT_V1: &str = "taper-checkpoint/1";

const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.safetensors";
const TRAINER: &str = "trainer.json";

/// Where the training loop is, and the randomness it will use next.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Completed epochs.
    pub epoch: u64,
    /// Optimizer steps taken.
    pub step: u64,
    /// Batches already consumed in the current epoch.
    pub batch_in_epoch: u64,
    /// The data loader's seed (its epoch order is a function of seed and epoch).
    pub data_seed: u64,
    /// The loader's batches per epoch, when known ([`TrainState::for_loader`]); checked
    /// against the loader on resume.
    pub batches_per_epoch: Option<u64>,
    /// The position of taper-tensor's generator (dropout, initialization).
    /// [`Checkpoint::capture`] records it itself.
    pub rng: RngState,
    /// Anything else: the run's configuration, metrics.
    pub metadata: Value,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl TrainState {
    /// Counters at zero, the current RNG position, empty metadata, for a loader with
    /// `data_seed` whose length is not recorded.
    pub fn new(data_seed: u64) -> Self {
        Self {
            epoch: 0,
            step: 0,
            batch_in_epoch: 0,
            data_seed,
            batches_per_epoch: None,
            rng: rng_state(),
            metadata: Value::Null,
        }
    }

    /// Counters at zero for `loader`: its seed and batches per epoch are recorded and
    /// checked by [`TrainState::batches`] on resume.
    pub fn for_loader<D: Dataset>(loader: &DataLoader<D>) -> Self {
        Self {
            batches_per_epoch: Some(loader.batches_per_epoch() as u64),
            ..Self::new(loader.seed_value())
        }
    }

    /// The batches left in the current epoch: the loader's epoch `epoch`, past the
    /// `batch_in_epoch` already consumed (skipped without being built).
    ///
    /// The loader must be the one this state was made for: the same seed and, when
    /// recorded, the same batches per epoch; otherwise the resumed run would see other
    /// data than the interrupted one, and this is an error saying which differs.
    pub fn batches<'a, D: Dataset>(&self, loader: &'a DataLoader<D>) -> Result<Batches<'a, D>> {
        self.check_loader(loader)?;
        Ok(loader.epoch_from(self.epoch, self.batch_in_epoch as usize))
    }

    /// Checks that `loader` is the one this state was made for (see
    /// [`TrainState::batches`]), for code that builds the batches itself (a `Prefetcher`
    /// from `epoch` at `batch_in_epoch`).
    pub fn check_loader<D: Dataset>(&self, loader: &DataLoader<D>) -> Result<()> {
        let mismatch = |what: String| Error::InvalidValue {
            field: "data loader",
            value: what,
            expected: "the loader the checkpoint was made with",
        };
        if loader.seed_value() != self.data_seed {
            return Err(mismatch(format!(
                "seed {} (the state was saved with seed {})",
                loader.seed_value(),
                self.data_seed
            )));
        }
        let per_epoch = loader.batches_per_epoch() as u64;
        if let Some(saved) = self.batches_per_epoch {
            if saved != per_epoch {
                return Err(mismatch(format!(
                    "{per_epoch} batches per epoch (the state was saved with {saved})"
                )));
            }
        }
        if self.batch_in_epoch > per_epoch {
            return Err(mismatch(format!(
                "{per_epoch} batches per epoch, but {} were already consumed",
                self.batch_in_epoch
            )));
        }
        Ok(())
    }

    /// Counts one optimizer step on one batch.
    pub fn finish_batch(&mut self) {
        self.step += 1;
        self.batch_in_epoch += 1;
    }

    /// Moves to the next epoch.
    pub fn finish_epoch(&mut self) {
        self.epoch += 1;
        self.batch_in_epoch = 0;
    }

    fn to_json(&self) -> Value {
        json!({
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "data_seed": self.data_seed,
            "batches_per_epoch": self.batches_per_epoch,
            "rng": {
                "seed": self.rng.seed,
                "key": self.rng.key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "stream": self.rng.stream,
                "word_pos": self.rng.word_pos.to_string(),
            },
            "metadata": self.metadata,
        })
    }

    fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let bad = |what: &str| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("trainer.json: {what}"),
        };
        let counter = |obj: &Value, k: &str| {
            obj.get(k)
                .and_then(Value::as_u64)
                .filter(|&n| n <= MAX_COUNTER)
                .ok_or_else(|| bad(&format!("`{k}` must be a whole number from 0 to 2^53")))
        };
        let any_u64 = |obj: &Value, k: &str| {
            obj.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(&format!("`{k}` must be a whole number from 0 to 2^64-1")))
        };
        let rng = v.get("rng").ok_or_else(|| bad("missing `rng`"))?;
        let key_hex = rng
            .get("key")
            .and_then(Value::as_str)
            .filter(|s| is_hex(s, 64))
            .ok_or_else(|| bad("`rng.key` must be 64 hex digits"))?;
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("`rng.key` must be 64 hex digits"))?;
        }
        // ChaCha's word position has 68 bits; larger values would silently wrap.
        let word_pos = rng
            .get("word_pos")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 21 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u128>().ok())
            .filter(|&w| w < 1u128 << 68)
            .ok_or_else(|| bad("`rng.word_pos` must be a decimal string below 2^68"))?;
        let batches_per_epoch = match v.get("batches_per_epoch") {
            None | Some(Value::Null) => None,
            Some(_) => Some(counter(v, "batches_per_epoch")?),
        };
        let state = Self {
            epoch: counter(v, "epoch")?,
            step: counter(v, "step")?,
            batch_in_epoch: counter(v, "batch_in_epoch")?,
            data_seed: any_u64(v, "data_seed")?,
            batches_per_epoch,
            rng: RngState {
                seed: any_u64(rng, "seed")?,
                key,
                stream: any_u64(rng, "stream")?,
                word_pos,
            },
            metadata: v.get("metadata").cloned().unwrap_or(Value::Null),
        };
        if let Some(n) = state.batches_per_epoch {
            if state.batch_in_epoch > n {
                return Err(bad(&format!(
                    "`batch_in_epoch` = {} exceeds `batches_per_epoch` = {n}",
                    state.batch_in_epoch
                )));
            }
        }
        Ok(state)
    }
}

/// Rejects JSON objects with a repeated key anywhere (serde_json keeps the last silently).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NoDuplicateKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
                Ok(NoDuplicateKeys)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut seen = HashSet::new();
                while let Some(k) = map.next_key::<String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                    }
                    map.next_value::<NoDuplicateKeys>()?;
                }
                Ok(NoDuplicateKeys)
            }
        }
        d.deserialize_any(V)
    }
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
    /// The states of the pieces added with [`Checkpoint::with_state`], under their names.
    pub states: StateDict,
    /// Counters, RNG, data order, metadata.
    pub train: TrainState,
}

impl Checkpoint {
    /// Captures the model, the optimizer and the RNG's position now (weights and state are
    /// copied). Add schedulers, controllers and early stopping with
    /// [`Checkpoint::with_state`].
    pub fn capture<R: Rule>(
        store: &ParamStore,
        opt: &Optimizer<R>,
        mut train: TrainState,
    ) -> Result<Self> {
        let weights = store
            .state_dict()
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<_>>()?;
        let mut optimizer = opt.state_dict();
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
    /// let mut sched = LrScheduler::new(CosineAnnealingLr::new(10, 0.0)?, &mut opt)?;
    /// sched.step(&mut opt)?;
    /// let ckpt = Checkpoint::capture(&store, &opt, TrainState::new(0))?
    ///     .with_state("scheduler", &sched)?;
    ///
    /// let mut sched2 = LrScheduler::new(CosineAnnealingLr::new(10, 0.0)?, &mut opt)?;
    /// ckpt.restore(&store, &mut opt, &mut [("scheduler", &mut sched2)])?;
    /// assert_eq!(sched2.steps(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_state(mut self, name: &str, part: &dyn Stateful) -> Result<Self> {
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
    pub fn restore<R: Rule>(
        &self,
        store: &ParamStore,
        opt: &mut Optimizer<R>,
        parts: &mut [(&str, &mut dyn Stateful)],
    ) -> Result<()> {
        let weights = store.stage_state_dict(&self.weights, LoadMode::Strict)?;
        let optimizer = opt.stage_state_dict(&self.optimizer)?;
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
        opt.commit_state(optimizer);
        for (name, part) in parts.iter_mut() {
            part.load_state(name, &self.states)?;
        }
        set_rng_state(&self.train.rng);
        Ok(())
    }

    fn trainer_json(&self, files: &BTreeMap<&str, String>) -> Result<Vec<u8>> {
        let mut v = self.train.to_json();
        let obj = v.as_object_mut().expect("to_json gives an object");
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
