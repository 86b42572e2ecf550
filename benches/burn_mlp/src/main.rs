//! burn's side of `cargo run --release --example bench_mlp`: epochs of an MLP 784-256-10 with
//! Adam (lr 1e-3), batch 64, on the training images of an MNIST-format directory, with
//! autodiff on the CPU backend that `BURN_DEVICE` names (`ndarray` or `flex`). A separate
//! workspace, so burn never enters Taper's build; `bench_mlp` runs it when it has been built.
//!
//! Usage: BURN_DEVICE=ndarray burn_mlp DIR [LIMIT] [EPOCHS]
//!   -> prints one JSON line per epoch: {"samples_per_s": ...}

use std::io::Read;
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

fn idx(path: &str) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open IDX file"))
        .read_to_end(&mut raw)
        .expect("gunzip IDX file");
    let nd = raw[3] as usize;
    raw[4 + 4 * nd..].to_vec()
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
    // A fixed pseudo-random order (the data order does not change the per-step cost).
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = 0x9E3779B97F4A7C15u64;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
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
    let images = idx(&format!("{dir}/train-images-idx3-ubyte.gz"));
    let labels = idx(&format!("{dir}/train-labels-idx1-ubyte.gz"));
    let n = limit.unwrap_or(labels.len()).min(labels.len());
    let x: Vec<f32> = images[..n * 784].iter().map(|&p| p as f32 / 255.0).collect();
    let y: Vec<i64> = labels[..n].iter().map(|&l| l as i64).collect();
    run(&x, &y, epochs);
}
