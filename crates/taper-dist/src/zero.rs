//! `ZeroOptimizer`: ZeRO stage 1 (Rajbhandari et al., 2020, "ZeRO: Memory Optimizations
//! Toward Training Trillion Parameter Models") — each rank keeps the optimizer state of a
//! share of the parameters only.
//!
//! The parameters are sharded by name: largest first, each to the rank with the fewest
//! elements so far (ties to the lower rank), so the shards are balanced by size and the same
//! on every rank. Each step, every rank updates the parameters it owns from the averaged
//! gradients, with the full optimizer (clipping by the global norm included, since every
//! rank still sees every gradient), then the updated parameters are all-gathered so every
//! rank holds all of them again. The result is the unsharded step's, element for element.
//!
//! The state of an N-rank run is gathered into one ordinary [`OptimizerState`] for
//! checkpoints ([`ZeroOptimizer::consolidated_state`], PyTorch's
//! `ZeroRedundancyOptimizer.consolidate_state_dict`), so it resumes on any number of ranks,
//! sharded or not.

use std::collections::HashSet;

use candle_core::{DType, Tensor, Var};
use taper_optim::{AnyOptimizer, Clip, LrTarget, Optimizer, OptimizerState, Rule, StepReport};
use taper_tensor::{Gradients, ParamStore, StateDict, Stateful};

use crate::bucket::{copy_out, Elem};
use crate::error::invalid;
use crate::{Communicator, Error, Result};

/// Optimizer-state memory of one rank, sharded against unsharded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroMemory {
    /// Bytes of optimizer state this rank holds.
    pub local_bytes: usize,
    /// Bytes every rank would hold without sharding.
    pub unsharded_bytes: usize,
}

impl ZeroMemory {
    /// The bytes sharding saves on this rank.
    pub fn saved_bytes(&self) -> usize {
        self.unsharded_bytes.saturating_sub(self.local_bytes)
    }
}

/// An [`Optimizer`] whose state is sharded over the ranks (ZeRO-1).
///
/// ```
/// use taper_dist::{SingleProcess, ZeroOptimizer};
/// use taper_optim::Adam;
/// use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};
/// let comm = SingleProcess;
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let w = store.parameter("w", 3, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
/// let mut opt = ZeroOptimizer::new(Adam::new(0.1), &store, &comm)?;
/// let grads = Gradients::compute(&w.sum_all()?, &store)?;
/// opt.step(&grads)?;
/// assert_eq!(opt.owned(), ["w"]); // one rank owns everything
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ZeroOptimizer<'c, R: Rule, C: Communicator> {
    /// Steps taken (every rank counts them, owning parameters or not).
    steps: u64,
    comm: &'c C,
    params: Vec<(String, Var)>,
    owner: Vec<usize>,
    inner: Option<Optimizer<R>>,
    // The hyperparameters every rank shares, kept also where a rank owns nothing.
    rule: R,
    dtype: DType,
    counts: Vec<usize>,
}

impl<R: Rule, C: Communicator> std::fmt::Debug for ZeroOptimizer<'_, R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroOptimizer")
            .field("rank", &self.comm.rank())
            .field("owned", &self.owned())
            .field("inner", &self.inner)
            .finish()
    }
}

/// Assigns each of `sizes` to one of `world` ranks, balanced by size: largest first, to the
/// least-loaded rank (ties: lower index, lower rank).
pub fn partition(sizes: &[usize], world: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut load = vec![0usize; world.max(1)];
    let mut owner = vec![0; sizes.len()];
    for i in order {
        let r = (0..load.len()).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        owner[i] = r;
        load[r] += sizes[i];
    }
    owner
}

/// The parameter a state key belongs to: `{param}.{field}`, field without dots.
fn key_param(key: &str) -> Option<&str> {
    key.rsplit_once('.').map(|(p, _)| p)
}

