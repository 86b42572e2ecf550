//! End-to-end training throughput on one workload, side by side in one run: an MLP
//! 784-256-10 with Adam (lr 1e-3), batch 64, one shuffled epoch of an MNIST-format training
//! set (Fashion-MNIST when installed, else the built-in subset), in Taper, in candle-nn, and in
//! PyTorch when `python3 -c 'import torch'` works. Also reports the process's peak memory
//! after each Taper epoch, to show it does not grow.
//!
//! Run: `cargo run --release --example bench_mlp [-- EPOCHS]`

use std::path::Path;
use std::time::Instant;

use taper::data::mnist::{self, MnistKind};
use taper::data::{Batching, DataLoader, Dataset, TensorDataset};
use taper::nn::{cross_entropy, Activation, Flatten, Linear, Sequential};
use taper::optim::{Adam, Optimizer};
use taper::prelude::*;
use taper::tensor::candle_nn::{self, Optimizer as _, VarBuilder, VarMap};

/// Peak resident memory of this process (VmHWM), in MiB, where /proc exists.
fn peak_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

fn taper_epochs(train: &TensorDataset, epochs: u64) -> anyhow::Result<Vec<(f64, Option<f64>)>> {
    manual_seed(0);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 256, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(256, 10, s))?;
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

fn candle_epoch(train: &TensorDataset) -> anyhow::Result<f64> {
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
    let t = Instant::now();
    for b in loader.epoch(0) {
        let b = b?;
        let x = b.inputs.flatten_from(1)?;
        let logits = l2.forward(&l1.forward(&x)?.relu()?)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &b.targets)?;
        opt.backward_step(&loss)?;
    }
    Ok(train.len() as f64 / t.elapsed().as_secs_f64())
}

fn torch_epoch(dir: Option<&Path>, limit: usize) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_mlp_epoch.py");
    let dir = dir?;
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(limit.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|&b| b == b'\n')
            .find(|l| l.starts_with(b"{"))?,
    )
    .ok()?;
    v["samples_per_s"].as_f64()
}

fn main() -> anyhow::Result<()> {
    let epochs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
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
        "workload: MLP 784-256-10, Adam lr 1e-3, batch 64, one epoch of {} ({} images)",
        data.source,
        train.len()
    );
    let taper = taper_epochs(&train, epochs)?;
    let candle = candle_epoch(&train)?;
    let torch = torch_epoch(dir.as_deref(), train.len());
    let t = taper.iter().map(|r| r.0).fold(0.0, f64::max);
    println!("{:<28} {:>12}", "framework", "samples/s");
    for (i, (sps, mem)) in taper.iter().enumerate() {
        println!(
            "Taper, epoch {:<15} {:>12.0}   peak memory {}",
            i + 1,
            sps,
            mem.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
        );
    }
    println!(
        "{:<28} {:>12.0}   Taper/candle-nn = {:.2}",
        "candle-nn 0.11",
        candle,
        t / candle
    );
    match torch {
        Some(p) => println!("{:<28} {:>12.0}   Taper/PyTorch = {:.2}", "PyTorch (CPU)", p, t / p),
        None => println!("PyTorch: skipped (needs python3 with torch, and the data in a directory: install dataset-fashion-mnist)"),
    }
    Ok(())
}
