//! `TrainState`: where a training loop is (epoch, optimizer steps, batch within the epoch,
//! the data order's seed) and the RNG position, as a checkpoint's `trainer.json` holds it.

use std::path::Path;

use serde_json::{json, Value};
use taper_data::{Batches, DataLoader, Dataset};
use taper_tensor::{checked_counter, rng_state, RngState};

use crate::error::{Error, Result};

/// Whether `s` is `len` hexadecimal digits (a key or a checksum).
pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

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
    /// [`Checkpoint::capture`](crate::Checkpoint::capture) records it itself.
    pub rng: RngState,
    /// Anything else: the run's configuration, metrics.
    pub metadata: Value,
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

    /// Counts one batch that ended with an optimizer step.
    pub fn finish_batch(&mut self) {
        self.step += 1;
        self.batch_in_epoch += 1;
    }

    /// Counts one batch whose gradients were accumulated for a later step (gradient
    /// accumulation): the batch is consumed, the step count does not move.
    pub fn accumulate_batch(&mut self) {
        self.batch_in_epoch += 1;
    }

    /// Moves to the next epoch.
    pub fn finish_epoch(&mut self) {
        self.epoch += 1;
        self.batch_in_epoch = 0;
    }

    /// The state as `trainer.json`'s fields (the checkpoint adds its format and checksums).
    pub(crate) fn to_json(&self) -> Value {
        json!({
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

    /// Reads the fields [`TrainState::to_json`] wrote, validating every counter and the RNG
    /// position; `path` names the checkpoint in errors.
    pub(crate) fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let bad = |what: &str| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("trainer.json: {what}"),
        };
        // The same bound as every counter in a state file (`taper_tensor::MAX_COUNTER`).
        let counter = |obj: &Value, k: &str| {
            obj.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| checked_counter(k, n as f64).ok())
                .ok_or_else(|| bad(&format!("`{k}` must be a whole number from 0 to 2^53 - 1")))
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
