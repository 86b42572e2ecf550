//! `Nccl`: the [`Communicator`] over NCCL between GPUs, through cudarc's `nccl` module as
//! candle links it (feature `nccl`; the library comes from the `nvidia-nccl-cu13` wheel or
//! the CUDA toolkit).
//!
//! One process per GPU, as with PyTorch's NCCL backend. The processes are started and found
//! by another communicator (the *bootstrap*, normally [`Mpi`](crate::Mpi) under `mpirun`):
//! rank 0 creates NCCL's unique id and the bootstrap carries it to the others.
//!
//! Collectives run on candle's CUDA stream for the device, so they are ordered with the
//! kernels that produced and consume the tensors. [`Communicator::all_reduce_sum_tensor`]
//! reduces a CUDA tensor in place on the GPU (what DDP's buckets use on CUDA); the host-slice
//! methods copy through the GPU and are for small control data (flags, hashes, counts).
//!
//! Status: compiled in CI with the pinned CUDA 13.0 wheels (`scripts/cuda-env.sh`), not yet
//! run on a GPU.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, DType, Device, InplaceOp1, Layout, Tensor};
use std::sync::Arc;

use crate::communicator::{check_counts, check_root};
use crate::error::invalid;
use crate::{Communicator, Error, Result};

/// NCCL's and CUDA's errors, in words.
fn nccl_err(op: &'static str) -> impl Fn(String) -> Error {
    move |reason| Error::Transport { op, reason }
}

/// NCCL between the GPUs of a job, one per process.
pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    device: Device,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nccl")
            .field("rank", &self.comm.rank())
            .field("world_size", &self.comm.world_size())
            .field("device", &self.device)
            .finish()
    }
}

impl Nccl {
    /// Joins the NCCL communicator of `bootstrap`'s ranks on `device` (a CUDA device; rank r
    /// usually takes `cuda:{local rank}`). Every rank must call it.
    pub fn new<B: Communicator>(bootstrap: &B, device: &Device) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            return Err(invalid(
                "device",
                format!("{device:?}"),
                "a CUDA device (NCCL moves GPU memory)",
            ));
        };
        let id = if bootstrap.is_root() {
            Id::new().map_err(|e| nccl_err("ncclGetUniqueId")(format!("{e:?}")))
        } else {
            Ok(Id::uninit([0; 128]))
        };
        let id = bootstrap.agree("creating the NCCL id", id)?;
        let mut bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        bootstrap.broadcast_u8(&mut bytes, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, s) in internal.iter_mut().zip(&bytes) {
            *d = *s as std::ffi::c_char;
        }
        let stream = cuda.cuda_stream();
        let comm = Comm::from_rank(
            stream.clone(),
            bootstrap.rank(),
            bootstrap.world_size(),
            Id::uninit(internal),
        )
        .map_err(|e| nccl_err("ncclCommInitRank")(format!("{e:?}")));
        let comm = bootstrap.agree("joining the NCCL communicator", comm)?;
        Ok(Self {
            comm,
            stream,
            device: device.clone(),
        })
    }

    /// The CUDA device this rank's collectives run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn upload<T: DeviceRepr>(&self, buf: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(buf)
            .map_err(|e| nccl_err("copying to the GPU")(format!("{e:?}")))
    }

    fn download<T: DeviceRepr>(&self, src: &CudaSlice<T>, buf: &mut [T]) -> Result<()> {
        self.stream
            .memcpy_dtoh(src, buf)
            .and_then(|()| self.stream.synchronize())
            .map_err(|e| nccl_err("copying from the GPU")(format!("{e:?}")))
    }

    fn reduce<T: DeviceRepr + NcclType>(&self, buf: &mut [T]) -> Result<()> {
        let mut d = self.upload(buf)?;
        self.comm
            .all_reduce_in_place(&mut d, &ReduceOp::Sum)
            .map_err(|e| nccl_err("ncclAllReduce")(format!("{e:?}")))?;
        self.download(&d, buf)
    }

    fn bcast<T: DeviceRepr + NcclType>(&self, buf: &mut [T], root: usize) -> Result<()> {
        check_root(root, self.world_size())?;
        let mut d = self.upload(buf)?;
        self.comm
            .broadcast_in_place(&mut d, root as i32)
            .map_err(|e| nccl_err("ncclBroadcast")(format!("{e:?}")))?;
        self.download(&d, buf)
    }

    /// NCCL's all-gather takes equal counts: each rank's part is padded to the largest.
    fn gather<T: DeviceRepr + NcclType + ValidAsZeroBits + Copy + Default>(
        &self,
        send: &[T],
        counts: &[usize],
        recv: &mut [T],
    ) -> Result<()> {
        let world = self.world_size();
        check_counts(counts, world, self.rank(), send.len(), recv.len())?;
        let most = counts.iter().copied().max().unwrap_or(0);
        let mut padded = send.to_vec();
        padded.resize(most, T::default());
        let d_send = self.upload(&padded)?;
        let mut d_recv = self
            .stream
            .alloc_zeros::<T>(most * world)
            .map_err(|e| nccl_err("allocating on the GPU")(format!("{e:?}")))?;
        self.comm
            .all_gather(&d_send, &mut d_recv)
            .map_err(|e| nccl_err("ncclAllGather")(format!("{e:?}")))?;
        let mut all = vec![T::default(); most * world];
        self.download(&d_recv, &mut all)?;
        let mut at = 0;
        for (r, &c) in counts.iter().enumerate() {
            recv[at..at + c].copy_from_slice(&all[r * most..r * most + c]);
            at += c;
        }
        Ok(())
    }
}

