//! Full training checkpoints: weights, optimizer and scheduler state, counters, RNG and
//! data-order state, and user metadata, in one directory.
//!
//! A checkpoint directory holds `model.safetensors` (PyTorch state_dict names),
//! `optimizer.safetensors` (optimizer and scheduler state) and `trainer.json` (format
//! version, epoch/step counters, the data loader's seed and position, the RNG position,
//! metadata). It is written into a temporary sibling directory and renamed into place, so a
//! crash mid-save never damages an existing checkpoint. Resuming restores everything a CPU
//! run needs to continue bit-identically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::{json, Value};
use taper_optim::{Optimizer, OptimizerState, Rule};
use taper_tensor::{
    read_safetensors, rng_state, save_safetensors, set_rng_state, write_atomic, LoadMode,
    ParamStore, RngState,
};

use crate::{Error, Result};

/// The format tag in every `trainer.json`.
pub const CHECKPOINT_FORMAT: &str = "taper-checkpoint/1";

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
    /// The position of taper-tensor's generator (dropout, initialization).
    pub rng: RngState,
    /// Anything else: the run's configuration, metrics.
    pub metadata: Value,
}

impl TrainState {
    /// Counters at zero, the current RNG position, empty metadata.
    pub fn new(data_seed: u64) -> Self {
        Self {
            epoch: 0,
            step: 0,
            batch_in_epoch: 0,
            data_seed,
            rng: rng_state(),
            metadata: Value::Null,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "data_seed": self.data_seed,
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
        match v.get("format").and_then(Value::as_str) {
            Some(CHECKPOINT_FORMAT) => {}
            Some(other) => {
                return Err(bad(&format!(
                    "format `{other}` is not supported (this Taper reads `{CHECKPOINT_FORMAT}`)"
                )))
            }
            None => return Err(bad("no `format` field: not a Taper checkpoint")),
        }
        let u = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(&format!("missing or invalid `{k}`")))
        };
        let rng = v.get("rng").ok_or_else(|| bad("missing `rng`"))?;
        let key_hex = rng
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing `rng.key`"))?;
        if key_hex.len() != 64 || !key_hex.is_ascii() {
            return Err(bad("`rng.key` must be 64 hex digits"));
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("`rng.key` must be 64 hex digits"))?;
        }
        let word_pos = rng
            .get("word_pos")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u128>().ok())
            .ok_or_else(|| bad("missing or invalid `rng.word_pos`"))?;
        let ru = |k: &str| {
            rng.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(&format!("missing or invalid `rng.{k}`")))
        };
        Ok(Self {
            epoch: u("epoch")?,
            step: u("step")?,
            batch_in_epoch: u("batch_in_epoch")?,
            data_seed: u("data_seed")?,
            rng: RngState {
                seed: ru("seed")?,
                key,
                stream: ru("stream")?,
                word_pos,
            },
            metadata: v.get("metadata").cloned().unwrap_or(Value::Null),
        })
    }
}

/// Everything needed to resume training.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Parameters and buffers by state_dict name (copies, safe to keep).
    pub weights: HashMap<String, Tensor>,
    /// Optimizer state; schedulers add theirs with `write_state`.
    pub optimizer: OptimizerState,
    /// Counters, RNG, data order, metadata.
    pub train: TrainState,
}

impl Checkpoint {
    /// Captures the model and optimizer now (weights and state are copied).
    pub fn capture<R: Rule>(
        store: &ParamStore,
        opt: &Optimizer<R>,
        train: TrainState,
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
        Ok(Self {
            weights,
            optimizer,
            train,
        })
    }

    /// Restores the model, the optimizer and the RNG (strictly: every weight must fit).
    pub fn restore<R: Rule>(&self, store: &ParamStore, opt: &mut Optimizer<R>) -> Result<()> {
        store.load_state_dict(&self.weights, LoadMode::Strict)?;
        opt.load_state_dict(&self.optimizer)?;
        set_rng_state(&self.train.rng);
        Ok(())
    }

    /// Writes the checkpoint directory atomically (see the module docs).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let err = |reason: String| Error::Checkpoint {
            path: dir.display().to_string(),
            reason,
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| err("needs a directory name".into()))?;
        let parent = dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&parent).map_err(|e| err(e.to_string()))?;
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| err(format!("creating {}: {e}", tmp.display())))?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        save_safetensors(
            tmp.join("model.safetensors"),
            self.weights.iter().map(|(n, t)| (n.as_str(), t)),
            meta,
        )?;
        self.optimizer.save(tmp.join("optimizer.safetensors"))?;
        let json =
            serde_json::to_vec_pretty(&self.train.to_json()).map_err(|e| err(e.to_string()))?;
        write_atomic(tmp.join("trainer.json"), &json)?;
        // Swap into place: the old checkpoint (if any) is removed only once the new one is in.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        let had_old = dir.exists();
        if had_old {
            std::fs::rename(dir, &old)
                .map_err(|e| err(format!("moving the previous checkpoint aside: {e}")))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| err(format!("renaming into place: {e}")))?;
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }

    /// Reads a checkpoint directory, checking its format version and every file.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let err = |reason: String| Error::Checkpoint {
            path: dir.display().to_string(),
            reason,
        };
        let json = std::fs::read(dir.join("trainer.json"))
            .map_err(|e| err(format!("trainer.json: {e}")))?;
        let v: Value = serde_json::from_slice(&json)
            .map_err(|e| err(format!("trainer.json is not valid JSON: {e}")))?;
        let train = TrainState::from_json(&v, dir)?;
        let (weights, _) = read_safetensors(dir.join("model.safetensors"))?;
        let optimizer = OptimizerState::load(dir.join("optimizer.safetensors"))?;
        Ok(Self {
            weights,
            optimizer,
            train,
        })
    }
}
