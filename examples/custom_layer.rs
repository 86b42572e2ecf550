//! A layer of your own, the way PyTorch users write an `nn.Module`: a residual block with
//! two sub-layers and a parameter of its own, used inside a `Sequential`, trained with
//! `Fit`, checkpointed and resumed, saved as a model file and loaded back with no code for
//! the architecture.
//!
//! ```sh
//! cargo run --release --example custom_layer
//! ```

use serde::{Deserialize, Serialize};
use taper::prelude::*;
use taper::tensor::candle;

/// y = x + α·fc2(relu(fc1(x))): PyTorch's
///
/// ```python
/// class Residual(nn.Module):
///     def __init__(self, dim, hidden):
///         super().__init__()
///         self.fc1 = nn.Linear(dim, hidden)
///         self.fc2 = nn.Linear(hidden, dim)
///         self.alpha = nn.Parameter(torch.ones(1))
///     def forward(self, x):
///         return x + self.alpha * self.fc2(F.relu(self.fc1(x)))
/// ```
///
/// with the same state dict names: `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`,
/// `alpha` (under the block's own prefix in a model).
struct Residual {
    fc1: Linear,
    fc2: Linear,
    alpha: Tensor,
}

impl Residual {
    /// Each sub-layer under its own name (`store.sub("fc1")`), as PyTorch names submodules;
    /// the block's own parameter directly in its view.
    fn new(dim: usize, hidden: usize, store: &ParamStore) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(dim, hidden, &store.sub("fc1"))?,
            fc2: Linear::new(hidden, dim, &store.sub("fc2"))?,
            alpha: store.parameter("alpha", 1, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?,
        })
    }
}

impl Module for Residual {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        // Taper's `relu` (the prelude's), not candle's `x.relu()`: candle's has gradient 1
        // at x = 0, PyTorch's has 0. `tracked` reads the parameter so that evaluation under
        // `no_grad` builds no graph.
        let h = relu(&self.fc1.forward(x)?)?;
        let y = self.fc2.forward(&h)?.broadcast_mul(&tracked(&self.alpha))?;
        x + y
    }
}

/// What rebuilds the block in a model file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResidualConfig {
    dim: usize,
    hidden: usize,
}

impl CustomLayer for Residual {
    const KIND: &'static str = "Residual";
    type Config = ResidualConfig;

    fn config(&self) -> ResidualConfig {
        ResidualConfig {
            dim: self.fc1.in_features(),
            hidden: self.fc1.out_features(),
        }
    }

    fn from_config(
        c: ResidualConfig,
        store: &ParamStore,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Residual::new(c.dim, c.hidden, store)?)
    }
}

fn model(store: &ParamStore) -> Result<Sequential> {
    Ok(Sequential::new(store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 64, s))?
        .append(Activation::Relu)
        .append_with(|s| Residual::new(64, 128, s))?
        .append_with(|s| Linear::new(64, 10, s))?)
}

fn main() -> Result<()> {
    // Once, before building or loading a model that holds the block.
    register_layer::<Residual>()?;
    manual_seed(0);
    let data = mnist::builtin()?;
    let norm = Normalize::new(0.1307, 0.3081)?;
    let train = DataLoader::new(data.train, Batching::MiniBatch(64))?
        .shuffle(true)
        .transform(norm);
    let test = DataLoader::new(data.test, Batching::MiniBatch(1000))?.transform(norm);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let net = model(&store)?;
    print!("{}", net.summary(&[1, 28, 28])?);

    let dir = std::env::temp_dir().join(format!("taper-custom-layer-{}", std::process::id()));
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
    let loss = |logits: &Tensor, labels: &Tensor| cross_entropy(logits, labels);
    // Two epochs, checkpointed after each; a second `Fit` (as a new process would) resumes
    // from the checkpoint and trains the third.
    Fit::new(&net, &store, &mut opt, loss)
        .epochs(2)
        .metrics([Metric::Accuracy])
        .validation(&test)
        .checkpoint(dir.join("ckpt"), true)
        .run(&train)?;
    let mut fit = Fit::new(&net, &store, &mut opt, loss)
        .epochs(3)
        .metrics([Metric::Accuracy])
        .validation(&test)
        .checkpoint(dir.join("ckpt"), true);
    let history = fit.run(&train)?;
    let scores = fit.evaluate(&test)?;
    println!(
        "after {} epochs (2 trained, checkpointed, resumed for 1): test accuracy {:.2}%",
        history.epochs.len(),
        100.0 * scores["accuracy"]
    );

    // A model file: the weights under PyTorch's names, and the architecture, the custom
    // block included, in model.json.
    net.save_model(dir.join("model.safetensors"))?;
    let (loaded, _) =
        Sequential::load_model(dir.join("model.safetensors"), &Device::Cpu, DType::F32)?;
    let x = data_batch(&test)?;
    let same = no_grad(|| -> Result<bool> {
        let a = net.forward_t(&x, false)?.argmax(1)?.to_vec1::<u32>()?;
        let b = loaded.forward_t(&x, false)?.argmax(1)?.to_vec1::<u32>()?;
        Ok(a == b)
    })?;
    println!("the model loaded from its file predicts the same: {same}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The first test batch's inputs.
fn data_batch<D: Dataset>(loader: &DataLoader<D>) -> Result<Tensor> {
    Ok(loader.epoch(0).next().expect("a batch")?.inputs)
}
