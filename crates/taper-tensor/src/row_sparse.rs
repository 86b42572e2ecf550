//! `RowSparse`: a gradient that is non-zero only in some rows of its tensor, such as an
//! embedding table's after a batch that looked up a few ids (PyTorch's sparse COO gradient
//! of `nn.Embedding(sparse=True)`, coalesced). Optimizers that update rows lazily
//! (`Optimizer::step_rows` in taper-optim, with SparseAdam) read only these rows.

use crate::{Error, Result, Tensor};

/// The rows of a gradient that are present, and their values.
///
/// ```
/// use taper_tensor::{Device, RowSparse, Tensor};
/// let dense = Tensor::new(&[[0f32, 0.], [1., 2.], [0., 0.], [3., 4.]], &Device::Cpu)?;
/// let g = RowSparse::from_dense(&dense, &[1, 3])?;
/// assert_eq!(g.values().to_vec2::<f32>()?, [[1., 2.], [3., 4.]]);
/// assert_eq!(g.to_dense()?.to_vec2::<f32>()?, dense.to_vec2::<f32>()?);
/// # Ok::<(), taper_tensor::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RowSparse {
    rows: Vec<u32>,
    values: Tensor,
    dims: Vec<usize>,
}

impl RowSparse {
    /// Rows `rows` (strictly increasing, each below `dims[0]`) of a tensor of shape `dims`,
    /// with `values` of shape `(rows.len(), dims[1..])`.
    pub fn new(rows: Vec<u32>, values: Tensor, dims: &[usize]) -> Result<Self> {
        let bad = |value: String, expected: &'static str| Error::InvalidValue {
            field: "rows",
            value,
            expected,
        };
        if dims.is_empty() {
            return Err(bad("a scalar".into(), "a tensor with at least one axis"));
        }
        if let Some(w) = rows.windows(2).find(|w| w[0] >= w[1]) {
            return Err(bad(
                format!("{} then {}", w[0], w[1]),
                "strictly increasing rows",
            ));
        }
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= dims[0]) {
            return Err(bad(
                r.to_string(),
                "rows below the tensor's first dimension",
            ));
        }
        let mut want = vec![rows.len()];
        want.extend(&dims[1..]);
        if values.dims() != want {
            return Err(Error::ShapeMismatch {
                name: "RowSparse values".into(),
                expected: want,
                actual: values.dims().to_vec(),
            });
        }
        Ok(Self {
            rows,
            values,
            dims: dims.to_vec(),
        })
    }

    /// The rows `rows` (any order, repeats allowed) of a dense gradient.
    pub fn from_dense(dense: &Tensor, rows: &[u32]) -> Result<Self> {
        let mut rows = rows.to_vec();
        rows.sort_unstable();
        rows.dedup();
        let index = Tensor::from_slice(&rows, rows.len(), dense.device())?;
        let values = dense.index_select(&index, 0)?;
        Self::new(rows, values, dense.dims())
    }

    /// The present rows, increasing.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Their values, `(rows, dims[1..])`.
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// The shape of the whole gradient.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The whole gradient, zero outside the present rows.
    pub fn to_dense(&self) -> Result<Tensor> {
        let zeros = Tensor::zeros(
            self.dims.as_slice(),
            self.values.dtype(),
            self.values.device(),
        )?;
        if self.rows.is_empty() {
            return Ok(zeros);
        }
        let index = Tensor::from_slice(&self.rows, self.rows.len(), self.values.device())?;
        Ok(zeros.index_add(&index, &self.values, 0)?)
    }
}
