//! burn's side of `cargo run --release --example bench_cnn`: the `mnist` example's CNN
//! (conv 1→16 5×5 pad 2, ReLU, max-pool 2, conv 16→32 5×5 pad 2, ReLU, max-pool 2,
//! linear 1568→128, ReLU, linear 128→10), trained with Adam (lr 1e-3), batch 64, on the
//! training images of an MNIST-format directory, with autodiff on the CPU backend that
//! `BURN_DEVICE` names (`ndarray` or `flex`); then inference (forward only, batch 1,000)
//! over the first 10,000 training images. `bench_cnn` runs it when it has been built.
//!
//! Usage: BURN_DEVICE=ndarray burn_cnn DIR [LIMIT] [EPOCHS]
//!   -> one JSON line per epoch: {"train_samples_per_s": ..., "infer_samples_per_s": ...}

use std::time::Instant;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;

#[derive(Module, Debug)]
struct Cnn {
    c1: Conv2d,
    c2: Conv2d,
    pool: MaxPool2d,
    relu: Relu,
    l1: Linear,
    l2: Linear,
}

impl Cnn {
    fn new(device: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .init(device)
        };
        Self {
            c1: conv(1, 16),
            c2: conv(16, 32),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            relu: Relu::new(),
            l1: LinearConfig::new(32 * 7 * 7, 128).init(device),
            l2: LinearConfig::new(128, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(self.relu.forward(self.c1.forward(x)));
        let x = self.pool.forward(self.relu.forward(self.c2.forward(x)));
        let x: Tensor<2> = x.flatten(1, 3);
        self.l2.forward(self.relu.forward(self.l1.forward(x)))
    }
}

fn batch(x: &[f32], rows: &[usize], device: &Device) -> Tensor<4> {
    let xb: Vec<f32> = rows
        .iter()
        .flat_map(|&i| x[i * 784..(i + 1) * 784].iter().copied())
        .collect();
    Tensor::<4>::from_data(TensorData::new(xb, [rows.len(), 1, 28, 28]), device)
}

fn run(x: &[f32], y: &[i64], epochs: usize) {
    let device = Device::default().autodiff();
    let mut model = Cnn::new(&device);
    let mut opt = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let n = y.len();
    let order = burn_mlp::order(n);
    let eval_rows: Vec<usize> = (0..n.min(10_000)).collect();
    for _ in 0..epochs {
        let t = Instant::now();
        let mut last = None;
        for chunk in order.chunks(64) {
            let yb: Vec<i64> = chunk.iter().map(|&i| y[i]).collect();
            let yb = Tensor::<1, Int>::from_data(TensorData::new(yb, [chunk.len()]), &device);
            let loss = loss_fn.forward(model.forward(batch(x, chunk, &device)), yb);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(1e-3, model, grads);
            last = Some(loss);
        }
        let last = last.map_or(f32::NAN, |l| l.into_scalar::<f32>());
        let train = n as f64 / t.elapsed().as_secs_f64();
        // Inference without autodiff, as a deployed model runs.
        let valid = model.valid();
        let inner = Device::default();
        let t = Instant::now();
        for rows in eval_rows.chunks(1000) {
            let _ = valid.forward(batch(x, rows, &inner)).into_data();
        }
        let infer = eval_rows.len() as f64 / t.elapsed().as_secs_f64();
        println!(
            "{{\"train_samples_per_s\": {train}, \"infer_samples_per_s\": {infer}, \"final_loss\": {last}}}"
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: burn_cnn DIR [LIMIT] [EPOCHS]");
    let limit: Option<usize> = args.get(2).and_then(|a| a.parse().ok());
    let epochs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let (x, y) = burn_mlp::train_set(dir, limit);
    run(&x, &y, epochs);
}
