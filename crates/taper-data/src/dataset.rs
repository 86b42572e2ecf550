//! The `Dataset` trait and an in-memory dataset of tensors.

use candle_core::{Device, Tensor};

use crate::error::invalid;
use crate::Result;

/// Indexed (input, target) examples.
pub trait Dataset: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;

    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One example: (input, target), without a batch dimension.
    fn get(&self, index: usize) -> Result<(Tensor, Tensor)>;

    /// Examples stacked along a new first dimension. The default stacks [`Dataset::get`];
    /// in-memory datasets gather directly.
    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let (xs, ys): (Vec<Tensor>, Vec<Tensor>) = indices
            .iter()
            .map(|&i| self.get(i))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        Ok((Tensor::stack(&xs, 0)?, Tensor::stack(&ys, 0)?))
    }
}

/// A dataset held as two tensors whose first dimension indexes the examples.
#[derive(Debug, Clone)]
pub struct TensorDataset {
    inputs: Tensor,
    targets: Tensor,
}

impl TensorDataset {
    /// Inputs (N, …) and targets (N, …); N must agree.
    pub fn new(inputs: Tensor, targets: Tensor) -> Result<Self> {
        let (n, m) = (
            inputs.dims().first().copied(),
            targets.dims().first().copied(),
        );
        if n.is_none() || n != m {
            return Err(invalid(
                "targets",
                format!(
                    "inputs {:?} and targets {:?}",
                    inputs.dims(),
                    targets.dims()
                ),
                "the same number of examples (first dimension) in inputs and targets",
            ));
        }
        Ok(Self { inputs, targets })
    }

    /// All inputs.
    pub fn inputs(&self) -> &Tensor {
        &self.inputs
    }

    /// All targets.
    pub fn targets(&self) -> &Tensor {
        &self.targets
    }

    /// The first `n` examples (or all, if fewer).
    pub fn take(&self, n: usize) -> Result<Self> {
        let n = n.min(self.len());
        Self::new(self.inputs.narrow(0, 0, n)?, self.targets.narrow(0, 0, n)?)
    }

    /// The dataset on another device.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Self::new(
            self.inputs.to_device(device)?,
            self.targets.to_device(device)?,
        )
    }
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.inputs.dims()[0]
    }

    fn get(&self, index: usize) -> Result<(Tensor, Tensor)> {
        if index >= self.len() {
            return Err(invalid(
                "index",
                index,
                "an index below the dataset's length",
            ));
        }
        Ok((self.inputs.get(index)?, self.targets.get(index)?))
    }

    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(invalid("index", bad, "an index below the dataset's length"));
        }
        let idx = Tensor::from_vec(
            indices.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            indices.len(),
            self.inputs.device(),
        )?;
        Ok((
            self.inputs.index_select(&idx, 0)?,
            self.targets.index_select(&idx, 0)?,
        ))
    }
}
