//! `Subset`, `random_split` and range slicing: views of a dataset by index, for validation
//! splits and quick experiments, as PyTorch's `torch.utils.data.Subset` and `random_split`.
//! The split is a function of its seed alone (PyTorch's takes a generator), so a resumed run
//! gets the same split.

use std::ops::Range;
use std::sync::Arc;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::invalid;
use crate::{Dataset, Result};

/// Some examples of a dataset, in a given order: example `i` is the dataset's
/// `indices[i]`. Batches are gathered from the dataset in one `get_batch` call.
#[derive(Debug, Clone)]
pub struct Subset<D> {
    dataset: D,
    indices: Vec<usize>,
}

impl<D: Dataset> Subset<D> {
    /// The examples `indices` of `dataset`; each must be below its length.
    pub fn new(dataset: D, indices: Vec<usize>) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(invalid(
                "indices",
                bad,
                "indices below the dataset's length",
            ));
        }
        Ok(Self { dataset, indices })
    }

    /// The examples in `range` (`start..end`, end at most the length), in order.
    ///
    /// ```
    /// use taper_data::{Dataset, Subset, TensorDataset};
    /// use taper_tensor::{Device, Tensor};
    /// let ds = TensorDataset::new(Tensor::arange(0f32, 10., &Device::Cpu)?, Tensor::zeros(10, taper_tensor::DType::U32, &Device::Cpu)?)?;
    /// let tail = Subset::range(ds, 8..10)?;
    /// assert_eq!(tail.len(), 2);
    /// assert_eq!(tail.get(0)?.0.to_scalar::<f32>()?, 8.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn range(dataset: D, range: Range<usize>) -> Result<Self> {
        if range.start > range.end || range.end > dataset.len() {
            return Err(invalid(
                "range",
                format!("{}..{} of {}", range.start, range.end, dataset.len()),
                "start <= end <= the dataset's length",
            ));
        }
        Self::new(dataset, range.collect())
    }

    /// The positions in the underlying dataset, in this subset's order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The underlying dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn get(&self, index: usize) -> Result<(Tensor, Tensor)> {
        let &i = self
            .indices
            .get(index)
            .ok_or_else(|| invalid("index", index, "an index below the subset's length"))?;
        self.dataset.get(i)
    }

    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let mapped = indices
            .iter()
            .map(|&k| {
                self.indices
                    .get(k)
                    .copied()
                    .ok_or_else(|| invalid("index", k, "an index below the subset's length"))
            })
            .collect::<Result<Vec<_>>>()?;
        self.dataset.get_batch(&mapped)
    }
}

/// How [`random_split`] sizes its parts.
#[derive(Debug, Clone, PartialEq)]
pub enum Lengths {
    /// Exact sizes, which must add up to the dataset's length.
    Counts(Vec<usize>),
    /// Fractions that add up to 1 (within 1e-9): each part gets ⌊f·n⌋ examples and the
    /// remainder goes one by one to the parts in order, as PyTorch distributes it.
    Fractions(Vec<f64>),
}

impl From<&[usize]> for Lengths {
    fn from(v: &[usize]) -> Self {
        Lengths::Counts(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Lengths {
    fn from(v: [usize; N]) -> Self {
        Lengths::Counts(v.to_vec())
    }
}

impl From<&[f64]> for Lengths {
    fn from(v: &[f64]) -> Self {
        Lengths::Fractions(v.to_vec())
    }
}

impl<const N: usize> From<[f64; N]> for Lengths {
    fn from(v: [f64; N]) -> Self {
        Lengths::Fractions(v.to_vec())
    }
}

/// Splits `dataset` into disjoint random parts that cover it, shuffled by `seed`
/// (PyTorch's `random_split(dataset, lengths, generator)`); the parts share the dataset.
///
/// ```
/// use taper_data::{random_split, Dataset, TensorDataset};
/// use taper_tensor::{DType, Device, Tensor};
/// let ds = TensorDataset::new(Tensor::zeros((100, 3), DType::F32, &Device::Cpu)?, Tensor::zeros(100, DType::U32, &Device::Cpu)?)?;
/// let parts = random_split(ds, [0.8, 0.2], 42)?;
/// assert_eq!((parts[0].len(), parts[1].len()), (80, 20));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn random_split<D: Dataset>(
    dataset: D,
    lengths: impl Into<Lengths>,
    seed: u64,
) -> Result<Vec<Subset<Arc<D>>>> {
    let n = dataset.len();
    let sizes = match lengths.into() {
        Lengths::Counts(c) => {
            if c.iter().sum::<usize>() != n {
                return Err(invalid(
                    "lengths",
                    format!("{c:?} (sum {}) for {n} examples", c.iter().sum::<usize>()),
                    "lengths that add up to the dataset's length",
                ));
            }
            c
        }
        Lengths::Fractions(f) => {
            let total: f64 = f.iter().sum();
            if f.iter().any(|&x| !(0.0..=1.0).contains(&x)) || (total - 1.0).abs() > 1e-9 {
                return Err(invalid(
                    "lengths",
                    format!("{f:?}"),
                    "fractions in [0, 1] that add up to 1",
                ));
            }
            let mut sizes: Vec<usize> =
                f.iter().map(|&x| (x * n as f64).floor() as usize).collect();
            let left = n - sizes.iter().sum::<usize>();
            let parts = sizes.len().max(1);
            for k in 0..left {
                sizes[k % parts] += 1;
            }
            sizes
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let shared = Arc::new(dataset);
    let mut start = 0;
    sizes
        .into_iter()
        .map(|len| {
            let part = order[start..start + len].to_vec();
            start += len;
            Subset::new(shared.clone(), part)
        })
        .collect()
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }

    fn get(&self, index: usize) -> Result<(Tensor, Tensor)> {
        (**self).get(index)
    }

    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        (**self).get_batch(indices)
    }
}
