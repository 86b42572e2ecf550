//! The documents' two Keras snippets, in Taper: the same model, loss, optimizers, data and
//! epochs, trained with `Fit`, shared with the end-to-end tests.
//!
//! ```python
//! model = Sequential([Dense(10, activation="relu"), Dense(1)])
//! model.compile(optimizer=SGD(learning_rate=0.01), loss="mse")   # or Adam(0.001)
//! x_train, y_train = np.random.rand(100, 10), np.random.rand(100, 1)
//! model.fit(x_train, y_train, epochs=10)
//! ```

use taper::prelude::*;

/// Which of the two snippets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snippet {
    /// `SGD(learning_rate=0.01)`.
    Sgd,
    /// `Adam(learning_rate=0.001)`.
    Adam,
}

/// Trains Keras's `Sequential([Dense(10, relu), Dense(1)])` with MSE on
/// `x = rand(100, 10)`, `y = rand(100, 1)` for `epochs` epochs (Keras's defaults: batches of
/// 32, shuffled), printing each epoch as Keras does unless `quiet`.
pub fn run(snippet: Snippet, epochs: u64, quiet: bool) -> anyhow::Result<History> {
    manual_seed(0);
    let dev = Device::Cpu;
    let x_train = rand_uniform((100, 10), 0.0, 1.0, DType::F32, &dev)?;
    let y_train = rand_uniform((100, 1), 0.0, 1.0, DType::F32, &dev)?;
    let store = ParamStore::new(&dev, DType::F32);
    // Keras's Dense infers its input size on first call; Taper's Linear takes it.
    let model = Sequential::new(&store)
        .append_with(|s| Linear::new(10, 10, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(10, 1, s))?;
    let mse = |out: &Tensor, y: &Tensor| mse_loss(out, y, Reduction::Mean);
    let verbosity = if quiet {
        Verbosity::Silent
    } else {
        Verbosity::EpochLines
    };
    // Keras: model.compile(optimizer=SGD(0.01) | Adam(0.001), loss="mse")
    let mut opt: Box<dyn AnyOptimizer> = match snippet {
        Snippet::Sgd => Box::new(Optimizer::new(Sgd::new(0.01), &store)?),
        Snippet::Adam => Box::new(Optimizer::new(Adam::new(0.001), &store)?),
    };
    let history = Fit::new(&model, &store, &mut *opt, mse)
        .epochs(epochs)
        .verbosity(verbosity)
        .run_tensors(&x_train, &y_train)?;
    Ok(history)
}