impl<'c, R: Rule, C: Communicator> ZeroOptimizer<'c, R, C> {
    /// Shards `store`'s trainable parameters over the ranks and builds this rank's
    /// optimizer for its share, with `rule`'s hyperparameters. The parameters must share
    /// one dtype, f32 or f64. Every rank must call it.
    pub fn new(rule: R, store: &ParamStore, comm: &'c C) -> Result<Self> {
        let params = store.trainable();
        let local = (|| {
            let dtype = params.first().map_or(DType::F32, |(_, v)| v.dtype());
            if let Some((n, v)) = params
                .iter()
                .find(|(_, v)| v.dtype() != dtype || !matches!(v.dtype(), DType::F32 | DType::F64))
            {
                return Err(invalid(
                    "parameter dtype",
                    format!("{n}: {:?}", v.dtype()),
                    "one dtype for every parameter, f32 or f64",
                ));
            }
            let sizes: Vec<usize> = params.iter().map(|(_, v)| v.elem_count()).collect();
            let owner = partition(&sizes, comm.world_size());
            let mine: Vec<(String, Var)> = params
                .iter()
                .zip(&owner)
                .filter(|(_, &o)| o == comm.rank())
                .map(|(p, _)| p.clone())
                .collect();
            let inner = if mine.is_empty() {
                None
            } else {
                Some(Optimizer::from_vars(rule.clone(), mine)?)
            };
            let counts = (0..comm.world_size())
                .map(|r| {
                    sizes
                        .iter()
                        .zip(&owner)
                        .filter(|(_, &o)| o == r)
                        .map(|(s, _)| s)
                        .sum()
                })
                .collect();
            Ok((dtype, owner, inner, counts))
        })();
        let (dtype, owner, inner, counts) = comm.agree("building the sharded optimizer", local)?;
        Ok(Self {
            steps: 0,
            comm,
            params,
            owner,
            inner,
            rule,
            dtype,
            counts,
        })
    }

    /// Clips the gradients before every step ([`Clip`]). Each rank's shard optimizer sees
    /// every averaged gradient, so `Clip::Norm` takes the global norm, as unsharded
    /// training does. Every rank must call it.
    pub fn clip(mut self, clip: Clip) -> Result<Self> {
        let local = match self.inner.take() {
            Some(o) => o.clip(clip).map(Some).map_err(Error::from),
            None => Ok(None),
        };
        self.inner = self.comm.agree("configuring gradient clipping", local)?;
        Ok(self)
    }

    /// The names of the parameters whose state this rank keeps.
    pub fn owned(&self) -> Vec<&str> {
        self.params
            .iter()
            .zip(&self.owner)
            .filter(|(_, &o)| o == self.comm.rank())
            .map(|((n, _), _)| n.as_str())
            .collect()
    }

    /// The rank that owns each parameter, in the store's order.
    pub fn owners(&self) -> impl Iterator<Item = (&str, usize)> {
        self.params
            .iter()
            .map(|(n, _)| n.as_str())
            .zip(self.owner.iter().copied())
    }

    /// This rank's optimizer (`None` when it owns no parameter: more ranks than parameters).
    pub fn local(&self) -> Option<&Optimizer<R>> {
        self.inner.as_ref()
    }

    /// Mutable access to this rank's optimizer, to change hyperparameters (schedules act on
    /// every rank alike, so the shards stay in step).
    pub fn local_mut(&mut self) -> Option<&mut Optimizer<R>> {
        self.inner.as_mut()
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.rule.common().lr
    }

