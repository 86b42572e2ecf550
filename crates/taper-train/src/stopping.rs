//! Stopping rules for training loops, and early stopping with patience.
//!
//! The source documents' loops stop "when the loss reaches a threshold or the iteration
//! count reaches its limit"; [`StopRules`] adds epochs and a relative-improvement tolerance.
//! [`EarlyStopping`] watches a validation metric and can restore the best weights.

use candle_core::Tensor;
use taper_tensor::{ParamStore, StateDict, Stateful};

use crate::{Error, Result};

/// Why a loop should stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// `max_steps` reached.
    MaxSteps,
    /// `max_epochs` reached.
    MaxEpochs,
    /// The loss fell to `loss_threshold` or below.
    LossThreshold(f64),
    /// The relative improvement |L_{t−1} − L_t| / |L_{t−1}| fell below `rel_tol`.
    Converged(f64),
}

/// The documents' stopping rules, each optional; none set means never stop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StopRules {
    max_steps: Option<u64>,
    max_epochs: Option<u64>,
    loss_threshold: Option<f64>,
    rel_tol: Option<f64>,
    previous: Option<f64>,
}

impl StopRules {
    /// No rules yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop after this many steps.
    pub fn max_steps(mut self, n: u64) -> Self {
        self.max_steps = Some(n);
        self
    }

    /// Stop after this many epochs.
    pub fn max_epochs(mut self, n: u64) -> Self {
        self.max_epochs = Some(n);
        self
    }

    /// Stop once the loss is at or below `threshold`.
    pub fn loss_threshold(mut self, threshold: f64) -> Self {
        self.loss_threshold = Some(threshold);
        self
    }

    /// Stop once the relative improvement between consecutive checks is below `tol`.
    pub fn rel_tol(mut self, tol: f64) -> Self {
        self.rel_tol = Some(tol);
        self
    }

    /// Checks after `steps` steps, `epochs` completed epochs and the latest `loss`.
    ///
    /// ```
    /// use taper_train::{Stop, StopRules};
    /// let mut rules = StopRules::new().max_steps(1000).loss_threshold(0.01);
    /// assert_eq!(rules.check(10, 0, 0.5), None);
    /// assert_eq!(rules.check(11, 0, 0.009), Some(Stop::LossThreshold(0.009)));
    /// ```
    pub fn check(&mut self, steps: u64, epochs: u64, loss: f64) -> Option<Stop> {
        let previous = self.previous.replace(loss);
        if self.max_steps.is_some_and(|m| steps >= m) {
            return Some(Stop::MaxSteps);
        }
        if self.max_epochs.is_some_and(|m| epochs >= m) {
            return Some(Stop::MaxEpochs);
        }
        if self.loss_threshold.is_some_and(|t| loss <= t) {
            return Some(Stop::LossThreshold(loss));
        }
        if let (Some(tol), Some(prev)) = (self.rel_tol, previous) {
            let rel = (prev - loss).abs() / prev.abs().max(f64::MIN_POSITIVE);
            if rel < tol {
                return Some(Stop::Converged(rel));
            }
        }
        None
    }
}

/// Whether the watched metric should fall (a loss) or rise (an accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Lower is better.
    #[default]
    Minimize,
    /// Higher is better.
    Maximize,
}

/// Stops after `patience` evaluations without an improvement larger than `min_delta`,
/// optionally keeping a copy of the best weights to restore.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    patience: u64,
    min_delta: f64,
    direction: Direction,
    restore_best: bool,
    best: Option<f64>,
    bad: u64,
    best_weights: Vec<(String, Tensor)>,
}

impl EarlyStopping {
    /// Patience in evaluations, minimum improvement, direction, and whether to snapshot the
    /// best weights.
    pub fn new(
        patience: u64,
        min_delta: f64,
        direction: Direction,
        restore_best: bool,
    ) -> Result<Self> {
        if !(min_delta >= 0.0) {
            return Err(Error::InvalidValue {
                field: "min_delta",
                value: min_delta.to_string(),
                expected: "min_delta >= 0",
            });
        }
        Ok(Self {
            patience,
            min_delta,
            direction,
            restore_best,
            best: None,
            bad: 0,
            best_weights: Vec::new(),
        })
    }

    /// Records a validation metric; returns true when training should stop. On an
    /// improvement, snapshots `store` if restoring is enabled.
    pub fn update(&mut self, metric: f64, store: &ParamStore) -> Result<bool> {
        let improved = match (self.best, self.direction) {
            (None, _) => metric.is_finite(),
            (Some(b), Direction::Minimize) => metric < b - self.min_delta,
            (Some(b), Direction::Maximize) => metric > b + self.min_delta,
        };
        if improved {
            self.best = Some(metric);
            self.bad = 0;
            if self.restore_best {
                self.best_weights = store
                    .state_dict()
                    .into_iter()
                    .map(|(n, t)| Ok((n, t.copy()?)))
                    .collect::<Result<_>>()?;
            }
        } else {
            self.bad += 1;
        }
        Ok(self.bad > self.patience)
    }

