//! CNN training and inference throughput, side by side in one run: the `mnist` example's CNN
//! (conv 1→16 5×5 pad 2, ReLU, max-pool 2, conv 16→32 5×5 pad 2, ReLU, max-pool 2,
//! linear 1568→128, ReLU, linear 128→10), the same network with BatchNorm2d after each
//! convolution, and PyTorch's own MNIST example network, which has none of those shapes
//! ("3x3Net": conv 1→32 3×3, ReLU, conv 32→64 3×3, ReLU, max-pool 2, dropout 0.25,
//! linear 9216→128, ReLU, dropout 0.5, linear 128→10), each trained with Adam (lr 1e-3),
//! batch 64, on shuffled epochs of an
//! MNIST-format training set (Fashion-MNIST when installed, else the built-in subset); then
//! inference, forward only with batch 1,000, over the test set. In Taper, in candle-nn (the
//! plain CNN), in PyTorch when `python3 -c 'import torch'` works
//! (`benches/torch_cnn_epoch.py`), and in burn (the plain CNN) when `benches/burn_mlp` has
//! been built. Each framework's best epoch is compared. Also reports
//! the process's peak memory after each Taper epoch, to show it does not grow.
//!
//! Run: `cargo run --release --example bench_cnn [-- EPOCHS [TRAIN_IMAGES]]`
//! (defaults: 2 epochs of 20,000 images).

use std::path::Path;
use std::time::Instant;

#[path = "common/peers.rs"]
mod peers;
#[path = "common/roofline.rs"]
mod roofline;
use peers::{best, peak_mib};

use taper::data::mnist::{self, MnistKind};
use taper::data::{Batching, DataLoader, Dataset, TensorDataset};
use taper::nn::{
    cross_entropy, Activation, BatchNorm, Conv2dConfig, Dropout, Flatten, Linear, MaxPool2d,
    Sequential,
};
use taper::optim::{Adam, Optimizer};
use taper::prelude::*;
use taper::tensor::candle_nn::{self, Optimizer as _, VarBuilder, VarMap};

/// One epoch's figures: training and inference samples/s, peak memory after it.
struct Epoch {
    train: f64,
    infer: f64,
    peak: Option<f64>,
}

/// The networks this benchmark trains.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Net {
    /// The `mnist` example's CNN.
    Cnn,
    /// The same with BatchNorm2d after each convolution.
    CnnBn,
    /// PyTorch's MNIST example network: 3×3 kernels without padding, 32 and 64 channels,
    /// dropout and a 9216-wide linear layer.
    Conv3x3,
}

impl Net {
    /// Every network, in the order they run.
    const ALL: [Net; 3] = [Net::Cnn, Net::CnnBn, Net::Conv3x3];

    /// The name in the tables.
    fn name(self) -> &'static str {
        match self {
            Net::Cnn => "CNN",
            Net::CnnBn => "CNN+BN",
            Net::Conv3x3 => "3x3Net",
        }
    }

    /// The network of a `variant` line from `torch_cnn_epoch.py`.
    fn of_torch(variant: &str) -> Option<Net> {
        match variant {
            "cnn" => Some(Net::Cnn),
            "cnn-bn" => Some(Net::CnnBn),
            "net3x3" => Some(Net::Conv3x3),
            _ => None,
        }
    }
}

