//! `AveragedModel`: a running average of a model's weights, for stochastic weight averaging
//! (SWA: the equal-weight mean of the iterates, Izmailov et al. 2018) or an exponential
//! moving average (EMA: Polyak averaging with exponential weights).
//!
//! The averaged weights live in a [`ParamStore`] of their own with the model's names,
//! shapes and order: build the same model over [`AveragedModel::store`] to evaluate them
//! (layers reuse existing entries), and save that store like any model's. The average's
//! own state (the weights and `n_averaged`) goes into checkpoints through [`Stateful`]
//! (`Checkpoint::add_state("swa", &averaged)` in taper-train).
//!
//! The first [`AveragedModel::update_parameters`] copies the model; each later one moves
//! every average a by a ← a + w(θ − a), with w = 1/(n + 1) for SWA (n = updates so far) or
//! w = 1 − decay for EMA.
//!
//! PyTorch counterpart: `torch.optim.swa_utils.AveragedModel(model, avg_fn=None |
//! multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)`, with the same lerp. As
//! in PyTorch, buffers (BatchNorm's running statistics) are copied from the model at each
//! update unless `use_buffers(true)`, which averages them too; integer buffers (counters)
//! are then averaged and truncated toward zero, as PyTorch's integer arithmetic does.
//! PyTorch's `update_bn` (a pass over the data to recompute BatchNorm statistics for the
//! averaged weights) is not provided: average the buffers, or run the model built over the
//! averaged store in training mode over the data.

use candle_core::{DType, Tensor};
use taper_tensor::{ParamKind, ParamStore, StateDict, Stateful};

use crate::error::check;
use crate::{error::Error, error::Result};

/// How [`AveragedModel`] averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Averaging {
    /// Stochastic weight averaging: the equal-weight mean of every update (PyTorch's
    /// default, `avg_fn=None`).
    Swa,
    /// Exponential moving average: a ← decay·a + (1 − decay)·θ (PyTorch's
    /// `get_ema_multi_avg_fn(decay)`, whose default decay is 0.999).
    Ema {
        /// The decay, in [0, 1].
        decay: f64,
    },
}

/// A running average of a model's weights (SWA or EMA), evaluable and saveable as a model.
///
/// ```
/// use taper_optim::{AveragedModel, Averaging};
/// use taper_tensor::{DType, Device, ParamStore, Tensor};
/// let model = ParamStore::new(&Device::Cpu, DType::F32);
/// let w = model.parameter("w", 2, |_, _, d| Ok(Tensor::new(&[1f32, 2.], d)?))?;
/// let mut swa = AveragedModel::new(&model, Averaging::Swa)?;
/// swa.update_parameters(&model)?; // copies: [1, 2]
/// model.var("w")?.set(&Tensor::new(&[3f32, 4.], w.device())?)?;
/// swa.update_parameters(&model)?; // the mean of both: [2, 3]
/// assert_eq!(swa.store().var("w")?.as_tensor().to_vec1::<f32>()?, [2., 3.]);
/// assert_eq!(swa.n_averaged(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AveragedModel {
    store: ParamStore,
    averaging: Averaging,
    use_buffers: bool,
    n_averaged: u64,
}

impl AveragedModel {
    /// A deep copy of `model`'s parameters and buffers, to be averaged.
    pub fn new(model: &ParamStore, averaging: Averaging) -> Result<Self> {
        if let Averaging::Ema { decay } = averaging {
            check(
                "AveragedModel",
                "decay",
                decay,
                (0.0..=1.0).contains(&decay),
                "decay in [0, 1]",
            )?;
        }
        Ok(Self {
            store: model.to_device(model.device())?,
            averaging,
            use_buffers: false,
            n_averaged: 0,
        })
    }

    /// SWA over `model`.
    pub fn swa(model: &ParamStore) -> Result<Self> {
        Self::new(model, Averaging::Swa)
    }

    /// EMA over `model` with `decay` (PyTorch's default is 0.999).
    pub fn ema(model: &ParamStore, decay: f64) -> Result<Self> {
        Self::new(model, Averaging::Ema { decay })
    }

    /// Builder: average the buffers too (PyTorch's `use_buffers=True`).
    pub fn use_buffers(mut self, on: bool) -> Self {
        self.use_buffers = on;
        self
    }

    /// The averaged weights, as a store with the model's names: build the model over it to
    /// evaluate them, save it to keep them.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// How many updates have been averaged.
    pub fn n_averaged(&self) -> u64 {
        self.n_averaged
    }

    /// How this model averages.
    pub fn averaging(&self) -> Averaging {
        self.averaging
    }

