//! A fixed number of Taper MLP training steps (784-256-10, Adam, batch 64) on the built-in
//! MNIST subset. It prints the wall time spent in each phase (forward, loss, backward,
//! optimizer step) and is the target for `valgrind --tool=callgrind`, whose instruction
//! counts are repeatable on a noisy machine.
//!
//! Run: `cargo run --release --example profile_mlp_steps [-- STEPS]`, or
//! `valgrind --tool=callgrind target/release/examples/profile_mlp_steps 100`

#[path = "common/mlp.rs"]
mod mlp;

use taper::data::mnist;
use taper::data::{Batching, DataLoader};
use taper::nn::cross_entropy;
use taper::optim::{Adam, Optimizer};
use taper::prelude::*;

fn main() -> anyhow::Result<()> {
    // Before any tensor operation: candle's idle workers must not hold the cores.
    taper::tensor::park_idle_candle_workers();
    on_thread_pool(run)
}

fn run() -> anyhow::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    manual_seed(0);
    let train = mnist::builtin()?.train;
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = mlp::mlp(&store)?;
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
    let loader = DataLoader::new(train, Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let mut last = 0.0;
    let mut ph = [0f64; 4];
    let batches = (0..).flat_map(|e| loader.epoch(e));
    let t = std::time::Instant::now();
    for b in batches.take(steps) {
        let b = b?;
        let t0 = std::time::Instant::now();
        let logits = model.forward_t(&b.inputs, true)?;
        let t1 = std::time::Instant::now();
        let loss = cross_entropy(&logits, &b.targets)?;
        let t2 = std::time::Instant::now();
        let g = Gradients::compute(&loss, &store)?;
        let t3 = std::time::Instant::now();
        opt.step(&g)?;
        let t4 = std::time::Instant::now();
        ph[0] += (t1 - t0).as_secs_f64();
        ph[1] += (t2 - t1).as_secs_f64();
        ph[2] += (t3 - t2).as_secs_f64();
        ph[3] += (t4 - t3).as_secs_f64();
        last = loss.to_scalar::<f32>()?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "seconds: forward {:.3}, loss {:.3}, backward {:.3}, optimizer {:.3}, total {secs:.3}",
        ph[0], ph[1], ph[2], ph[3]
    );
    println!(
        "{steps} steps, last loss {last:.4}, {:.0} samples/s",
        (steps * 64) as f64 / secs
    );
    Ok(())
}
