//! A dataset of (input, next-token target) windows cut from a sequence of token ids.

use candle_core::{Device, Tensor};

use crate::dataset::Dataset;
use crate::error::invalid;
use crate::Result;

/// Windows of `block_size` token ids and their next-token targets: example `i` is
/// `(ids[s·i .. s·i + block], ids[s·i + 1 .. s·i + block + 1])` with stride `s` (1 by
/// default: every offset, as nanoGPT samples; set it to `block_size` for non-overlapping
/// windows, the usual choice for a validation pass). Both are u32 tensors of shape
/// `(block_size,)`, batched to `(N, block_size)`: an `Embedding`'s input and
/// `cross_entropy`'s class targets.
///
/// ```
/// use taper_data::text::TokenWindows;
/// use taper_data::Dataset;
/// let ds = TokenWindows::new(&[10, 11, 12, 13, 14], 3)?;
/// assert_eq!(ds.len(), 2);
/// let (x, y) = ds.get(1)?;
/// assert_eq!(x.to_vec1::<u32>()?, [11, 12, 13]);
/// assert_eq!(y.to_vec1::<u32>()?, [12, 13, 14]);
/// assert_eq!(TokenWindows::new(&[10, 11, 12, 13, 14], 2)?.stride(2)?.len(), 2);
/// assert!(TokenWindows::new(&[1, 2, 3], 3).is_err()); // no room for a target
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TokenWindows {
    ids: Vec<u32>,
    block_size: usize,
    stride: usize,
    device: Device,
}

impl TokenWindows {
    /// Windows of `block_size` over `ids` (at least `block_size + 1` of them), on the CPU.
    pub fn new(ids: &[u32], block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(invalid("block_size", 0, "at least 1"));
        }
        if ids.len() <= block_size {
            return Err(invalid(
                "ids",
                format!("{} token ids for block_size {block_size}", ids.len()),
                "more token ids than block_size (a window and its next-token target)",
            ));
        }
        Ok(Self {
            ids: ids.to_vec(),
            block_size,
            stride: 1,
            device: Device::Cpu,
        })
    }

    /// The offset between consecutive windows (default 1); 0 is an error.
    pub fn stride(mut self, stride: usize) -> Result<Self> {
        if stride == 0 {
            return Err(invalid("stride", 0, "at least 1"));
        }
        self.stride = stride;
        Ok(self)
    }

    /// Where batches are built (default the CPU).
    pub fn device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The window length.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The token ids the windows are cut from.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn window(&self, index: usize) -> Result<&[u32]> {
        if index >= self.len() {
            return Err(invalid(
                "index",
                format!("window {index} of {}", self.len()),
                "an index below the number of windows",
            ));
        }
        let start = index * self.stride;
        Ok(&self.ids[start..start + self.block_size + 1])
    }
}

impl Dataset for TokenWindows {
    fn len(&self) -> usize {
        (self.ids.len() - self.block_size - 1) / self.stride + 1
    }

    fn get(&self, index: usize) -> Result<(Tensor, Tensor)> {
        let w = self.window(index)?;
        let b = self.block_size;
        Ok((
            Tensor::from_slice(&w[..b], b, &self.device)?,
            Tensor::from_slice(&w[1..], b, &self.device)?,
        ))
    }

    /// One copy of the windows into two buffers, then one tensor each.
    fn get_batch(&self, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        let b = self.block_size;
        let mut xs = Vec::with_capacity(indices.len() * b);
        let mut ys = Vec::with_capacity(indices.len() * b);
        for &i in indices {
            let w = self.window(i)?;
            xs.extend_from_slice(&w[..b]);
            ys.extend_from_slice(&w[1..]);
        }
        let n = indices.len();
        Ok((
            Tensor::from_vec(xs, (n, b), &self.device)?,
            Tensor::from_vec(ys, (n, b), &self.device)?,
        ))
    }
}
