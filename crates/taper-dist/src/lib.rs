//! # taper-dist
//!
//! Data-parallel training for Taper, on the engines clusters already run: MPI between CPU
//! processes on one machine or many (feature `mpi`: Open MPI through rsmpi, launched with
//! `mpirun`), and NCCL between GPUs (feature `nccl`, bootstrapped over MPI; compiled in CI,
//! not yet run on a GPU). The default build needs no MPI; [`SingleProcess`] is the world of one rank,
//! so code written for N ranks runs and is tested anywhere.
//!
//! | piece | file | PyTorch |
//! | --- | --- | --- |
//! | [`Communicator`]: all-reduce, broadcast, all-gather, barrier, abort | `communicator.rs` | `torch.distributed` |
//! | `Mpi` (feature `mpi`), `Nccl` (feature `nccl`), [`SingleProcess`] | `mpi.rs`, `nccl.rs`, `single.rs` | the `mpi`, `nccl` and `gloo` backends |
//! | [`DistributedDataParallel`]: same start, averaged gradients in buckets, `no_sync` | `ddp.rs` | `DistributedDataParallel` |
//! | [`BucketPlan`]: flat 25 MiB buckets in name order | `bucket.rs` | `bucket_cap_mb` |
//! | [`ZeroOptimizer`]: optimizer state sharded by name (ZeRO-1) | `zero.rs` | `ZeroRedundancyOptimizer` |
//! | [`Launcher`]: the `mpirun` command line | `launch.rs` | `torchrun` |
//!
//! Rank-sharded data is taper-data's `DataLoader::shard(rank, world_size, tail)`
//! (`DistributedSampler`); rank-0 checkpoints use [`Communicator::on_root`].
//!
//! ```
//! use taper_dist::{Communicator, DistributedDataParallel, SingleProcess, ZeroOptimizer};
//! use candle_core::Module;
//! use taper_nn::Linear;
//! use taper_optim::Sgd;
//! use taper_tensor::{DType, Device, ParamStore, Tensor};
//! let comm = SingleProcess; // `taper_dist::Mpi::init()?` under `mpirun -np 2`
//! let store = ParamStore::new(&Device::Cpu, DType::F32);
//! let model = Linear::new(4, 1, &store.sub("fc"))?;
//! let mut ddp = DistributedDataParallel::new(&comm, &store)?; // rank 0's weights everywhere
//! let mut opt = ZeroOptimizer::new(Sgd::new(0.1), &store, &comm)?;
//! let x = Tensor::ones((8, 4), DType::F32, &Device::Cpu)?;
//! for _ in 0..3 {
//!     let loss = model.forward(&x)?.sqr()?.mean_all()?;
//!     let grads = ddp.backward(&loss)?; // the mean over the ranks
//!     opt.step(&grads)?; // each rank updates its shard, then all gather
//! }
//! ddp.check_in_sync()?; // bit-identical weights on every rank
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Resuming on a different number of ranks
//! A checkpoint holds one model and one optimizer state whatever the number of ranks that
//! wrote it ([`ZeroOptimizer::consolidated_state`] gathers a sharded one), so it loads on
//! any number. The data order is a function of (seed, epoch) alone; what changes with the
//! number of ranks N and the per-rank batch B is the global batch N·B, and with it the
//! steps per epoch. A run resumed at an epoch boundary sees exactly the epochs it would
//! have seen. A run resumed mid-epoch on another N·B continues from the same example
//! position rounded down to the new global batch ([`resume_batch`]), so up to N·B − 1
//! examples of that epoch are seen twice.

mod bucket;
mod communicator;
mod ddp;
mod error;
mod launch;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
mod resume;
mod single;
mod zero;

pub use bucket::{Bucket, BucketPlan, Member, DEFAULT_BUCKET_BYTES};
pub use communicator::Communicator;
pub use ddp::{DistributedDataParallel, SyncStats};
pub use error::{Error, Result};
pub use launch::Launcher;
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
#[cfg(feature = "nccl")]
pub use nccl::Nccl;
pub use resume::resume_batch;
pub use single::SingleProcess;
pub use zero::{partition, ZeroMemory, ZeroOptimizer};
