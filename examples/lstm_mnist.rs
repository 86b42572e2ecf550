//! Sequence classification with an LSTM: each MNIST image read as a sequence of its 28 rows
//! (28 pixels each), an `LSTM(28, 128)` over them, and a linear layer on the last hidden
//! state. Trained with `Fit` and Adam, clipped at norm 1, on the built-in subset.
//!
//! ```sh
//! cargo run --release --example lstm_mnist [-- EPOCHS]
//! ```

use taper::nn::{Lstm, RecurrentConfig};
use taper::prelude::*;
use taper::tensor::candle;

/// PyTorch's
///
/// ```python
/// class RowLstm(nn.Module):
///     def __init__(self):
///         super().__init__()
///         self.lstm = nn.LSTM(28, 128, batch_first=True)
///         self.fc = nn.Linear(128, 10)
///     def forward(self, x):                     # (N, 1, 28, 28)
///         _, (h, _) = self.lstm(x.squeeze(1))   # 28 steps of 28 pixels
///         return self.fc(h[-1])
/// ```
struct RowLstm {
    lstm: Lstm,
    fc: Linear,
}

impl RowLstm {
    fn new(store: &ParamStore) -> Result<Self> {
        Ok(Self {
            lstm: RecurrentConfig::new(28, 128)
                .batch_first(true)
                .lstm(&store.sub("lstm"))?,
            fc: Linear::new(128, 10, &store.sub("fc"))?,
        })
    }
}

impl ModuleT for RowLstm {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle::Result<Tensor> {
        let rows = x.squeeze(1)?; // (N, 28 steps, 28 features)
        let (_, (h, _)) = self.lstm.forward_with(&rows, None, train)?;
        self.fc.forward(&h.get(0)?) // the last (only) layer's final hidden state
    }
}

fn main() -> Result<()> {
    let epochs: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(3), |s| s.parse())
        .map_err(|e| taper::tensor::Error::InvalidValue {
            field: "EPOCHS",
            value: format!("{e}"),
            expected: "a whole number of epochs",
        })?;
    manual_seed(0);
    let data = mnist::builtin()?;
    let norm = Normalize::new(0.1307, 0.3081)?;
    let train = DataLoader::new(data.train, Batching::MiniBatch(64))?
        .shuffle(true)
        .transform(norm);
    let test = DataLoader::new(data.test, Batching::MiniBatch(500))?.transform(norm);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = RowLstm::new(&store)?;
    println!(
        "LSTM over image rows: {} parameters ({:?})",
        store.num_parameters(),
        store.names()
    );
    let mut opt = Optimizer::new(Adam::new(2e-3), &store)?.clip(Clip::Norm {
        max_norm: 1.0,
        norm: Norm::L2,
    })?;
    let mut fit = Fit::new(&model, &store, &mut opt, |logits: &Tensor, y: &Tensor| {
        cross_entropy(logits, y)
    })
    .epochs(epochs)
    .metrics([Metric::Accuracy])
    .validation(&test);
    fit.run(&train)?;
    let scores = fit.evaluate(&test)?;
    println!(
        "test accuracy after {epochs} epochs: {:.2}%",
        100.0 * scores["accuracy"]
    );
    Ok(())
}