    /// Sets the learning rate (an invalid one is an error and changes nothing).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        Ok(self.set_group_lr(0, lr)?)
    }

    /// Updates this rank's parameters from `grads` (all of them, averaged), then gathers
    /// every rank's updated parameters. Every rank must call it; when the local update
    /// fails on any rank, every rank returns an error and no parameter was gathered.
    pub fn step(&mut self, grads: &Gradients) -> Result<StepReport> {
        let local = match &mut self.inner {
            Some(o) => o.step(grads).map_err(Error::from),
            None => Ok(StepReport::default()),
        };
        let report = self.comm.agree("the sharded optimizer step", local)?;
        match self.dtype {
            DType::F64 => self.gather::<f64>()?,
            _ => self.gather::<f32>()?,
        }
        if !report.skipped {
            self.steps += 1;
        }
        Ok(report)
    }

    fn gather<T: Elem>(&self) -> Result<()> {
        let rank = self.comm.rank();
        let mut send = vec![T::zero(); self.counts[rank]];
        let mut at = 0;
        for ((_, v), &o) in self.params.iter().zip(&self.owner) {
            if o == rank {
                let n = v.elem_count();
                copy_out(v.as_tensor(), &mut send[at..at + n])?;
                at += n;
            }
        }
        let mut recv = vec![T::zero(); self.counts.iter().sum()];
        T::all_gather(self.comm, &send, &self.counts, &mut recv)?;
        let mut starts: Vec<usize> = self
            .counts
            .iter()
            .scan(0, |a, &c| {
                let s = *a;
                *a += c;
                Some(s)
            })
            .collect();
        for ((_, v), &o) in self.params.iter().zip(&self.owner) {
            let n = v.elem_count();
            let at = starts[o];
            starts[o] += n;
            if o != rank {
                let t = Tensor::from_slice(&recv[at..at + n], v.dims(), v.device())?;
                v.set(&t)?;
            }
        }
        Ok(())
    }

    /// Optimizer-state memory on this rank and without sharding, as allocated (state is
    /// created at a parameter's first step). Every rank must call it.
    pub fn memory(&self) -> Result<ZeroMemory> {
        let local: usize = match &self.inner {
            Some(o) => o
                .state_dict()?
                .tensors
                .values()
                .map(|t| t.elem_count() * t.dtype().size_in_bytes())
                .sum(),
            None => 0,
        };
        let mut total = [local as f64];
        self.comm.all_reduce_sum_f64(&mut total)?;
        Ok(ZeroMemory {
            local_bytes: local,
            unsharded_bytes: total[0] as usize,
        })
    }

    /// Gathers every rank's shard into one [`OptimizerState`] on rank 0, as an unsharded
    /// [`Optimizer`] over the same parameters would have it (other ranks get `None`). Every
    /// rank must call it.
    pub fn consolidated_state(&self) -> Result<Option<OptimizerState>> {
        let origin = std::path::Path::new("rank shard");
        let local = match &self.inner {
            Some(o) => o
                .state_dict()
                .and_then(|s| s.to_bytes(origin))
                .map_err(Error::from),
            None => Ok(Vec::new()),
        };
        let bytes = self.comm.agree("encoding the optimizer shard", local)?;
        let shards = self.comm.all_gather_bytes(&bytes)?;
        if !self.comm.is_root() {
            return Ok(None);
        }
        let mut out = OptimizerState::default();
        for shard in shards.iter().filter(|s| !s.is_empty()) {
            let s = OptimizerState::from_bytes(shard, origin)?;
            out.optimizer = s.optimizer;
            out.tensors.extend(s.tensors);
            out.scalars.extend(s.scalars);
        }
        Ok(Some(out))
    }

    /// Loads a full state (from [`ZeroOptimizer::consolidated_state`], or an unsharded
    /// optimizer's, saved by any number of ranks): each rank takes its own parameters'
    /// entries. Everything is checked on every rank first; if any rank's share does not
    /// fit, every rank returns an error and nothing changed anywhere.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        let staged = self.stage(state)?;
        if let (Some(o), Some(s)) = (&mut self.inner, staged) {
            o.commit_state(s);
        }
        self.steps = state
            .scalars
            .get("steps")
            .map_or(Ok(0), |&v| taper_tensor::checked_counter("steps", v))?;
        Ok(())
    }

    /// This rank's share of `state`, checked on every rank (see
    /// [`ZeroOptimizer::load_state_dict`]); nothing changes.
    fn stage(&self, state: &OptimizerState) -> Result<Option<taper_optim::StagedState<R>>> {
        let all: HashSet<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        let mine: HashSet<&str> = self.owned().into_iter().collect();
        let keep = |k: &str| match key_param(k) {
            Some(p) if all.contains(p) => mine.contains(p),
            _ => true,
        };
        let filtered = OptimizerState {
            optimizer: state.optimizer.clone(),
            tensors: state
                .tensors
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            scalars: state
                .scalars
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        };
        let staged = match &self.inner {
            Some(o) => o.stage_state_dict(&filtered).map(Some).map_err(Error::from),
            None => Ok(None),
        };
        self.comm
            .agree("loading the sharded optimizer state", staged)
    }
}