/// A benchmark network in Taper.
fn taper_cnn(store: &ParamStore, net: Net) -> anyhow::Result<Sequential> {
    let mut m = Sequential::new(store);
    if net == Net::Conv3x3 {
        return Ok(m
            .append_with(|s| Conv2dConfig::new(1, 32, (3, 3)).build(s))?
            .append(Activation::Relu)
            .append_with(|s| Conv2dConfig::new(32, 64, (3, 3)).build(s))?
            .append(Activation::Relu)
            .append(MaxPool2d::new(2))
            .append(Dropout::new(0.25)?)
            .append(Flatten::default())
            .append_with(|s| Linear::new(9216, 128, s))?
            .append(Activation::Relu)
            .append(Dropout::new(0.5)?)
            .append_with(|s| Linear::new(128, 10, s))?);
    }
    for (cin, cout) in [(1, 16), (16, 32)] {
        m = m.append_with(|s| Conv2dConfig::new(cin, cout, (5, 5)).padding(2).build(s))?;
        if net == Net::CnnBn {
            m = m.append_with(|s| BatchNorm::new_2d(cout, s))?;
        }
        m = m.append(Activation::Relu).append(MaxPool2d::new(2));
    }
    Ok(m.append(Flatten::default())
        .append_with(|s| Linear::new(32 * 7 * 7, 128, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(128, 10, s))?)
}

fn taper_epochs(
    train: &TensorDataset,
    test: &TensorDataset,
    net: Net,
    epochs: u64,
) -> anyhow::Result<Vec<Epoch>> {
    manual_seed(0);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = taper_cnn(&store, net)?;
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
    let loader = DataLoader::new(train.clone(), Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let eval = DataLoader::new(test.clone(), Batching::MiniBatch(1000))?;
    let mut out = Vec::new();
    for e in 0..epochs {
        let t = Instant::now();
        for b in loader.epoch(e) {
            let b = b?;
            let loss = cross_entropy(&model.forward_t(&b.inputs, true)?, &b.targets)?;
            opt.step(&Gradients::compute(&loss, &store)?)?;
        }
        let train_rate = train.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        no_grad(|| -> anyhow::Result<()> {
            for b in eval.epoch(0) {
                model.forward_t(&b?.inputs, false)?;
            }
            Ok(())
        })?;
        out.push(Epoch {
            train: train_rate,
            infer: test.len() as f64 / t.elapsed().as_secs_f64(),
            peak: peak_mib(),
        });
    }
    Ok(out)
}

/// The plain CNN in candle-nn, with candle-nn's AdamW (weight decay 0).
fn candle_epochs(
    train: &TensorDataset,
    test: &TensorDataset,
    epochs: u64,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = candle_nn::Conv2dConfig {
        padding: 2,
        ..Default::default()
    };
    let c1 = candle_nn::conv2d(1, 16, 5, cfg, vb.pp("c1"))?;
    let c2 = candle_nn::conv2d(16, 32, 5, cfg, vb.pp("c2"))?;
    let l1 = candle_nn::linear(32 * 7 * 7, 128, vb.pp("l1"))?;
    let l2 = candle_nn::linear(128, 10, vb.pp("l2"))?;
    let forward = |x: &Tensor| -> candle_core::Result<Tensor> {
        let x = c1.forward(x)?.relu()?.max_pool2d(2)?;
        let x = c2.forward(&x)?.relu()?.max_pool2d(2)?;
        l2.forward(&l1.forward(&x.flatten_from(1)?)?.relu()?)
    };
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
    let eval = DataLoader::new(test.clone(), Batching::MiniBatch(1000))?;
    let mut rates = Vec::new();
    for e in 0..epochs {
        let t = Instant::now();
        for b in loader.epoch(e) {
            let b = b?;
            let loss = candle_nn::loss::cross_entropy(&forward(&b.inputs)?, &b.targets)?;
            opt.backward_step(&loss)?;
        }
        let train_rate = train.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for b in eval.epoch(0) {
            forward(&b?.inputs)?.detach();
        }
        rates.push((train_rate, test.len() as f64 / t.elapsed().as_secs_f64()));
    }
    Ok(rates)
}

/// Training images per epoch for burn, whose CNN is slow on the CPU.
const BURN_IMAGES: usize = 1_000;

/// One peer's best epoch: (name, network, training samples/s, inference samples/s).
type Peer = (String, &'static str, f64, f64);

/// PyTorch's best epochs for every network, when its script runs.
fn torch_epochs(dir: &Path, limit: usize, epochs: u64) -> Option<Vec<Peer>> {
    let lines = peers::torch("torch_cnn_epoch.py", dir, limit, epochs)?;
    lines
        .iter()
        .map(|v| {
            let rates = |key: &str| -> Option<f64> {
                Some(best(v[key].as_array()?.iter().filter_map(|r| r.as_f64())))
            };
            let net = Net::of_torch(v["variant"].as_str()?)?.name();
            let name = format!(
                "PyTorch {} ({} threads)",
                v["version"].as_str()?,
                v["threads"].as_u64()?
            );
            Some((
                name,
                net,
                rates("train_samples_per_s")?,
                rates("infer_samples_per_s")?,
            ))
        })
        .collect()
}

/// burn's best epochs (training, inference) of the plain CNN on one CPU backend.
fn burn_epochs(backend: &str, dir: &Path, limit: usize, epochs: u64) -> Result<Peer, String> {
    let lines = peers::burn("burn_cnn", backend, dir, limit, epochs)?;
    let rates = |key: &str| best(lines.iter().filter_map(|v| v[key].as_f64()));
    Ok((
        format!("burn 0.22 ({backend}, autodiff)"),
        "CNN",
        rates("train_samples_per_s"),
        rates("infer_samples_per_s"),
    ))
}

fn main() -> anyhow::Result<()> {
    // Before any tensor operation: candle's idle workers must not hold the cores.
    taper::tensor::park_idle_candle_workers();
    let mut args = std::env::args().skip(1);
    let epochs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let limit: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
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
    let train = data.train.take(limit.min(data.train.len()))?;
    let test = data.test;
    println!(
        "workload: the mnist example's CNN (and with BatchNorm2d), PyTorch's MNIST example \
         network (3x3Net), Adam lr 1e-3, batch 64, \
         epochs of {} training images of {}; inference: batch 1000 over {} test images",
        train.len(),
        data.source,
        test.len()
    );
    let mut rows: Vec<Peer> = Vec::new();
    let mut taper = Vec::new();
    for net in Net::ALL {
        // Taper's training loop runs on the CPU thread pool, as the mnist example's does.
        let epochs = on_thread_pool(|| taper_epochs(&train, &test, net, epochs))?;
        for (i, e) in epochs.iter().enumerate() {
            println!(
                "Taper {:<7} epoch {}: train {:>7.0} samples/s, inference {:>7.0} samples/s, peak memory {}",
                net.name(),
                i + 1,
                e.train,
                e.infer,
                e.peak.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
            );
        }
        let (t, i) = (
            best(epochs.iter().map(|e| e.train)),
            best(epochs.iter().map(|e| e.infer)),
        );
        taper.push((net.name(), t, i));
    }
    let candle = candle_epochs(&train, &test, epochs)?;
    rows.push((
        "candle-nn 0.11".into(),
        "CNN",
        best(candle.iter().map(|r| r.0)),
        best(candle.iter().map(|r| r.1)),
    ));
    let mut skipped = Vec::new();
    match &dir {
        Some(d) => {
            match torch_epochs(d, train.len(), epochs) {
                Some(t) => rows.extend(t),
                None => skipped.push("PyTorch: skipped (needs python3 with torch)".into()),
            }
            // burn's CNN trains at 80-2,000 samples/s here: it gets fewer images per epoch
            // (throughput per epoch does not depend on the epoch's length).
            for backend in ["ndarray", "flex"] {
                match burn_epochs(backend, d, train.len().min(BURN_IMAGES), epochs) {
                    Ok(r) => rows.push(r),
                    Err(why) => skipped.push(format!("burn ({backend}): skipped, {why}")),
                }
            }
        }
        None => skipped.push(
            "PyTorch and burn: skipped (they read the data from a directory: install dataset-fashion-mnist)"
                .into(),
        ),
    }
    println!(
        "best epoch of {epochs} for each framework, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "{:<34} {:<7} {:>11} {:>11} {:>13} {:>13}",
        "framework", "network", "train/s", "infer/s", "Taper/peer tr", "Taper/peer inf"
    );
    for (net, t, i) in &taper {
        println!("{:<34} {net:<7} {t:>11.0} {i:>11.0}", "Taper");
    }
    for (name, net, t, i) in &rows {
        let (tt, ti) = taper
            .iter()
            .find(|r| r.0 == *net)
            .map_or((f64::NAN, f64::NAN), |r| (r.1, r.2));
        println!(
            "{name:<34} {net:<7} {t:>11.0} {i:>11.0} {:>13.2} {:>13.2}",
            tt / t,
            ti / i
        );
    }
    for s in skipped {
        println!("{s}");
    }
    // Roofline: each network's FLOPs per sample, counted per layer, against the matmul
    // rate measured now.
    let mut table = Vec::new();
    for net in Net::ALL {
        let flops = roofline::count(
            &taper_cnn(&ParamStore::new(&Device::Cpu, DType::F32), net)?,
            &[1, 28, 28],
        )?;
        if net != Net::CnnBn {
            println!("{}:", net.name());
            for (layer, f) in &flops.per_layer {
                println!("  {layer}: {:.3} MFLOP forward per sample", f / 1e6);
            }
        }
        let net = net.name();
        let of_net = |n: &str| n == net;
        for (name, t, i) in taper
            .iter()
            .filter(|r| of_net(r.0))
            .map(|r| ("Taper".to_string(), r.1, r.2))
            .chain(
                rows.iter()
                    .filter(|r| of_net(r.1))
                    .map(|r| (r.0.clone(), r.2, r.3)),
            )
        {
            table.push((name.clone(), net.to_string(), "train", flops.train, t));
            table.push((name, net.to_string(), "inference", flops.forward, i));
        }
    }
    roofline::print_table(&table, roofline::matmul_gflops()?);
    Ok(())
}
