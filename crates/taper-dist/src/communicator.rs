//! `Communicator`: the collective operations data-parallel training needs, whatever moves
//! the bytes (MPI between processes, NCCL between GPUs, or nothing in one process).
//!
//! The required methods are the primitives (all-reduce, broadcast, all-gather of f32, f64
//! and bytes, barrier, abort); everything else in taper-dist is written over them, so a new
//! transport implements these and gets DDP, ZeRO-1 and the checks for free. Every rank must
//! make the same calls in the same order with the same sizes, as in MPI.

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor};

use crate::error::invalid;
use crate::{Error, Result};

/// The collectives every transport provides. Ranks count from 0; rank 0 is the root that
/// broadcasts the initial model and writes checkpoints.
pub trait Communicator {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world_size(&self) -> usize;
    /// Sums `buf` element-wise over all ranks, in place: afterwards every rank holds the
    /// same sums (PyTorch's `all_reduce(op=SUM)`).
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// [`Communicator::all_reduce_sum_f32`] for f64.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Copies `root`'s `buf` into every rank's `buf` (the same length on every rank).
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// [`Communicator::broadcast_f32`] for f64.
    fn broadcast_f64(&self, buf: &mut [f64], root: usize) -> Result<()>;
    /// [`Communicator::broadcast_f32`] for bytes.
    fn broadcast_u8(&self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Concatenates every rank's `send` into `recv` in rank order; `counts[r]` is rank r's
    /// length (known to all), and `recv` holds their sum.
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()>;
    /// [`Communicator::all_gather_f32`] for f64.
    fn all_gather_f64(&self, send: &[f64], counts: &[usize], recv: &mut [f64]) -> Result<()>;
    /// [`Communicator::all_gather_f32`] for bytes.
    fn all_gather_u8(&self, send: &[u8], counts: &[usize], recv: &mut [u8]) -> Result<()>;
    /// Waits until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every process of the job with `code` (`MPI_Abort`): for an error on one rank
    /// that the others cannot learn about, so that they do not wait for it forever.
    fn abort(&self, code: i32) -> !;

    /// Sums a contiguous f32 or f64 tensor over all ranks, in place, on its device. The
    /// default copies through host memory; a GPU transport (NCCL) overrides it to stay on
    /// the GPU.
    fn all_reduce_sum_tensor(&self, t: &Tensor) -> Result<()>
    where
        Self: Sized,
    {
        host_all_reduce(self, t)
    }

    /// True on rank 0.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Every rank's `send`, in rank order (the lengths may differ).
    fn all_gather_bytes(&self, send: &[u8]) -> Result<Vec<Vec<u8>>> {
        let n = self.world_size();
        let mut lens = vec![0f64; n];
        self.all_gather_f64(&[send.len() as f64], &vec![1; n], &mut lens)?;
        let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let mut recv = vec![0u8; counts.iter().sum()];
        self.all_gather_u8(send, &counts, &mut recv)?;
        let mut out = Vec::with_capacity(n);
        let mut at = 0;
        for c in counts {
            out.push(recv[at..at + c].to_vec());
            at += c;
        }
        Ok(out)
    }

    /// Replaces every rank's `bytes` with `root`'s (the lengths may differ).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let mut len = [bytes.len() as f64];
        self.broadcast_f64(&mut len, root)?;
        bytes.resize(len[0] as usize, 0);
        self.broadcast_u8(bytes, root)
    }

    /// Makes every rank agree on the outcome of a step that each ran locally: when any rank
    /// failed, every rank returns an error (its own, or [`Error::PeerFailed`] naming the
    /// failed rank), so none goes on to a collective the failed one will never join.
    fn agree<T>(&self, op: &'static str, local: Result<T>) -> Result<T>
    where
        Self: Sized,
    {
        let mut failed = vec![0f64; self.world_size()];
        failed[self.rank()] = f64::from(u8::from(local.is_err()));
        self.all_reduce_sum_f64(&mut failed)?;
        match (local, failed.iter().position(|&f| f > 0.0)) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(rank)) => Err(Error::PeerFailed { op, rank }),
            (Ok(v), None) => Ok(v),
        }
    }

    /// Runs `f` on rank 0 only (writing a checkpoint, a log), then holds every rank at a
    /// barrier until it is done. Rank 0 gets `Some(result)`, or [`Error::Failed`] with
    /// `f`'s error; the others get `None`, or [`Error::PeerFailed`] when `f` failed.
    fn on_root<T, E>(&self, op: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<Option<T>>
    where
        Self: Sized,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let local = if self.is_root() {
            f().map(Some).map_err(|e| Error::Failed {
                op,
                source: e.into(),
            })
        } else {
            Ok(None)
        };
        let out = self.agree(op, local);
        self.barrier()?;
        out
    }
}

