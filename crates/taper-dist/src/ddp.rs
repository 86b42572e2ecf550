//! `DistributedDataParallel`: PyTorch's DDP for Taper models — same start, averaged
//! gradients, identical steps on every rank.
//!
//! 1. At construction every rank checks that all ranks built the same model (a SHA-256 of
//!    every entry's name, kind, shape and dtype, compared across ranks), then takes rank 0's
//!    parameters and buffers, so all ranks start from the same weights whatever their seed.
//! 2. After each backward pass, [`DistributedDataParallel::backward`] averages the gradients
//!    over the ranks, packed into flat buckets ([`BucketPlan`], 25 MiB by default), one
//!    collective per bucket.
//! 3. With identical gradients and identical optimizers, every rank then takes the same
//!    step and the weights stay bit-identical ([`DistributedDataParallel::check_in_sync`]
//!    proves it).
//!
//! Gradient accumulation skips the averaging on the accumulation steps
//! ([`DistributedDataParallel::no_sync`]). BatchNorm's running statistics stay per rank, as
//! in DDP; [`DistributedDataParallel::broadcast_buffers`] copies rank 0's when wanted (before
//! evaluating, or saving). Differences from PyTorch: the averaging happens after the whole
//! backward pass, not overlapped with it (candle's backward has no per-tensor hooks), and a
//! parameter with no gradient on some rank contributes zeros there (PyTorch's
//! `find_unused_parameters=True`); one with no gradient on any rank stays without one.

use std::time::{Duration, Instant};

use candle_core::{DType, Tensor, Var};
use sha2::{Digest, Sha256};
use taper_tensor::{Gradients, ParamKind, ParamStore};

use crate::bucket::{copy_out, Elem};
use crate::error::invalid;
use crate::{BucketPlan, Communicator, Error, Result, DEFAULT_BUCKET_BYTES};

/// Time and bytes spent averaging gradients, for the all-reduce's share of step time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SyncStats {
    /// Gradient synchronizations.
    pub syncs: u64,
    /// Collective calls made for them.
    pub calls: u64,
    /// Gradient bytes reduced (per rank).
    pub bytes: u64,
    /// Wall time inside them, packing and unpacking included.
    pub time: Duration,
}

/// Data-parallel training of one model over the ranks of a [`Communicator`].
///
/// ```
/// use taper_dist::{DistributedDataParallel, SingleProcess};
/// use candle_core::Module;
/// use taper_nn::Linear;
/// use taper_tensor::{DType, Device, ParamStore, Tensor};
/// let comm = SingleProcess; // `Mpi::init()?` under mpirun
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let model = Linear::new(3, 1, &store.sub("fc"))?;
/// let mut ddp = DistributedDataParallel::new(&comm, &store)?;
/// let x = Tensor::ones((4, 3), DType::F32, &Device::Cpu)?;
/// let loss = model.forward(&x)?.sqr()?.mean_all()?;
/// let grads = ddp.backward(&loss)?; // averaged over the ranks
/// assert_eq!(grads.len(), 2);
/// ddp.check_in_sync()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DistributedDataParallel<'c, C: Communicator> {
    comm: &'c C,
    store: ParamStore,
    params: Vec<(String, Var)>,
    plan: BucketPlan,
    buf32: Vec<Vec<f32>>,
    buf64: Vec<Vec<f64>>,
    sync: bool,
    device_buckets: bool,
    stats: SyncStats,
}

impl<C: Communicator> std::fmt::Debug for DistributedDataParallel<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedDataParallel")
            .field("rank", &self.comm.rank())
            .field("world_size", &self.comm.world_size())
            .field("parameters", &self.params.len())
            .field("buckets", &self.plan.buckets.len())
            .field("sync", &self.sync)
            .finish()
    }
}

/// One line per entry: what every rank must agree on.
fn describe(store: &ParamStore) -> Vec<String> {
    store
        .entries()
        .iter()
        .map(|e| {
            let kind = match e.kind {
                ParamKind::Parameter { trainable: true } => "parameter",
                ParamKind::Parameter { trainable: false } => "frozen parameter",
                ParamKind::Buffer => "buffer",
            };
            format!("{} {kind} {:?} {:?}", e.name, e.var.dims(), e.var.dtype())
        })
        .collect()
}

