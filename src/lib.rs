//! # Taper
//!
//! PyTorch-style training in Rust, built on [candle](https://github.com/huggingface/candle).
//! This facade re-exports the workspace so a training script depends on `taper` alone:
//!
//! | module | crate | holds |
//! | --- | --- | --- |
//! | [`tensor`] | taper-tensor | candle re-exports, `ParamStore`, `Gradients`, gradcheck, devices, seeding |
//! | [`nn`] | taper-nn | layers, activations, initializers, losses, regularizers |
//! | [`optim`] | taper-optim | optimizers, learning-rate schedules, optimizer state |
//! | [`data`] | taper-data | datasets, batching, IDX/MNIST loading, transforms |
//! | [`train`] | taper-train | metrics, progress, early stopping, checkpoints, plots |
//!
//! A training step, written out in full (forward, loss, backward, update):
//!
//! ```
//! use taper::prelude::*;
//!
//! manual_seed(0);
//! let dev = device("cpu")?;
//! let store = ParamStore::new(&dev, DType::F32);
//! let w = store.parameter("weight", (1, 1), |s, dt, d| randn(s, 0.0, 1.0, dt, d))?;
//! let b = store.parameter("bias", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
//! // y = 2x + 1
//! let x = rand_uniform((64, 1), 0.0, 1.0, DType::F32, &dev)?;
//! let y = x.affine(2.0, 1.0)?;
//! for _ in 0..500 {
//!     let pred = x.matmul(&w.t()?)?.broadcast_add(&b)?;
//!     let loss = pred.sub(&y)?.sqr()?.mean_all()?;
//!     let mut grads = Gradients::compute(&loss, &store)?;
//!     grads.clip_norm(10.0, Norm::L2, NonFinite::Error)?;
//!     for (name, var) in store.trainable() {
//!         let g = grads.get(&name).unwrap();
//!         var.set(&var.as_tensor().sub(&g.affine(0.5, 0.0)?)?)?; // plain gradient descent
//!     }
//! }
//! let w = store.var("weight")?.as_tensor().flatten_all()?.to_vec1::<f32>()?[0];
//! assert!((w - 2.0).abs() < 0.05, "{w}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

// Inlined, so `cargo doc -p taper` documents every crate's items under the facade's
// modules (`taper::optim::Adam`), not bare re-export lines.
#[doc(inline)]
pub use taper_data as data;
#[doc(inline)]
pub use taper_nn as nn;
#[doc(inline)]
pub use taper_optim as optim;
#[doc(inline)]
pub use taper_tensor as tensor;
#[doc(inline)]
pub use taper_train as train;

/// The names a training script needs, in one `use taper::prelude::*;`.
pub mod prelude {
    pub use taper_tensor::{
        best_device, device, gradcheck, manual_seed, no_grad, on_thread_pool,
        park_idle_candle_workers, rand_uniform, randn, DType, Device, Gradients, Module, ModuleT,
        NonFinite, Norm, ParamStore, Stateful, Tensor, Var, D,
    };
}
