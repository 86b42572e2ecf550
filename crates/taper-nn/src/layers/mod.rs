//! Layers, one file each: candle `Module`s whose parameters live in a `ParamStore` under
//! PyTorch's names.

pub mod activation;
pub(crate) mod attention;
pub(crate) mod batch_norm;
pub(crate) mod conv;
pub(crate) mod custom;
pub(crate) mod dropout;
pub(crate) mod embedding;
pub(crate) mod flatten;
pub(crate) mod layer_norm;
pub(crate) mod linear;
pub(crate) mod model_file;
pub(crate) mod multihead_attention;
pub(crate) mod pool;
pub(crate) mod positional;
pub(crate) mod recurrent;
pub(crate) mod rms_norm;
pub(crate) mod sequential;
pub(crate) mod spec;
pub(crate) mod transformer;