    /// The best metric so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// Writes the best weights back into `store`; false when there is no snapshot. Every
    /// name and shape is checked first, so a failure changes nothing.
    pub fn restore(&self, store: &ParamStore) -> Result<bool> {
        if self.best_weights.is_empty() {
            return Ok(false);
        }
        let weights: std::collections::HashMap<String, Tensor> =
            self.best_weights.iter().cloned().collect();
        store.load_state_dict(&weights, taper_tensor::LoadMode::Strict)?;
        Ok(true)
    }
}

impl Stateful for EarlyStopping {
    /// Writes `{prefix}.best` (NaN when nothing was recorded yet), `{prefix}.bad`, and the
    /// best weights as tensors `{prefix}.weights.{name}`.
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        out.set_scalar(prefix, "best", self.best.unwrap_or(f64::NAN));
        out.set_counter(prefix, "bad", self.bad)?;
        for (name, t) in &self.best_weights {
            out.set_tensor(prefix, &format!("weights.{name}"), t);
        }
        Ok(())
    }

    /// `best` must be finite or NaN (none yet), `bad` a counter, and weights present only
    /// when this instance restores the best weights. The weights are the model's state
    /// dict, integer buffers included (BatchNorm's `num_batches_tracked`); their names and
    /// shapes are checked against the model when they are restored.
    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.read(prefix, state).map(|_| ())
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        (self.best, self.bad, self.best_weights) = self.read(prefix, state)?;
        Ok(())
    }
}

type EarlyState = (Option<f64>, u64, Vec<(String, Tensor)>);

impl EarlyStopping {
    fn read(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<EarlyState> {
        let best = state.scalar(prefix, "best")?;
        if best.is_infinite() {
            return Err(taper_tensor::Error::State {
                key: format!("{prefix}.best"),
                reason: format!("is {best}; expected a finite metric, or NaN for none yet"),
            });
        }
        let bad = state.counter(prefix, "bad")?;
        let head = format!("{prefix}.weights.");
        let mut weights = Vec::new();
        for (k, t) in state.tensors.range(head.clone()..) {
            let Some(name) = k.strip_prefix(&head) else {
                break;
            };
            weights.push((name.to_string(), t.clone()));
        }
        if !weights.is_empty() && !self.restore_best {
            return Err(taper_tensor::Error::State {
                key: head,
                reason: "holds best weights, but this EarlyStopping does not keep them".into(),
            });
        }
        Ok(((!best.is_nan()).then_some(best), bad, weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taper_tensor::{DType, Device};

    #[test]
    fn each_rule_fires() {
        let mut r = StopRules::new().max_steps(5);
        assert_eq!(r.check(4, 0, 1.0), None);
        assert_eq!(r.check(5, 0, 1.0), Some(Stop::MaxSteps));
        let mut r = StopRules::new().max_epochs(2);
        assert_eq!(r.check(100, 2, 1.0), Some(Stop::MaxEpochs));
        let mut r = StopRules::new().rel_tol(1e-3);
        assert_eq!(r.check(1, 0, 1.0), None, "no previous loss yet");
        assert_eq!(r.check(2, 0, 0.5), None);
        assert_eq!(
            r.check(3, 0, 0.4999),
            Some(Stop::Converged((0.5f64 - 0.4999) / 0.5))
        );
    }

    #[test]
    fn early_stopping_waits_for_patience_and_restores_the_best() -> anyhow::Result<()> {
        let store = ParamStore::new(&Device::Cpu, DType::F32);
        let w = store.parameter("w", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
        let var = store.var("w")?;
        let mut es = EarlyStopping::new(2, 0.01, Direction::Maximize, true)?;
        let history = [
            (0.5, 1.0f32),
            (0.7, 2.0),
            (0.705, 3.0),
            (0.69, 4.0),
            (0.71, 5.0),
        ];
        let mut stopped_at = None;
        for (i, (acc, value)) in history.iter().enumerate() {
            var.set(&Tensor::new(&[*value], &Device::Cpu)?)?;
            if es.update(*acc, &store)? {
                stopped_at = Some(i);
                break;
            }
        }
        // 0.705 and 0.69 do not beat 0.7 by 0.01, nor does 0.71: the third miss stops.
        assert_eq!(stopped_at, Some(4));
        assert_eq!(es.best(), Some(0.7));
        assert!(es.restore(&store)?);
        assert_eq!(w.to_vec1::<f32>()?, [2.0]);
        assert!(EarlyStopping::new(1, -1.0, Direction::Minimize, false).is_err());
        Ok(())
    }
}
