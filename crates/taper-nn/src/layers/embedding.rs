//! `Embedding`: a lookup table of vectors, PyTorch's `nn.Embedding` (weight ~ N(0, 1)).
//!
//! With [`Embedding::sparse`] (PyTorch's `sparse=True`) it also records which ids each
//! forward pass looked up, and [`Embedding::sparse_grad`] gives the table's gradient as the
//! rows those ids touched ([`RowSparse`]), for optimizers that update only those rows
//! (SparseAdam). candle's autograd still builds the dense gradient; what the rows save is
//! the optimizer's pass over the untouched rows.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Result, Tensor};
use taper_tensor::{tracked, Gradients, Module, ParamStore, RowSparse};

use crate::error::Error;
use crate::init::Init;
use crate::layers::pool::is_index_dtype;

/// Maps integer ids of any shape to vectors: output shape is ids.shape + (embedding_dim).
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
    name: String,
    /// With `sparse`: the ids looked up since the last `sparse_grad`.
    seen: Option<Arc<Mutex<BTreeSet<u32>>>>,
}

/// [`Embedding`]'s configuration: `EmbeddingConfig::new(num_embeddings, embedding_dim)`
/// with PyTorch's default `sparse=False`, changed with [`EmbeddingConfig::sparse`], then
/// [`EmbeddingConfig::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingConfig {
    /// Table rows.
    pub num_embeddings: usize,
    /// Vector size.
    pub embedding_dim: usize,
    /// Record the ids each forward pass looks up, for [`Embedding::sparse_grad`] (default
    /// false).
    pub sparse: bool,
}

impl EmbeddingConfig {
    /// A table of `num_embeddings` vectors of size `embedding_dim`.
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> Self {
        Self {
            num_embeddings,
            embedding_dim,
            sparse: false,
        }
    }

    /// Builder: record the ids each forward pass looks up, for [`Embedding::sparse_grad`]
    /// (PyTorch's `sparse=True`).
    pub fn sparse(mut self, sparse: bool) -> Self {
        self.sparse = sparse;
        self
    }

    /// Builds the table, registered as `weight` (N(0, 1), as PyTorch initializes it).
    pub fn build(self, store: &ParamStore) -> crate::error::Result<Embedding> {
        let init = Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        let shape = (self.num_embeddings, self.embedding_dim);
        let weight = store.parameter("weight", shape, init.init_fn())?;
        Ok(Embedding {
            weight,
            name: store.full_name("weight"),
            seen: self.sparse.then(Default::default),
        })
    }
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `embedding_dim`, registered as `weight`
    /// (`EmbeddingConfig::new(num_embeddings, embedding_dim).build(store)`).
    pub fn new(
        num_embeddings: usize,
        embedding_dim: usize,
        store: &ParamStore,
    ) -> crate::error::Result<Self> {
        EmbeddingConfig::new(num_embeddings, embedding_dim).build(store)
    }

    /// The table's gradient in `grads`, as the rows looked up since the last call (which
    /// it forgets): PyTorch's coalesced sparse gradient, rows increasing. Call it once per
    /// step, after the backward pass.
    ///
    /// ```
    /// use taper_nn::EmbeddingConfig;
    /// use taper_tensor::{DType, Device, Gradients, Module, ParamStore, Tensor};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let emb = EmbeddingConfig::new(10, 3).sparse(true).build(&store.sub("emb"))?;
    /// let ids = Tensor::new(&[7u32, 2, 7], &Device::Cpu)?;
    /// let loss = emb.forward(&ids)?.sum_all()?;
    /// let g = emb.sparse_grad(&Gradients::compute(&loss, &store)?)?;
    /// assert_eq!(g.rows(), [2, 7]);
    /// assert_eq!(g.values().to_vec2::<f32>()?, [[1., 1., 1.], [2., 2., 2.]]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sparse_grad(&self, grads: &Gradients) -> crate::error::Result<RowSparse> {
        let Some(seen) = &self.seen else {
            return Err(Error::InvalidValue {
                field: "sparse",
                value: "false".into(),
                expected: "an Embedding built with EmbeddingConfig::sparse(true)",
            });
        };
        let rows: Vec<u32> = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect();
        let dense = match grads.get(&self.name) {
            Some(g) => g.clone(),
            None => self.weight.zeros_like()?,
        };
        Ok(RowSparse::from_dense(&dense, &rows)?)
    }

    /// The table, (num_embeddings, embedding_dim).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, d) = self.weight.dims2()?;
        let layer = || format!("Embedding({n}, {d})");
        if !is_index_dtype(ids.dtype()) {
            let dtype = format!("{:?}", ids.dtype());
            return Err(Error::shape(
                layer(),
                format!("integer ids (u8, u32 or i64), not {dtype}"),
                ids.dims(),
            )
            .into_candle());
        }
        let flat = ids.flatten_all()?;
        if flat.elem_count() > 0 {
            let as_i64 = flat.to_dtype(DType::I64)?;
            let (lo, hi) = (
                as_i64.min_all()?.to_scalar::<i64>()?,
                as_i64.max_all()?.to_scalar::<i64>()?,
            );
            if lo < 0 || hi >= n as i64 {
                let e = Error::InvalidValue {
                    field: "ids",
                    value: format!("{lo}..={hi}"),
                    expected: "ids in [0, num_embeddings)",
                };
                return Err(candle_core::Error::Msg(format!("{}: {e}", layer())));
            }
        }
        if let Some(seen) = &self.seen {
            let ids = flat.to_dtype(DType::U32)?.to_vec1::<u32>()?;
            seen.lock().unwrap_or_else(|p| p.into_inner()).extend(ids);
        }
        let mut shape = ids.dims().to_vec();
        shape.push(d);
        tracked(&self.weight).index_select(&flat, 0)?.reshape(shape)
    }
}