/// Checks that every rank's `lines` equal rank 0's: a hash each, all-gathered; on a
/// difference, the lines themselves, to name the first differing entry.
pub(crate) fn check_same<C: Communicator>(
    comm: &C,
    what: &'static str,
    lines: &[String],
) -> Result<()> {
    let text = lines.join("\n");
    let hash = Sha256::digest(text.as_bytes());
    let hashes = comm.all_gather_bytes(&hash)?;
    let Some(rank) = hashes.iter().position(|h| h != &hashes[0]) else {
        return Ok(());
    };
    let texts = comm.all_gather_bytes(text.as_bytes())?;
    let root: Vec<&str> = std::str::from_utf8(&texts[0])
        .unwrap_or("")
        .lines()
        .collect();
    let other: Vec<&str> = std::str::from_utf8(&texts[rank])
        .unwrap_or("")
        .lines()
        .collect();
    let detail = (0..root.len().max(other.len()))
        .find_map(|i| match (root.get(i), other.get(i)) {
            (a, b) if a == b => None,
            (Some(a), Some(b)) => Some(format!("rank 0 has `{a}`, rank {rank} has `{b}`")),
            (Some(a), None) => Some(format!("rank {rank} lacks `{a}`")),
            (None, Some(b)) => Some(format!("rank 0 lacks `{b}`")),
            (None, None) => None,
        })
        .unwrap_or_else(|| "the hashes differ".into());
    Err(Error::Mismatch { what, rank, detail })
}

/// The bucket plan of `params` at `cap_bytes`, agreed over the ranks.
fn plan_buckets<C: Communicator>(
    comm: &C,
    params: &[(String, Var)],
    cap_bytes: usize,
) -> Result<BucketPlan> {
    let entries: Vec<(String, Vec<usize>, DType)> = params
        .iter()
        .map(|(n, v)| (n.clone(), v.dims().to_vec(), v.dtype()))
        .collect();
    comm.agree(
        "planning gradient buckets",
        BucketPlan::new(&entries, cap_bytes),
    )
}

impl<'c, C: Communicator> DistributedDataParallel<'c, C> {
    /// Wraps `store`'s model: checks that every rank holds the same model, copies rank 0's
    /// parameters and buffers to all, and plans 25 MiB gradient buckets. Every rank must
    /// call it; on a mismatch every rank gets [`Error::Mismatch`] naming the first
    /// differing entry.
    pub fn new(comm: &'c C, store: &ParamStore) -> Result<Self> {
        check_same(comm, "parameters and buffers", &describe(store))?;
        let params = store.trainable();
        let plan = plan_buckets(comm, &params, DEFAULT_BUCKET_BYTES)?;
        let device_buckets = params.first().is_some_and(|(_, v)| !v.device().is_cpu());
        let ddp = Self {
            comm,
            device_buckets,
            store: store.clone(),
            params,
            plan,
            // Allocated at the first host-buffer sync: a model on the GPU never needs them.
            buf32: Vec::new(),
            buf64: Vec::new(),
            sync: true,
            stats: SyncStats::default(),
        };
        ddp.broadcast_entries(|_| true)?;
        Ok(ddp)
    }

    /// Builder: the bucket capacity in bytes (PyTorch's `bucket_cap_mb`; default
    /// [`DEFAULT_BUCKET_BYTES`]). Every rank must call it with the same capacity (the plan
    /// is agreed over the ranks, as at construction).
    pub fn bucket_bytes(mut self, cap_bytes: usize) -> Result<Self> {
        self.plan = plan_buckets(self.comm, &self.params, cap_bytes)?;
        Ok(self)
    }

    /// Reduce buckets as device tensors ([`Communicator::all_reduce_sum_tensor`]: on the
    /// GPU with NCCL) instead of host buffers. On by default for a model off the CPU;
    /// setting it for a CPU model runs the same path there (for testing).
    pub fn device_buckets(mut self, on: bool) -> Self {
        self.device_buckets = on;
        self
    }

