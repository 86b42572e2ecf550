//! `Prefetcher`: a `DataLoader` whose batches are built on a background thread, `depth`
//! ahead of the training loop, through a bounded queue. The batches, their order and their
//! augmentation are exactly the loader's (the same `epoch_from`); only the thread that
//! builds them changes. An error building a batch arrives in its place; dropping the
//! iterator early stops and joins the thread.
//!
//! It pays when building a batch (gathering, augmenting) takes a noticeable share of a
//! step and a core is free to do it; the `mnist` example measures it (`--prefetch`).

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::invalid;
use crate::{Batch, DataLoader, Dataset, Result};

/// A loader that builds its batches ahead on a background thread.
///
/// ```
/// use taper_data::{Batching, DataLoader, Prefetcher, TensorDataset};
/// use taper_tensor::{DType, Device, Tensor};
/// let ds = TensorDataset::new(Tensor::arange(0u32, 10, &Device::Cpu)?, Tensor::zeros(10, DType::F32, &Device::Cpu)?)?;
/// let loader = DataLoader::new(ds, Batching::MiniBatch(4))?.shuffle(true).seed(3);
/// let direct: Vec<Vec<u32>> = loader.epoch(1).map(|b| b.unwrap().inputs.to_vec1().unwrap()).collect();
/// let ahead = Prefetcher::new(loader, 2)?;
/// let prefetched: Vec<Vec<u32>> = ahead.epoch(1).map(|b| b.unwrap().inputs.to_vec1().unwrap()).collect();
/// assert_eq!(prefetched, direct);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Prefetcher<D> {
    loader: Arc<DataLoader<D>>,
    depth: usize,
}

impl<D: Dataset + 'static> Prefetcher<D> {
    /// Builds up to `depth` (≥ 1) batches ahead of the consumer.
    pub fn new(loader: DataLoader<D>, depth: usize) -> Result<Self> {
        if depth == 0 {
            return Err(invalid("depth", 0, "a prefetch depth of at least 1"));
        }
        Ok(Self {
            loader: Arc::new(loader),
            depth,
        })
    }

    /// The loader (its order, sizes and seed).
    pub fn loader(&self) -> &DataLoader<D> {
        &self.loader
    }

    /// The batches of `epoch`, built ahead.
    pub fn epoch(&self, epoch: u64) -> PrefetchedBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `start` on (the skipped ones are not built), as
    /// [`DataLoader::epoch_from`] gives them, built ahead.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> PrefetchedBatches {
        let (tx, rx) = sync_channel(self.depth);
        let loader = self.loader.clone();
        let handle = std::thread::Builder::new()
            .name("taper-prefetch".into())
            .spawn(move || {
                for batch in loader.epoch_from(epoch, start) {
                    if tx.send(batch).is_err() {
                        break; // the consumer stopped
                    }
                }
            })
            .ok();
        PrefetchedBatches {
            rx: handle.is_some().then_some(rx),
            handle,
            left: self
                .loader
                .batches_per_epoch()
                .saturating_sub(start.min(self.loader.batches_per_epoch())),
        }
    }
}

/// One epoch's batches from a [`Prefetcher`], in order.
pub struct PrefetchedBatches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    left: usize,
}

impl Iterator for PrefetchedBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let Some(rx) = &self.rx else {
            return Some(Err(invalid(
                "prefetch",
                "no thread",
                "a background thread (the OS refused to start one)",
            )));
        };
        match rx.recv() {
            Ok(b) => {
                self.left -= 1;
                Some(b)
            }
            // The producer ended before the epoch did: it panicked.
            Err(_) => {
                self.left = 0;
                Some(Err(invalid(
                    "prefetch",
                    "the producer thread stopped",
                    "a producer that builds every batch (it panicked)",
                )))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for PrefetchedBatches {}

impl Drop for PrefetchedBatches {
    fn drop(&mut self) {
        drop(self.rx.take()); // unblocks the producer's send
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
