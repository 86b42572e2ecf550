//! The GPU benchmark, side by side in one run:
//!
//! 1. **The fused Adam step** over 10M, 30M and 100M float32 parameters, as a fraction of the
//!    device's copy bandwidth measured in the same run (a device-to-device copy of the same
//!    size). Adam reads θ, g, m and v and writes θ, m and v: 28 bytes per parameter, against
//!    the copy's 8. Beside it: Taper's generic tensor path (candle ops) and PyTorch's
//!    `torch.optim.Adam(fused=True)` and `copy_` on the same GPU, when `python3` has torch
//!    with CUDA.
//! 2. **An MLP training step** (784-256-10, Adam lr 1e-3, batch 64, the built-in MNIST
//!    subset, each batch copied to the GPU) against PyTorch CUDA doing the same.
//!
//! Run on a GPU: `cargo run --release --features cuda --example bench_gpu`, or the packed
//! binary (`scripts/pack-gpu.sh` prints the command). `--device cpu --sizes 1` runs the same
//! code on the CPU, to check it anywhere. Paths to `benches/` and the data are found from the
//! working directory (the repository root), so a binary built elsewhere runs.

use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;

#[path = "common/mlp.rs"]
mod mlp;
#[path = "common/peers.rs"]
#[allow(dead_code)]
mod peers;

use taper::data::mnist;
use taper::data::{Batching, DataLoader, Dataset};
use taper::nn::cross_entropy;
use taper::optim::{Adam, Optimizer, UpdatePath};
use taper::prelude::*;

#[derive(Parser, Debug)]
#[command(about = "Fused optimizer step and MLP training on the GPU, against a copy and PyTorch")]
struct Args {
    /// `cuda`, `cuda:N`, or `cpu` (to check the benchmark itself).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Parameter counts of the optimizer-step benchmark, in millions.
    #[arg(long, value_delimiter = ',', default_value = "10,30,100")]
    sizes: Vec<usize>,
    /// Timed steps per measurement (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// MLP epochs over the built-in subset (the best one counts).
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Skip PyTorch.
    #[arg(long)]
    no_torch: bool,
}

