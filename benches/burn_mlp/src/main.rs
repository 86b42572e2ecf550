//! burn's side of `cargo run --release --example bench_mlp`: epochs of an MLP 784-256-10 with
//! Adam (lr 1e-3), batch 64, on the training images of an MNIST-format directory, with
//! autodiff on the CPU backend that `BURN_DEVICE` names (`ndarray` or `flex`). A separate
//! workspace, so burn never enters Taper's build; `bench_mlp` runs it when it has been built.
//!
//! Usage: BURN_DEVICE=ndarray burn_mlp DIR [LIMIT] [EPOCHS]
//!   -> prints one JSON line per epoch: {"samples_per_s": ...}

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;

#[derive(Module, Debug)]
struct Mlp {
    l1: Linear,
    relu: Relu,
    l2: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.l2.forward(self.relu.forward(self.l1.forward(x)))
    }
}

fn run(x: &[f32], y: &[i64], epochs: usize) {
    let device = Device::default().autodiff();
    let mut model = Mlp {
        l1: LinearConfig::new(784, 256).init(&device),
        relu: Relu::new(),
        l2: LinearConfig::new(256, 10).init(&device),
    };
    let mut opt = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let n = y.len();
    let order = burn_mlp::order(n);
    for _ in 0..epochs {
        let t = Instant::now();
        let mut last = None;
        for chunk in order.chunks(64) {
            let xb: Vec<f32> = chunk.iter().flat_map(|&i| x[i * 784..(i + 1) * 784].iter().copied()).collect();
            let yb: Vec<i64> = chunk.iter().map(|&i| y[i]).collect();
            let xb = Tensor::<2>::from_data(TensorData::new(xb, [chunk.len(), 784]), &device);
            let yb = Tensor::<1, Int>::from_data(TensorData::new(yb, [chunk.len()]), &device);
            let loss = loss_fn.forward(model.forward(xb), yb);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(1e-3, model, grads);
            last = Some(loss);
        }
        let last = last.map_or(f32::NAN, |l| l.into_scalar::<f32>());
        let secs = t.elapsed().as_secs_f64();
        println!("{{\"samples_per_s\": {}, \"seconds\": {secs}, \"final_loss\": {last}}}", n as f64 / secs);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: burn_mlp DIR [LIMIT] [EPOCHS]");
    let limit: Option<usize> = args.get(2).and_then(|a| a.parse().ok());
    let epochs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let (x, y) = burn_mlp::train_set(dir, limit);
    run(&x, &y, epochs);
}
