//! `History`: what `Fit` returns, as Keras's `History`: one [`EpochLog`] per epoch and why
//! training stopped early, kept in checkpoints so a resumed run returns the whole run's.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// One epoch's record: the training loss and metrics, the validation ones (`val_…`), those
/// of the averaged weights (`avg_val_…`), the learning rate at the end of the epoch and the
/// time taken.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    /// The epoch, 1-based as Keras prints it.
    pub epoch: u64,
    /// `loss`, each metric, `val_loss` and `val_…` when there is validation data,
    /// `avg_val_…` with weight averaging, `lr`.
    pub values: BTreeMap<String, f64>,
    /// Seconds the epoch took.
    pub seconds: f64,
}

/// What `fit` returns: every epoch's record, and why training stopped early, if it did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// One record per epoch trained (including epochs before a resume).
    pub epochs: Vec<EpochLog>,
    /// Why training ended before the last epoch (early stopping, a stopping rule).
    pub stopped: Option<String>,
}

impl History {
    /// The series `key` (`loss`, `val_loss`, `accuracy`, `lr`, …) over the epochs, as
    /// Keras's `history.history[key]`; empty when no epoch recorded it.
    pub fn get(&self, key: &str) -> Vec<f64> {
        self.epochs
            .iter()
            .filter_map(|e| e.values.get(key).copied())
            .collect()
    }

    /// The history as JSON, for a checkpoint's metadata.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "epochs": self.epochs.iter().map(|e| json!({
                "epoch": e.epoch, "values": e.values, "seconds": e.seconds,
            })).collect::<Vec<_>>(),
            "stopped": self.stopped,
        })
    }

    /// Reads [`History::to_json`]'s output, naming what is missing or malformed.
    pub(crate) fn from_json(v: &Value) -> Result<Self> {
        let bad = |what: &str| Error::Checkpoint {
            path: "metadata.fit_history".into(),
            reason: format!("{what} is missing or malformed"),
        };
        let mut h = History::default();
        for e in v["epochs"].as_array().ok_or_else(|| bad("epochs"))? {
            let values = e["values"]
                .as_object()
                .ok_or_else(|| bad("values"))?
                .iter()
                .map(|(k, x)| x.as_f64().map(|x| (k.clone(), x)).ok_or_else(|| bad(k)))
                .collect::<Result<_>>()?;
            h.epochs.push(EpochLog {
                epoch: e["epoch"].as_u64().ok_or_else(|| bad("epoch"))?,
                values,
                seconds: e["seconds"].as_f64().ok_or_else(|| bad("seconds"))?,
            });
        }
        h.stopped = v["stopped"].as_str().map(String::from);
        Ok(h)
    }
}