/// Checks a rank argument.
pub(crate) fn check_root(root: usize, world: usize) -> Result<()> {
    if root >= world {
        return Err(invalid("root", root, "a rank below the world size"));
    }
    Ok(())
}

/// Checks an all-gather's counts against the world and the buffers.
pub(crate) fn check_counts(
    counts: &[usize],
    world: usize,
    rank: usize,
    send: usize,
    recv: usize,
) -> Result<()> {
    if counts.len() != world {
        return Err(invalid("counts", counts.len(), "one count per rank"));
    }
    if counts[rank] != send {
        return Err(invalid(
            "send",
            format!("{send} elements (counts[{rank}] = {})", counts[rank]),
            "this rank's own count",
        ));
    }
    if counts.iter().sum::<usize>() != recv {
        return Err(invalid(
            "recv",
            format!(
                "{recv} elements (the counts sum to {})",
                counts.iter().sum::<usize>()
            ),
            "the sum of the counts",
        ));
    }
    Ok(())
}

/// Writes `values` over a tensor's elements in place (any device).
struct Overwrite<'a>(&'a Tensor);

impl InplaceOp1 for Overwrite<'_> {
    fn name(&self) -> &'static str {
        "overwrite"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("all-reduce needs a contiguous tensor")
        };
        match s {
            CpuStorage::F32(v) => v[a..b].copy_from_slice(&self.0.to_vec1::<f32>()?),
            CpuStorage::F64(v) => v[a..b].copy_from_slice(&self.0.to_vec1::<f64>()?),
            _ => candle_core::bail!("all-reduce of this dtype: f32 or f64 expected"),
        }
        Ok(())
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("all-reduce needs a contiguous tensor")
        };
        use candle_core::backend::BackendStorage;
        let failed = |e| candle_core::Error::Msg(format!("copy to the GPU: {e:?}"));
        let stream = s.device().cuda_stream();
        match s.dtype() {
            DType::F32 => {
                let host = self.0.to_vec1::<f32>()?;
                let mut v = s.as_cuda_slice_mut::<f32>()?.slice_mut(a..b);
                stream.memcpy_htod(&host, &mut v).map_err(failed)?;
            }
            DType::F64 => {
                let host = self.0.to_vec1::<f64>()?;
                let mut v = s.as_cuda_slice_mut::<f64>()?.slice_mut(a..b);
                stream.memcpy_htod(&host, &mut v).map_err(failed)?;
            }
            other => candle_core::bail!("all-reduce of {other:?}: f32 or f64 expected"),
        }
        Ok(())
    }
}

/// [`Communicator::all_reduce_sum_tensor`] through host memory.
pub(crate) fn host_all_reduce<C: Communicator>(comm: &C, t: &Tensor) -> Result<()> {
    let flat = t.flatten_all()?;
    let summed = match t.dtype() {
        DType::F32 => {
            let mut v = flat.to_vec1::<f32>()?;
            comm.all_reduce_sum_f32(&mut v)?;
            Tensor::from_vec(v, flat.dims(), &candle_core::Device::Cpu)?
        }
        DType::F64 => {
            let mut v = flat.to_vec1::<f64>()?;
            comm.all_reduce_sum_f64(&mut v)?;
            Tensor::from_vec(v, flat.dims(), &candle_core::Device::Cpu)?
        }
        other => return Err(invalid("tensor dtype", format!("{other:?}"), "f32 or f64")),
    };
    t.inplace_op1(&Overwrite(&summed))?;
    Ok(())
}
