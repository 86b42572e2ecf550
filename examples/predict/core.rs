//! Inference from a whole-model file, shared with the end-to-end tests.

use std::path::Path;

use taper::prelude::*;

/// Rebuilds the model saved at `path` (with its `.json` beside it) and classifies the first
/// `n` test digits of the built-in MNIST subset: (predicted, true) labels.
pub fn run(path: &Path, n: usize) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let (model, _store) = Sequential::load_model(path, &Device::Cpu, DType::F32)?;
    let test = mnist::builtin()?.test;
    let (images, labels) = test.get_batch(&(0..n).collect::<Vec<_>>())?;
    let predicted = model.forward_t(&images, false)?.argmax(1)?;
    Ok((predicted.to_vec1()?, labels.to_vec1()?))
}
