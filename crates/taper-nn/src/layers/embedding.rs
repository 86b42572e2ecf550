//! `Embedding`: a lookup table of vectors, PyTorch's `nn.Embedding` (weight ~ N(0, 1)).

use candle_core::{DType, Result, Tensor};
use taper_tensor::{tracked, Module, ParamStore};

use crate::init::Init;
use crate::pool::is_index_dtype;
use crate::Error;

/// Maps integer ids of any shape to vectors: output shape is ids.shape + (embedding_dim).
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `embedding_dim`, registered as `weight`.
    pub fn new(
        num_embeddings: usize,
        embedding_dim: usize,
        store: &ParamStore,
    ) -> crate::Result<Self> {
        let init = Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        let weight = store.parameter("weight", (num_embeddings, embedding_dim), init.init_fn())?;
        Ok(Self { weight })
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
        let mut shape = ids.dims().to_vec();
        shape.push(d);
        tracked(&self.weight).index_select(&flat, 0)?.reshape(shape)
    }
}