    /// The communicator.
    pub fn comm(&self) -> &'c C {
        self.comm
    }

    /// The model's store.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The bucket plan the gradients are averaged in.
    pub fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    /// Time and bytes spent averaging gradients so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Copies rank 0's value of every entry `pick` selects to all ranks (exact for every
    /// dtype: values travel as f64).
    fn broadcast_entries(&self, pick: impl Fn(&ParamKind) -> bool) -> Result<()> {
        for e in self.store.entries() {
            if !pick(&e.kind) {
                continue;
            }
            let t = e.var.as_tensor();
            let mut v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            self.comm.broadcast_f64(&mut v, 0)?;
            if !self.comm.is_root() {
                let new = Tensor::from_vec(v, t.dims(), t.device())?.to_dtype(t.dtype())?;
                e.var.set(&new)?;
            }
        }
        Ok(())
    }

    /// Copies rank 0's parameters (trainable and frozen) to every rank.
    pub fn broadcast_parameters(&self) -> Result<()> {
        self.broadcast_entries(|k| matches!(k, ParamKind::Parameter { .. }))
    }

    /// Copies rank 0's buffers (BatchNorm's running statistics) to every rank; DDP's
    /// `broadcast_buffers`. Without it, buffers stay per rank after the start.
    pub fn broadcast_buffers(&self) -> Result<()> {
        self.broadcast_entries(|k| *k == ParamKind::Buffer)
    }

    /// Runs `f` with gradient averaging off: [`DistributedDataParallel::backward`] inside
    /// returns this rank's own gradients, for accumulation steps (DDP's `no_sync`). Average
    /// the accumulated sum once with [`DistributedDataParallel::sync_gradients`] (or a
    /// synced `backward` on the last micro-batch, added to it).
    pub fn no_sync<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let was = std::mem::replace(&mut self.sync, false);
        let out = f(self);
        self.sync = was;
        out
    }

    /// Computes the gradients of `loss` and, unless inside
    /// [`DistributedDataParallel::no_sync`], averages them over the ranks.
    pub fn backward(&mut self, loss: &Tensor) -> Result<Gradients> {
        let mut grads = Gradients::compute(loss, &self.store)?;
        if self.sync {
            self.sync_gradients(&mut grads)?;
        }
        Ok(grads)
    }

    /// Replaces `grads` with their mean over the ranks: Σ_r g_r / N, bucket by bucket.
    /// In a world of one rank the mean is the gradient itself, and nothing is copied.
    pub fn sync_gradients(&mut self, grads: &mut Gradients) -> Result<()> {
        let world = self.comm.world_size();
        if world == 1 {
            self.stats.syncs += 1;
            return Ok(());
        }
        let start = Instant::now();
        // Which parameters have a gradient on some rank.
        let mut present: Vec<f64> = self
            .params
            .iter()
            .map(|(n, _)| f64::from(u8::from(grads.get(n).is_some())))
            .collect();
        self.comm.all_reduce_sum_f64(&mut present)?;
        let mut calls = 1;
        if !self.device_buckets && self.buf32.len() != self.plan.buckets.len() {
            let sized = |b: &crate::Bucket, dtype| if b.dtype == dtype { b.len } else { 0 };
            self.buf32 = self
                .plan
                .buckets
                .iter()
                .map(|b| vec![0f32; sized(b, DType::F32)])
                .collect();
            self.buf64 = self
                .plan
                .buckets
                .iter()
                .map(|b| vec![0f64; sized(b, DType::F64)])
                .collect();
        }
        for (bi, bucket) in self.plan.buckets.iter().enumerate() {
            if self.device_buckets {
                reduce_bucket_tensor(self.comm, bucket, grads, &self.params, &present)?;
                calls += 1;
                continue;
            }
            match bucket.dtype {
                DType::F32 => reduce_bucket(
                    self.comm,
                    bucket,
                    &mut self.buf32[bi],
                    grads,
                    &self.params,
                    &present,
                    world,
                )?,
                _ => reduce_bucket(
                    self.comm,
                    bucket,
                    &mut self.buf64[bi],
                    grads,
                    &self.params,
                    &present,
                    world,
                )?,
            }
            calls += 1;
        }
        self.stats.syncs += 1;
        self.stats.calls += calls;
        self.stats.bytes += self.plan.bytes() as u64;
        self.stats.time += start.elapsed();
        Ok(())
    }

    /// Sums `values` over the ranks in place (evaluation counts: correct, total, loss sum).
    pub fn all_reduce_sum(&self, values: &mut [f64]) -> Result<()> {
        self.comm.all_reduce_sum_f64(values)
    }

    /// Checks that every rank holds bit-identical parameters (a SHA-256 per parameter,
    /// compared with rank 0's); [`Error::Mismatch`] names the first that differs.
    pub fn check_in_sync(&self) -> Result<()> {
        let lines = self
            .params
            .iter()
            .map(|(n, v)| {
                let t = v.as_tensor();
                let bytes: Vec<u8> = match t.dtype() {
                    DType::F64 => t
                        .flatten_all()?
                        .to_vec1::<f64>()?
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                    _ => t
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                };
                let h: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                Ok(format!("{n} sha256 {h}"))
            })
            .collect::<Result<Vec<_>>>()?;
        check_same(self.comm, "parameter values", &lines)
    }
}

