//! # taper-tensor
//!
//! The foundation of Taper: candle re-exports, named parameters ([`ParamStore`]),
//! name-keyed [`Gradients`] with norms, clipping and accumulation, [`gradcheck`], device
//! selection, seeding, and evaluation without a graph ([`no_grad`]).
//!
//! ```
//! use taper_tensor::{manual_seed, randn, Gradients, ParamStore, DType, Device};
//! manual_seed(0);
//! let store = ParamStore::new(&Device::Cpu, DType::F32);
//! let w = store.parameter("w", (1, 3), |s, dt, dev| randn(s, 0.0, 1.0, dt, dev))?;
//! let x = randn((8, 3), 0.0, 1.0, DType::F32, &Device::Cpu)?;
//! let loss = x.matmul(&w.t()?)?.sqr()?.mean_all()?;
//! let grads = Gradients::compute(&loss, &store)?;
//! assert_eq!(grads.get("w").unwrap().dims(), &[1, 3]);
//! # Ok::<(), taper_tensor::Error>(())
//! ```

mod device;
mod durable;
mod error;
mod gradcheck;
mod gradients;
mod kernels;
mod memory;
mod no_grad;
mod param_store;
mod random;
mod row_sparse;
mod serialize;
mod state_dict;
mod threads;
mod var_builder;

pub use candle_core::{self as candle, DType, Device, Module, ModuleT, Shape, Tensor, Var, D};
pub use candle_nn;
pub use device::{best_device, cuda_compiled, cuda_is_available, device, parse_device, DeviceSpec};
pub use durable::{
    clean_stale, clean_stale_siblings, parse_temp_name, process_alive, publish_dir,
    remove_dir_durably, sync_dir, temp_sibling, write_atomic,
};
pub use error::{Error, Result};
pub use gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
pub use gradients::{all_finite, Gradients, NonFinite, Norm};
pub use kernels::{fast_kernels_enabled, with_generic_kernels};
pub use memory::retain_freed_memory;
pub use no_grad::{is_grad_enabled, no_grad, tracked, NoGradGuard};
pub use param_store::{natural_cmp, Entry, ParamKind, ParamStore};
pub use random::{
    bernoulli, fill_bernoulli, fork_rng, initial_seed, manual_seed, rand_uniform, randn, randperm,
    rng_state, set_rng_state, with_rng, RngState, TaperRng,
};
pub use row_sparse::RowSparse;
pub use serialize::{
    parse_safetensors, prefix_map, read_safetensors, rename_keys, save_safetensors,
    serialize_safetensors, LoadMode, LoadReport, StagedLoad,
};
pub use state_dict::{
    checked_counter, parse_scalar, savable_counter, StateDict, Stateful, MAX_COUNTER,
    STATE_DICT_FORMAT,
};
pub use threads::{on_thread_pool, park_idle_candle_workers};
