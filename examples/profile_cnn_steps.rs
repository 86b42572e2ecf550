//! A fixed number of Taper CNN training steps (the `mnist` example's CNN, optionally with
//! BatchNorm2d after each convolution, or with `net3x3` PyTorch's MNIST example network of
//! `bench_cnn`; Adam, batch 64) on the built-in MNIST subset. It
//! prints the wall time of each layer's forward pass and of the loss, backward pass and
//! optimizer step, and is the target for `valgrind --tool=callgrind`, whose instruction
//! counts are repeatable on a noisy machine.
//!
//! With `generic`, every layer runs on candle's generic ops (`with_generic_kernels`), as
//! before Taper had its own convolution and pooling kernels.
//!
//! Run: `cargo run --release --example profile_cnn_steps [-- STEPS [bn|net3x3] [generic]]`, or
//! `valgrind --tool=callgrind target/release/examples/profile_cnn_steps 20`

use taper::data::mnist;
use taper::data::{Batching, DataLoader};
use taper::nn::{
    cross_entropy, Activation, BatchNorm, Conv2dConfig, Dropout, Flatten, Linear, MaxPool2d,
};
use taper::optim::{Adam, Optimizer};
use taper::prelude::*;
use taper::tensor::{fast_kernels_enabled, with_generic_kernels};

fn main() -> anyhow::Result<()> {
    // Before any tensor operation: candle's idle workers must not hold the cores.
    taper::tensor::park_idle_candle_workers();
    if std::env::args().any(|a| a == "generic") {
        on_thread_pool(|| with_generic_kernels(run))
    } else {
        on_thread_pool(run)
    }
}

type Layer = (String, Box<dyn ModuleT>);

/// PyTorch's MNIST example network, as `bench_cnn`'s 3x3Net, pooling before the ReLU.
fn net3x3(store: &ParamStore) -> anyhow::Result<Vec<Layer>> {
    let conv = |cin, cout, name: &str| Conv2dConfig::new(cin, cout, (3, 3)).build(&store.sub(name));
    Ok(vec![
        ("conv0 1->32".into(), Box::new(conv(1, 32, "conv0")?)),
        ("relu0".into(), Box::new(Activation::Relu)),
        ("conv1 32->64".into(), Box::new(conv(32, 64, "conv1")?)),
        ("maxpool1".into(), Box::new(MaxPool2d::new(2))),
        ("relu1".into(), Box::new(Activation::Relu)),
        ("dropout 0.25".into(), Box::new(Dropout::new(0.25)?)),
        ("flatten".into(), Box::new(Flatten::default())),
        (
            "linear 9216->128".into(),
            Box::new(Linear::new(9216, 128, &store.sub("fc1"))?),
        ),
        ("relu2".into(), Box::new(Activation::Relu)),
        ("dropout 0.5".into(), Box::new(Dropout::new(0.5)?)),
        (
            "linear 128->10".into(),
            Box::new(Linear::new(128, 10, &store.sub("fc2"))?),
        ),
    ])
}

fn layers(store: &ParamStore, bn: bool) -> anyhow::Result<Vec<Layer>> {
    let mut v: Vec<Layer> = Vec::new();
    for (i, (cin, cout)) in [(1, 16), (16, 32)].into_iter().enumerate() {
        let conv = Conv2dConfig::new(cin, cout, (5, 5))
            .padding(2)
            .build(&store.sub(format!("conv{i}")))?;
        v.push((format!("conv{i} {cin}->{cout}"), Box::new(conv)));
        if bn {
            let b = BatchNorm::new_2d(cout, &store.sub(format!("bn{i}")))?;
            v.push((format!("batchnorm{i}"), Box::new(b)));
        }
        // Pooling before ReLU: the order in which `Sequential` runs a ReLU followed by a
        // `MaxPool2d` (the same values and gradients, with less work).
        v.push((format!("maxpool{i}"), Box::new(MaxPool2d::new(2))));
        v.push((format!("relu{i}"), Box::new(Activation::Relu)));
    }
    v.push(("flatten".into(), Box::new(Flatten::default())));
    v.push((
        "linear 1568->128".into(),
        Box::new(Linear::new(1568, 128, &store.sub("fc1"))?),
    ));
    v.push(("relu2".into(), Box::new(Activation::Relu)));
    v.push((
        "linear 128->10".into(),
        Box::new(Linear::new(128, 10, &store.sub("fc2"))?),
    ));
    Ok(v)
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let variant = args.next().unwrap_or_default();
    let bn = variant == "bn";
    println!(
        "{}, {}",
        match variant.as_str() {
            "bn" => "BatchNorm CNN",
            "net3x3" => "PyTorch's MNIST example network",
            _ => "plain CNN",
        },
        if fast_kernels_enabled() {
            "Taper's CPU kernels"
        } else {
            "candle's generic ops"
        }
    );
    manual_seed(0);
    let train = mnist::builtin()?.train;
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = if variant == "net3x3" {
        net3x3(&store)?
    } else {
        layers(&store, bn)?
    };
    let mut opt = Optimizer::new(Adam::new(1e-3), &store)?;
    let loader = DataLoader::new(train, Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let mut fwd = vec![0f64; model.len()];
    let mut ph = [0f64; 3];
    let mut last = 0.0;
    let batches = (0..).flat_map(|e| loader.epoch(e));
    let t = std::time::Instant::now();
    for b in batches.take(steps) {
        let b = b?;
        let mut x = b.inputs;
        for ((_, layer), acc) in model.iter().zip(&mut fwd) {
            let t0 = std::time::Instant::now();
            x = layer.forward_t(&x, true)?;
            *acc += t0.elapsed().as_secs_f64();
        }
        let t1 = std::time::Instant::now();
        let loss = cross_entropy(&x, &b.targets)?;
        let t2 = std::time::Instant::now();
        let g = Gradients::compute(&loss, &store)?;
        let t3 = std::time::Instant::now();
        opt.step(&g)?;
        let t4 = std::time::Instant::now();
        ph[0] += (t2 - t1).as_secs_f64();
        ph[1] += (t3 - t2).as_secs_f64();
        ph[2] += (t4 - t3).as_secs_f64();
        last = loss.to_scalar::<f32>()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let ms = |s: f64| 1e3 * s / steps as f64;
    println!("milliseconds per step:");
    for ((name, _), s) in model.iter().zip(&fwd) {
        println!("  forward {name:<18} {:>7.3}", ms(*s));
    }
    println!("  loss                       {:>7.3}", ms(ph[0]));
    println!("  backward (all layers)      {:>7.3}", ms(ph[1]));
    println!("  optimizer step             {:>7.3}", ms(ph[2]));
    println!("  total                      {:>7.3}", ms(secs));
    println!(
        "{steps} steps, last loss {last:.4}, {:.0} samples/s",
        (steps * 64) as f64 / secs
    );
    Ok(())
}