/// Schedules and other learning-rate controllers drive a sharded optimizer as they drive an
/// unsharded one (one group). Every rank must apply the same changes, which holds for
/// schedules (functions of the step) and for controllers fed all-reduced metrics.
impl<R: Rule, C: Communicator> LrTarget for ZeroOptimizer<'_, R, C> {
    fn group_count(&self) -> usize {
        1
    }

    fn group_lr(&self, group: usize) -> Option<f64> {
        (group == 0).then(|| self.rule.common().lr)
    }

    fn set_group_lr(&mut self, group: usize, lr: f64) -> taper_optim::Result<()> {
        // The shard's optimizer checks the rate; a rank that owns nothing checks it on a
        // throwaway one, so every rank refuses the same rates (schedules call this each step).
        match &mut self.inner {
            Some(o) => o.set_group_lr(group, lr)?,
            None => Optimizer::from_vars(self.rule.clone(), self.params.clone())?
                .set_group_lr(group, lr)?,
        }
        self.rule.common_mut().lr = lr;
        Ok(())
    }

    fn group_momentum(&self, group: usize) -> Option<f64> {
        (group == 0)
            .then(|| self.rule.momentum_coefficient())
            .flatten()
    }

    fn set_group_momentum(&mut self, group: usize, momentum: f64) -> taper_optim::Result<bool> {
        let had = match &mut self.inner {
            Some(o) => o.set_group_momentum(group, momentum)?,
            None => Optimizer::from_vars(self.rule.clone(), self.params.clone())?
                .set_group_momentum(group, momentum)?,
        };
        self.rule.set_momentum_coefficient(momentum);
        Ok(had)
    }
}

/// A sharded optimizer's state is the consolidated state of an unsharded one (see
/// [`ZeroOptimizer::consolidated_state`]), so a checkpoint of it loads on any number of
/// ranks. **Collective:** every rank must call each method; saving writes the state on rank
/// 0 only (the one that writes checkpoints), and checking and loading agree over the ranks,
/// so a state that does not fit one rank fails on all.
impl<R: Rule, C: Communicator> Stateful for ZeroOptimizer<'_, R, C> {
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        let state = self
            .consolidated_state()
            .map_err(|e| state_error(prefix, e))?;
        if let Some(st) = state {
            for (k, t) in &st.tensors {
                out.set_tensor(prefix, k, t);
            }
            for (k, v) in &st.scalars {
                out.set_scalar(prefix, k, *v);
            }
        }
        Ok(())
    }

    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        let st = under(prefix, state, R::NAME);
        self.stage(&st)
            .map(|_| ())
            .map_err(|e| state_error(prefix, e))
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        let st = under(prefix, state, R::NAME);
        self.load_state_dict(&st)
            .map_err(|e| state_error(prefix, e))
    }
}

/// The entries of `state` under `prefix`, as an optimizer state of algorithm `name`.
fn under(prefix: &str, state: &StateDict, name: &str) -> OptimizerState {
    let head = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}.")
    };
    let strip = |k: &String| k.strip_prefix(&head).map(str::to_string);
    OptimizerState {
        optimizer: name.to_string(),
        tensors: state
            .tensors
            .iter()
            .filter_map(|(k, t)| strip(k).map(|k| (k, t.clone())))
            .collect(),
        scalars: state
            .scalars
            .iter()
            .filter_map(|(k, v)| strip(k).map(|k| (k, *v)))
            .collect(),
    }
}

fn state_error(prefix: &str, e: Error) -> taper_tensor::Error {
    taper_tensor::Error::State {
        key: if prefix.is_empty() {
            "ZeroOptimizer".into()
        } else {
            prefix.to_string()
        },
        reason: e.to_string(),
    }
}

/// A sharded optimizer is an [`AnyOptimizer`] (schedules, checkpoints, `Fit`). Its steps are
/// collective: with more than one rank, every rank must make the same calls, and the
/// gradients it is given must already be averaged over the ranks
/// ([`DistributedDataParallel::backward`](crate::DistributedDataParallel::backward));
/// `backward_step` and `step_closure` do not average them.
impl<R: Rule, C: Communicator> AnyOptimizer for ZeroOptimizer<'_, R, C> {
    fn name(&self) -> String {
        R::NAME.to_string()
    }
    fn params(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }
    fn step(&mut self, grads: &Gradients) -> taper_optim::Result<StepReport> {
        ZeroOptimizer::step(self, grads).map_err(|e| match e {
            Error::Optim(o) => o,
            other => taper_optim::Error::External(Box::new(other)),
        })
    }
    fn steps(&self) -> u64 {
        self.steps
    }
}
