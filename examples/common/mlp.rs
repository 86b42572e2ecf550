//! The benchmarks' MLP, 784-256-10 with ReLU: PyTorch's
//! `Sequential(Flatten(), Linear(784, 256), ReLU(), Linear(256, 10))`.

use taper::nn::{Activation, Flatten, Linear, Sequential};
use taper::prelude::ParamStore;

/// The MLP, with its parameters in `store`.
pub fn mlp(store: &ParamStore) -> taper::nn::Result<Sequential> {
    Sequential::new(store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 256, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(256, 10, s))
}
