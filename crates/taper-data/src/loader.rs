//! `DataLoader`: batches of a dataset in the documents' three strategies, shuffled
//! reproducibly per seed and epoch.
//!
//! - [`Batching::FullBatch`]: batch gradient descent, the whole set per step;
//! - [`Batching::Stochastic`]: stochastic gradient descent, one example per step;
//! - [`Batching::MiniBatch`]: B examples per step.
//!
//! The order of epoch e is a function of (seed, e) alone (a ChaCha8 stream per epoch), so a
//! run resumed from a checkpoint at epoch e sees exactly the batches it would have seen.
//!
//! For data-parallel training, [`DataLoader::shard`] gives rank r of N every N-th example
//! of that same order, starting at r, as PyTorch's `DistributedSampler` does: the shards
//! are disjoint, and together the ranks' k-th batches are the unsharded loader's k-th
//! batch of N times the size.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;
use crate::error::invalid;
use crate::transforms::BatchTransform;
use crate::Result;

/// How many examples each step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// The whole dataset per step (batch gradient descent).
    FullBatch,
    /// One example per step (stochastic gradient descent).
    Stochastic,
    /// B examples per step (mini-batch gradient descent).
    MiniBatch(usize),
}

/// One batch: inputs, targets, and which examples they are.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Inputs, (B, …).
    pub inputs: Tensor,
    /// Targets, (B, …).
    pub targets: Tensor,
    /// The dataset indices of the examples, in batch order.
    pub indices: Vec<usize>,
}

/// What a sharded loader does with the examples left over when the dataset's length is
/// not a multiple of the number of ranks, so that every rank takes the same number of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardTail {
    /// Repeat examples from the start of the epoch's order until the length divides
    /// (PyTorch's `DistributedSampler(drop_last=False)`, its default).
    #[default]
    Pad,
    /// Leave the last `len % world_size` examples of the epoch's order out
    /// (`DistributedSampler(drop_last=True)`).
    Drop,
}

/// Which part of each epoch this loader yields: rank `rank` of `world_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// What happens to the remainder.
    pub tail: ShardTail,
}

impl Shard {
    /// The whole dataset: rank 0 of 1.
    pub const WHOLE: Shard = Shard {
        rank: 0,
        world_size: 1,
        tail: ShardTail::Pad,
    };

    /// Examples per rank and epoch for a dataset of `n`.
    pub fn per_rank(&self, n: usize) -> usize {
        match self.tail {
            ShardTail::Pad => n.div_ceil(self.world_size),
            ShardTail::Drop => n / self.world_size,
        }
    }

    /// This rank's part of an epoch's `order` (the whole order for [`Shard::WHOLE`]).
    pub fn take(&self, order: &[usize]) -> Vec<usize> {
        if self.world_size == 1 || order.is_empty() {
            return order.to_vec();
        }
        let total = self.per_rank(order.len()) * self.world_size;
        (self.rank..total)
            .step_by(self.world_size)
            .map(|i| order[i % order.len()])
            .collect()
    }
}

/// Yields batches of a dataset, epoch by epoch.
pub struct DataLoader<D> {
    dataset: D,
    batching: Batching,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    device: Device,
    transform: Option<Box<dyn BatchTransform>>,
    shard: Shard,
}

impl<D: Dataset> DataLoader<D> {
    /// A loader in order (no shuffle), keeping the last partial batch, on the CPU, seed 0.
    pub fn new(dataset: D, batching: Batching) -> Result<Self> {
        if batching == Batching::MiniBatch(0) {
            return Err(invalid("batch_size", 0, "a batch size of at least 1"));
        }
        Ok(Self {
            dataset,
            batching,
            shuffle: false,
            drop_last: false,
            seed: 0,
            device: Device::Cpu,
            transform: None,
            shard: Shard::WHOLE,
        })
    }