/// The repository root: the working directory when it holds `benches/`, else where this
/// binary was built.
fn root() -> PathBuf {
    match std::env::current_dir() {
        Ok(d) if d.join("benches/torch_gpu.py").exists() => d,
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// Seconds per call of `f`, over `steps` calls after 3 warm-up calls, with the device
/// synchronized before the clock starts and stops.
fn time_per_call(
    dev: &Device,
    steps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    dev.synchronize()?;
    let t = Instant::now();
    for _ in 0..steps {
        f()?;
    }
    dev.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / steps as f64)
}

/// Seconds per Adam step over `n` parameters along `path`, and how the optimizer ran.
fn adam_step(
    dev: &Device,
    n: usize,
    path: UpdatePath,
    steps: usize,
) -> anyhow::Result<(f64, String)> {
    let store = ParamStore::new(dev, DType::F32);
    store.parameter("w", n, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
    let mut grads = Gradients::default();
    grads.insert("w", Tensor::full(0.01f32, n, dev)?);
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?.update_path(path);
    let t = time_per_call(dev, steps, || {
        opt.step(&grads)?;
        Ok(())
    })?;
    Ok((t, opt.execution().join("; ")))
}

/// Seconds per device-to-device copy of `n` float32 values into an existing tensor (no
/// allocation, as PyTorch's `y.copy_(x)`).
fn copy(dev: &Device, n: usize, steps: usize) -> anyhow::Result<f64> {
    let x = Tensor::ones(n, DType::F32, dev)?;
    let y = Tensor::zeros(n, DType::F32, dev)?;
    time_per_call(dev, steps, || {
        y.slice_set(&x, 0, 0)?;
        Ok(())
    })
}

/// Samples per second of the best of `epochs` MLP epochs on `dev`.
fn mlp(dev: &Device, epochs: u64) -> anyhow::Result<f64> {
    manual_seed(0);
    let train = mnist::builtin()?.train;
    let store = ParamStore::new(dev, DType::F32);
    let model = mlp::mlp(&store)?;
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
    let loader = DataLoader::new(train.clone(), Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let mut best: f64 = 0.0;
    for e in 0..epochs {
        dev.synchronize()?;
        let t = Instant::now();
        for b in loader.epoch(e) {
            let b = b?;
            let (x, y) = (b.inputs.to_device(dev)?, b.targets.to_device(dev)?);
            let loss = cross_entropy(&model.forward_t(&x, true)?, &y)?;
            opt.backward_step(&loss)?;
        }
        dev.synchronize()?;
        best = best.max(train.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// `benches/torch_gpu.py ARGS…`'s JSON lines on `dev` (a CUDA GPU, or the CPU when
/// checking), or why there are none.
fn torch(root: &FsPath, dev: &Device, args: &[String]) -> Result<Vec<serde_json::Value>, String> {
    peers::json_lines(
        Command::new("python3")
            .env(
                "TAPER_BENCH_DEVICE",
                if dev.is_cuda() { "cuda" } else { "cpu" },
            )
            .arg(root.join("benches/torch_gpu.py"))
            .args(args),
    )
    .ok_or_else(|| "skipped (needs python3 with torch and a CUDA GPU)".to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dev = taper::tensor::device(&args.device)?;
    let root = root();
    println!("device: {} ({dev:?})", args.device);

    println!("\n# fused Adam step, float32: 28 bytes per parameter; copy: 8 bytes per value");
    println!(
        "{:>6} {:>12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "params",
        "copy ms",
        "copy GB/s",
        "fused ms",
        "fused GB/s",
        "of copy",
        "generic ms",
        "fused gain"
    );
    for &m in &args.sizes {
        let n = m * 1_000_000;
        let c = copy(&dev, n, args.steps)?;
        let (f, how) = adam_step(&dev, n, UpdatePath::Auto, args.steps)?;
        let (g, _) = adam_step(&dev, n, UpdatePath::Generic, args.steps)?;
        let (bw_c, bw_f) = (8.0 * n as f64 / c / 1e9, 28.0 * n as f64 / f / 1e9);
        println!(
            "{:>5}M {:>12.3} {:>10.0} {:>12.3} {:>10.0} {:>11.0}% {:>10.3} {:>11.2}x",
            m,
            c * 1e3,
            bw_c,
            f * 1e3,
            bw_f,
            100.0 * bw_f / bw_c,
            g * 1e3,
            g / f
        );
        println!("        ({how})");
    }
    if !args.no_torch {
        let sizes = args.sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match torch(
            &root,
            &dev,
            &["adam".into(), sizes.join(","), args.steps.to_string()],
        ) {
            Ok(lines) => {
                for v in lines {
                    let (n, c, f) = (
                        v["millions"].as_u64().unwrap_or(0),
                        v["copy_s"].as_f64().unwrap_or(f64::NAN),
                        v["fused_adam_s"].as_f64().unwrap_or(f64::NAN),
                    );
                    let (bw_c, bw_f) = (
                        8.0 * n as f64 * 1e6 / c / 1e9,
                        28.0 * n as f64 * 1e6 / f / 1e9,
                    );
                    println!(
                        "{:>5}M PyTorch {}: copy_ {:.3} ms ({bw_c:.0} GB/s), fused Adam {:.3} ms ({bw_f:.0} GB/s, {:.0}% of its copy)",
                        n,
                        v["version"].as_str().unwrap_or("?"),
                        c * 1e3,
                        f * 1e3,
                        100.0 * bw_f / bw_c
                    );
                }
            }
            Err(why) => println!("PyTorch: {why}"),
        }
    }

    println!("\n# MLP 784-256-10, Adam, batch 64, built-in MNIST subset (8,000 images)");
    let taper = mlp(&dev, args.epochs)?;
    println!(
        "Taper:   {taper:>10.0} samples/s ({:.3} ms per step)",
        64e3 / taper
    );
    if !args.no_torch {
        let data = root.join("crates/taper-data/data/mnist-10k");
        match torch(
            &root,
            &dev,
            &[
                "mlp".into(),
                data.display().to_string(),
                args.epochs.to_string(),
            ],
        ) {
            Ok(lines) => {
                for v in lines {
                    let r = v["samples_per_s"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "PyTorch {} ({} Adam): {r:>10.0} samples/s ({:.3} ms per step); Taper/PyTorch = {:.2}",
                        v["version"].as_str().unwrap_or("?"),
                        v["variant"].as_str().unwrap_or("?"),
                        64e3 / r,
                        taper / r
                    );
                }
            }
            Err(why) => println!("PyTorch: {why}"),
        }
    }
    Ok(())
}