/// NCCL's in-place all-reduce as a candle in-place op on CUDA storage.
struct AllReduce<'a>(&'a Comm);

impl InplaceOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("NCCL reduces CUDA tensors; this one is on the CPU")
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("NCCL all-reduce needs a contiguous tensor")
        };
        use candle_core::backend::BackendStorage;
        let failed = |e| candle_core::Error::Msg(format!("ncclAllReduce: {e:?}"));
        match s.dtype() {
            DType::F32 => {
                let mut v = s.as_cuda_slice_mut::<f32>()?.slice_mut(a..b);
                self.0
                    .all_reduce_in_place(&mut v, &ReduceOp::Sum)
                    .map_err(failed)?;
            }
            DType::F64 => {
                let mut v = s.as_cuda_slice_mut::<f64>()?.slice_mut(a..b);
                self.0
                    .all_reduce_in_place(&mut v, &ReduceOp::Sum)
                    .map_err(failed)?;
            }
            other => candle_core::bail!("NCCL all-reduce of {other:?}: f32 or f64 expected"),
        }
        Ok(())
    }
}

impl Communicator for Nccl {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.reduce(buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.reduce(buf)
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.bcast(buf, root)
    }
    fn broadcast_f64(&self, buf: &mut [f64], root: usize) -> Result<()> {
        self.bcast(buf, root)
    }
    fn broadcast_u8(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.bcast(buf, root)
    }
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()> {
        self.gather(send, counts, recv)
    }
    fn all_gather_f64(&self, send: &[f64], counts: &[usize], recv: &mut [f64]) -> Result<()> {
        self.gather(send, counts, recv)
    }
    fn all_gather_u8(&self, send: &[u8], counts: &[usize], recv: &mut [u8]) -> Result<()> {
        self.gather(send, counts, recv)
    }
    fn barrier(&self) -> Result<()> {
        self.reduce(&mut [0f32])
    }
    fn abort(&self, code: i32) -> ! {
        // NCCL has no job-wide abort; the launcher (mpirun) ends the others when this
        // process exits non-zero.
        std::process::exit(code)
    }
    fn all_reduce_sum_tensor(&self, t: &Tensor) -> Result<()> {
        if !t.device().is_cuda() {
            return crate::communicator::host_all_reduce(self, t);
        }
        t.inplace_op1(&AllReduce(&self.comm))?;
        Ok(())
    }
}
