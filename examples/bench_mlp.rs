//! End-to-end training throughput on one workload, side by side in one run: an MLP
//! 784-256-10 with Adam (lr 1e-3), batch 64, shuffled epochs of an MNIST-format training set
//! (Fashion-MNIST when installed, else the built-in subset), in Taper, in candle-nn, in
//! PyTorch (default and fused Adam) when `python3 -c 'import torch'` works, and in burn when
//! `benches/burn_mlp` has been built. Each framework's best epoch is compared. Also reports
//! the process's peak memory after each Taper epoch, to show it does not grow.
//!
//! Run: `cargo run --release --example bench_mlp [-- EPOCHS]`

use std::path::Path;
use std::time::Instant;

#[path = "common/mlp.rs"]
mod mlp;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/roofline.rs"]
#[allow(dead_code)] // the inference figures are bench_cnn's
mod roofline;
use peers::{best, peak_mib};

use taper::data::mnist::{self, MnistKind};
use taper::data::{Batching, DataLoader, Dataset, TensorDataset};
use taper::nn::cross_entropy;
use taper::optim::{Adam, Optimizer};
use taper::prelude::*;
use taper::tensor::candle_nn::{self, Optimizer as _, VarBuilder, VarMap};

fn taper_epochs(train: &TensorDataset, epochs: u64) -> anyhow::Result<Vec<(f64, Option<f64>)>> {
    manual_seed(0);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = mlp::mlp(&store)?;
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
    let loader = DataLoader::new(train.clone(), Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let mut out = Vec::new();
    for e in 0..epochs {
        let t = Instant::now();
        for b in loader.epoch(e) {
            let b = b?;
            let loss = cross_entropy(&model.forward_t(&b.inputs, true)?, &b.targets)?;
            opt.step(&Gradients::compute(&loss, &store)?)?;
        }
        out.push((train.len() as f64 / t.elapsed().as_secs_f64(), peak_mib()));
    }
    Ok(out)
}

fn candle_epochs(train: &TensorDataset, epochs: u64) -> anyhow::Result<Vec<f64>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let l1 = candle_nn::linear(784, 256, vb.pp("0"))?;
    let l2 = candle_nn::linear(256, 10, vb.pp("2"))?;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let loader = DataLoader::new(train.clone(), Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let mut rates = Vec::new();
    for e in 0..epochs {
        let t = Instant::now();
        for b in loader.epoch(e) {
            let b = b?;
            let x = b.inputs.flatten_from(1)?;
            let logits = l2.forward(&l1.forward(&x)?.relu()?)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &b.targets)?;
            opt.backward_step(&loss)?;
        }
        rates.push(train.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(rates)
}

/// The best epoch of each PyTorch variant (default foreach Adam, fused Adam).
fn torch_epochs(dir: &Path, limit: usize, epochs: u64) -> Option<Vec<(String, f64)>> {
    let lines = peers::torch("torch_mlp_epoch.py", dir, limit, epochs)?;
    lines
        .iter()
        .map(|v| {
            let name = format!(
                "PyTorch {} ({} Adam)",
                v["version"].as_str()?,
                v["variant"].as_str()?
            );
            let rates = v["samples_per_s"].as_array()?.iter();
            Some((name, best(rates.filter_map(|r| r.as_f64()))))
        })
        .collect()
}

/// burn's best epoch on one CPU backend (`ndarray` or `flex`).
fn burn_epochs(backend: &str, dir: &Path, limit: usize, epochs: u64) -> Result<f64, String> {
    let lines = peers::burn("burn_mlp", backend, dir, limit, epochs)?;
    Ok(best(
        lines.iter().filter_map(|v| v["samples_per_s"].as_f64()),
    ))
}

fn main() -> anyhow::Result<()> {
    // Before any tensor operation: candle's idle workers must not hold the cores.
    taper::tensor::park_idle_candle_workers();
    let epochs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let (data, dir) = match mnist::load(MnistKind::Fashion, None) {
        Ok(d) => {
            let dir = match &d.source {
                mnist::DataSource::Dir(p) => Some(p.clone()),
                mnist::DataSource::BuiltIn => None,
            };
            (d, dir)
        }
        Err(_) => (mnist::builtin()?, None),
    };
    let train = data.train;
    println!(
        "workload: MLP 784-256-10, Adam lr 1e-3, batch 64, epochs of {} ({} images)",
        data.source,
        train.len()
    );
    // Taper's training loop runs on the CPU thread pool, as the mnist example's does.
    let taper = on_thread_pool(|| taper_epochs(&train, epochs))?;
    let candle = candle_epochs(&train, epochs)?;
    let mut peers = vec![("candle-nn 0.11".to_string(), best(candle.into_iter()))];
    let mut skipped = Vec::new();
    match &dir {
        Some(d) => {
            match torch_epochs(d, train.len(), epochs) {
                Some(t) => peers.extend(t),
                None => skipped.push("PyTorch: skipped (needs python3 with torch)".to_string()),
            }
            for backend in ["ndarray", "flex"] {
                match burn_epochs(backend, d, train.len(), epochs) {
                    Ok(r) => peers.push((format!("burn 0.22 ({backend}, autodiff)"), r)),
                    Err(why) => skipped.push(format!("burn ({backend}): skipped, {why}")),
                }
            }
        }
        None => skipped.push(
            "PyTorch and burn: skipped (they read the data from a directory: install dataset-fashion-mnist)"
                .into(),
        ),
    }
    let t = best(taper.iter().map(|r| r.0));
    println!(
        "best epoch of {epochs} for each framework, {} threads",
        rayon::current_num_threads()
    );
    println!("{:<36} {:>12}", "framework", "samples/s");
    for (i, (sps, mem)) in taper.iter().enumerate() {
        println!(
            "{:<36} {:>12.0}   peak memory {}",
            format!("Taper, epoch {}", i + 1),
            sps,
            mem.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
        );
    }
    for (name, r) in &peers {
        println!("{name:<36} {r:>12.0}   Taper/peer = {:.2}", t / r);
    }
    let top = peers.iter().map(|p| p.1).fold(0.0, f64::max);
    println!("Taper / best peer = {:.2}", t / top);
    for s in skipped {
        println!("{s}");
    }
    // Roofline: the MLP's FLOPs per training sample against the matmul rate measured now.
    let flops = roofline::count(
        &mlp::mlp(&ParamStore::new(&Device::Cpu, DType::F32))?,
        &[1, 28, 28],
    )?;
    for (layer, f) in &flops.per_layer {
        println!("  {layer}: {:.3} MFLOP forward per sample", f / 1e6);
    }
    let mut rows = vec![(
        "Taper".to_string(),
        "MLP".to_string(),
        "train",
        flops.train,
        t,
    )];
    rows.extend(
        peers
            .iter()
            .map(|(n, r)| (n.clone(), "MLP".to_string(), "train", flops.train, *r)),
    );
    roofline::print_table(&rows, roofline::matmul_gflops()?);
    Ok(())
}