    /// Averages in `model`'s current weights. Every averaged entry must exist in `model`
    /// with the same shape and kind; this is checked, and every new value computed, before
    /// anything changes.
    pub fn update_parameters(&mut self, model: &ParamStore) -> Result<()> {
        let weight = match self.averaging {
            Averaging::Swa => 1.0 / (self.n_averaged as f64 + 1.0),
            Averaging::Ema { decay } => 1.0 - decay,
        };
        let mut new = Vec::new();
        for e in self.store.entries() {
            // Buffers that are not averaged are kept in sync with the model, as in PyTorch.
            let average = e.kind != ParamKind::Buffer || self.use_buffers;
            let src = model.entry(&e.name).ok_or_else(|| {
                Error::StateMismatch(format!(
                    "AveragedModel: the model has no entry `{}` (the average was made from a \
                     model with other names)",
                    e.name
                ))
            })?;
            let is_buffer = |k: ParamKind| k == ParamKind::Buffer;
            if src.var.dims() != e.var.dims() || is_buffer(src.kind) != is_buffer(e.kind) {
                return Err(Error::StateMismatch(format!(
                    "AveragedModel: `{}` is a {:?} of shape {:?} in the model; expected a {:?} \
                     of shape {:?}",
                    e.name,
                    src.kind,
                    src.var.dims(),
                    e.kind,
                    e.var.dims()
                )));
            }
            let theta = src
                .var
                .as_tensor()
                .to_device(e.var.device())?
                .to_dtype(e.var.dtype())?;
            let a = e.var.as_tensor();
            let value = if self.n_averaged == 0 || !average {
                theta
            } else if a.dtype().is_float() {
                (a + theta.sub(a)?.affine(weight, 0.0)?)?
            } else {
                // Integer buffers: the same average, truncated toward zero (as PyTorch's
                // integer arithmetic does).
                let (a64, t64) = (a.to_dtype(DType::F64)?, theta.to_dtype(DType::F64)?);
                (&a64 + t64.sub(&a64)?.affine(weight, 0.0)?)?.to_dtype(a.dtype())?
            };
            new.push((e.var, value));
        }
        for (avg, value) in new {
            avg.set(&value)?;
        }
        self.n_averaged += 1;
        Ok(())
    }

    /// Checks a saved state and returns what loading it sets: `n_averaged` and each entry's
    /// value, in store order, on this store's device.
    fn staged(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<(u64, Vec<Tensor>)> {
        let n = state.counter(prefix, "n_averaged")?;
        let mut values = Vec::new();
        for e in self.store.entries() {
            let field = format!("module.{}", e.name);
            let key = if prefix.is_empty() {
                field.clone()
            } else {
                format!("{prefix}.{field}")
            };
            let bad = |reason: String| taper_tensor::Error::State {
                key: key.clone(),
                reason,
            };
            let t = if e.var.dtype().is_float() {
                let t = state.tensor(prefix, &field, e.var.dims())?;
                if !taper_tensor::all_finite(t)? {
                    return Err(bad("holds NaN or infinity; expected finite weights".into()));
                }
                t.clone()
            } else {
                let t = state
                    .tensors
                    .get(&key)
                    .ok_or_else(|| bad("is missing".into()))?;
                if t.dims() != e.var.dims() || t.dtype() != e.var.dtype() {
                    return Err(bad(format!(
                        "is {:?} of shape {:?}; expected {:?} of shape {:?}",
                        t.dtype(),
                        t.dims(),
                        e.var.dtype(),
                        e.var.dims()
                    )));
                }
                t.clone()
            };
            values.push(t.to_device(e.var.device())?.to_dtype(e.var.dtype())?);
        }
        Ok((n, values))
    }
}

impl Stateful for AveragedModel {
    /// Writes `{prefix}.n_averaged` and each averaged entry as `{prefix}.module.{name}`
    /// (PyTorch's state_dict keys, under the prefix).
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        out.set_counter(prefix, "n_averaged", self.n_averaged)?;
        for e in self.store.entries() {
            out.set_tensor(prefix, &format!("module.{}", e.name), e.var.as_tensor());
        }
        Ok(())
    }

    /// Checks `n_averaged` is a counter and every entry is present with its shape (and
    /// finite, for float entries); extra entries are the checkpoint's to report.
    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.staged(prefix, state).map(|_| ())
    }

    /// Restores a saved state; nothing changes when it is invalid.
    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        let (n, values) = self.staged(prefix, state)?;
        for (e, v) in self.store.entries().iter().zip(values) {
            e.var.set(&v)?;
        }
        self.n_averaged = n;
        Ok(())
    }
}
