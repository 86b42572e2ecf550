//! # taper-data
//!
//! Data for Taper's training loops: the [`Dataset`] trait and [`TensorDataset`]; a
//! [`DataLoader`] with the source documents' three batching strategies ([`Batching`]: full
//! batch, stochastic, mini-batch), seeded per-epoch shuffling and `drop_last`; the IDX format
//! ([`idx`]); MNIST-format loading with a built-in subset ([`mnist`]); seeded per-batch
//! [`transforms`]; the documents' regression data ([`linear_regression`]); text for
//! language models ([`text`]: vocabularies, next-token windows, a built-in corpus); and,
//! behind the `download` feature, checksummed downloads.
//!
//! ```
//! use taper_data::{mnist, Batching, DataLoader};
//! let data = mnist::builtin()?;
//! let loader = DataLoader::new(data.train, Batching::MiniBatch(64))?.shuffle(true).seed(1);
//! let first = loader.epoch(0).next().unwrap()?;
//! assert_eq!(first.inputs.dims(), &[64, 1, 28, 28]);
//! assert_eq!(loader.batches_per_epoch(), 125);
//! # Ok::<(), taper_data::Error>(())
//! ```

mod dataset;
#[cfg(feature = "download")]
pub mod download;
mod error;
pub mod idx;
mod loader;
pub mod mnist;
mod prefetch;
mod regression;
mod subset;
pub mod text;
pub mod transforms;

pub use dataset::{Dataset, TensorDataset};
pub use error::{Error, Result};
pub use loader::{Batch, Batches, Batching, DataLoader, Shard, ShardTail};
pub use prefetch::{PrefetchedBatches, Prefetcher};
pub use regression::linear_regression;
pub use subset::{random_split, Lengths, Subset};