/// A bucket as one device tensor: the gradients concatenated, reduced where they are.
fn reduce_bucket_tensor<C: Communicator>(
    comm: &C,
    bucket: &crate::Bucket,
    grads: &mut Gradients,
    params: &[(String, Var)],
    present: &[f64],
) -> Result<()> {
    let parts = bucket
        .members
        .iter()
        .map(|m| {
            let var = &params[m.index].1;
            Ok(match grads.get(&m.name) {
                Some(g) if g.dims() == m.dims.as_slice() => {
                    g.to_dtype(bucket.dtype)?.flatten_all()?
                }
                Some(g) => {
                    return Err(invalid(
                        "gradient",
                        format!("{}: shape {:?}", m.name, g.dims()),
                        "the parameter's shape",
                    ))
                }
                None => Tensor::zeros(var.elem_count(), bucket.dtype, var.device())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let flat = Tensor::cat(&parts, 0)?;
    comm.all_reduce_sum_tensor(&flat)?;
    let mean = flat.affine(1.0 / comm.world_size() as f64, 0.0)?;
    for m in &bucket.members {
        if present[m.index] > 0.0 {
            let n: usize = m.dims.iter().product();
            grads.insert(
                &m.name,
                mean.narrow(0, m.offset, n)?.reshape(m.dims.as_slice())?,
            );
        }
    }
    Ok(())
}

fn reduce_bucket<T: Elem, C: Communicator>(
    comm: &C,
    bucket: &crate::Bucket,
    buf: &mut [T],
    grads: &mut Gradients,
    params: &[(String, Var)],
    present: &[f64],
    world: usize,
) -> Result<()> {
    for m in &bucket.members {
        let n: usize = m.dims.iter().product();
        let slot = &mut buf[m.offset..m.offset + n];
        match grads.get(&m.name) {
            Some(g) => {
                if g.dims() != m.dims.as_slice() {
                    return Err(invalid(
                        "gradient",
                        format!("{}: shape {:?}", m.name, g.dims()),
                        "the parameter's shape",
                    ));
                }
                copy_out(g, slot)?
            }
            None => slot.fill(T::zero()),
        }
    }
    T::all_reduce(comm, buf)?;
    let inv = 1.0 / world as f64;
    for m in &bucket.members {
        if present[m.index] == 0.0 {
            continue;
        }
        let n: usize = m.dims.iter().product();
        let mean: Vec<T> = buf[m.offset..m.offset + n]
            .iter()
            .map(|&x| T::from_f64(x.to_f64() * inv))
            .collect();
        let device = params[m.index].1.device();
        grads.insert(&m.name, Tensor::from_vec(mean, m.dims.as_slice(), device)?);
    }
    Ok(())
}