    /// Yields only rank `rank`'s shard of each epoch, for data-parallel training over
    /// `world_size` processes (PyTorch's `DistributedSampler`). Each epoch's order is still
    /// a function of (seed, epoch) alone, the same on every rank; rank r takes the examples
    /// at positions r, r + N, r + 2N, … of it, and `tail` evens out the remainder so every
    /// rank takes the same number of steps. The batch size stays per rank.
    ///
    /// ```
    /// use taper_data::{Batching, DataLoader, ShardTail, TensorDataset};
    /// use candle_core::{Device, Tensor};
    /// let x = Tensor::arange(0u32, 10, &Device::Cpu)?;
    /// let data = TensorDataset::new(x.clone(), x)?;
    /// let rank1 = DataLoader::new(data, Batching::MiniBatch(2))?.shard(1, 4, ShardTail::Pad)?;
    /// let seen: Vec<u32> = rank1.epoch(0).flat_map(|b| b.unwrap().inputs.to_vec1::<u32>().unwrap()).collect();
    /// assert_eq!(seen, [1, 5, 9]); // 10 examples padded to 12: positions 1, 5, 9
    /// # Ok::<(), taper_data::Error>(())
    /// ```
    pub fn shard(mut self, rank: usize, world_size: usize, tail: ShardTail) -> Result<Self> {
        if world_size == 0 {
            return Err(invalid("world_size", 0, "at least one rank"));
        }
        if rank >= world_size {
            return Err(invalid(
                "rank",
                rank,
                "a rank below world_size (ranks count from 0)",
            ));
        }
        self.shard = Shard {
            rank,
            world_size,
            tail,
        };
        Ok(self)
    }

    /// The shard this loader yields ([`Shard::WHOLE`] unless [`DataLoader::shard`] was set).
    pub fn shard_info(&self) -> Shard {
        self.shard
    }

    /// Examples this loader yields per epoch: the dataset's length, or its shard's.
    pub fn examples_per_epoch(&self) -> usize {
        self.shard.per_rank(self.dataset.len())
    }

    /// Shuffle each epoch (reproducibly: see [`DataLoader::order`]).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Drop the last batch of an epoch when it is smaller than the batch size.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The seed of the epoch orders and of the transforms' randomness.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The device batches are delivered on.
    pub fn device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// A transform applied to every batch (augmentation, normalization, one-hot).
    pub fn transform(mut self, t: impl BatchTransform + 'static) -> Self {
        self.transform = Some(Box::new(t));
        self
    }

    /// The seed set with [`DataLoader::seed`].
    pub fn seed_value(&self) -> u64 {
        self.seed
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// Examples per batch (the whole set for full-batch).
    pub fn batch_size(&self) -> usize {
        match self.batching {
            Batching::FullBatch => self.examples_per_epoch().max(1),
            Batching::Stochastic => 1,
            Batching::MiniBatch(b) => b,
        }
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.examples_per_epoch(), self.batch_size());
        if self.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of the examples in `epoch`: a permutation depending only on (seed, epoch)
    /// when shuffling, else 0, 1, 2, …. A sharded loader's order is its shard of that
    /// permutation ([`Shard::take`]).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            v.shuffle(&mut rng);
        }
        self.shard.take(&v)
    }

    /// The batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Batches<'_, D> {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `start` on: the same batches, with the same
    /// augmentation randomness, as `epoch(epoch)` yields from there. The skipped batches
    /// are not built (`epoch(e).skip(k)` skips without building them too).
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Batches<'_, D> {
        Batches {
            loader: self,
            order: self.order(epoch),
            epoch,
            next: start.min(self.batches_per_epoch()),
        }
    }

    fn make(&self, epoch: u64, k: usize, indices: &[usize]) -> Result<Batch> {
        let (mut x, mut y) = self.dataset.get_batch(indices)?;
        if let Some(t) = &self.transform {
            // Randomness of batch k of epoch e: its own stream, independent of the order's.
            // Ranks draw from distinct streams (k·N + r), and rank 0 of 1 from stream k.
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5DEE_CE66_D1CE_5EED);
            let stream = (k * self.shard.world_size + self.shard.rank) as u64;
            rng.set_stream((epoch << 32) | stream);
            (x, y) = t.apply(x, y, &mut rng)?;
        }
        Ok(Batch {
            inputs: x.to_device(&self.device)?,
            targets: y.to_device(&self.device)?,
            indices: indices.to_vec(),
        })
    }
}

/// The batches of one epoch, in order.
pub struct Batches<'a, D> {
    loader: &'a DataLoader<D>,
    order: Vec<usize>,
    epoch: u64,
    next: usize,
}

impl<D: Dataset> Iterator for Batches<'_, D> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.loader.batch_size();
        let k = self.next;
        if k >= self.loader.batches_per_epoch() {
            return None;
        }
        self.next += 1;
        let end = ((k + 1) * b).min(self.order.len());
        Some(self.loader.make(self.epoch, k, &self.order[k * b..end]))
    }

    /// Skips `n` batches without building them.
    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.next = self
            .next
            .saturating_add(n)
            .min(self.loader.batches_per_epoch());
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.loader.batches_per_epoch() - self.next;
        (left, Some(left))
    }
}

impl<D: Dataset> ExactSizeIterator for Batches<'_, D> {}
