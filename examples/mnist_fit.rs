//! MNIST in about 30 lines with `Fit`: an MLP trained 10 epochs on the built-in subset, the
//! test set as validation data, Keras-style epoch lines. The `mnist` example is the same
//! training written as the explicit loop, with every option.
//!
//! Run: `cargo run --release --example mnist_fit`

use taper::prelude::*;

fn main() -> anyhow::Result<()> {
    manual_seed(0);
    let data = mnist::builtin()?; // 8,000 train / 2,000 test digits, shipped with Taper
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 256, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(256, 10, s))?;
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
    let norm = Normalize::new(0.1307, 0.3081)?; // MNIST's mean and standard deviation
    let train = DataLoader::new(data.train, Batching::MiniBatch(64))?
        .shuffle(true)
        .transform(norm);
    let test = DataLoader::new(data.test, Batching::MiniBatch(1000))?.transform(norm);
    let loss = |logits: &Tensor, labels: &Tensor| cross_entropy(logits, labels);
    let history = Fit::new(&model, &store, &mut opt, loss)
        .epochs(10)
        .metrics([Metric::Accuracy])
        .validation(&test)
        .run(&train)?;
    let accuracy = history.get("val_accuracy");
    println!("test accuracy {:.2}%", 100.0 * accuracy[accuracy.len() - 1]);
    store.save("mnist_mlp.safetensors")?;
    Ok(())
}
