//! Criterion benchmarks of one optimizer step over 10M f32 parameters (8 tensors of 1.25M),
//! for every Taper optimizer, beside candle-nn's AdamW and SGD on the same parameters and
//! gradients, and a streaming kernel (`a += b` over the same number of elements) as the
//! bandwidth yardstick.
//!
//! Each benchmark declares the bytes it must move (reads and writes of the parameter, its
//! gradient and its state tensors), so criterion's throughput column is the achieved memory
//! bandwidth: divide an optimizer's GB/s by the streaming kernel's to get the fraction of the
//! machine's bandwidth it reaches. candle-nn's rows declare the same bytes as Taper's form of
//! the same algorithm, so their GB/s compare directly.
//!
//! Run: `cargo bench -p taper-optim --bench optimizers` (`TAPER_BENCH_PARAMS=N` for another
//! size; criterion's filters pick rows, e.g. `-- Adam`).

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use taper_optim::*;
use taper_tensor::candle_nn::{self, Optimizer as _};
use taper_tensor::{manual_seed, randn, DType, Device, Gradients, ParamStore, Tensor, Var};

const PARTS: usize = 8;

fn params() -> usize {
    std::env::var("TAPER_BENCH_PARAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

/// 8 parameters of n/8 elements and their gradients, from a fixed seed.
fn store(n: usize) -> (ParamStore, Gradients) {
    manual_seed(0);
    let s = ParamStore::new(&Device::Cpu, DType::F32);
    let mut g = Gradients::default();
    for i in 0..PARTS {
        let name = format!("p{i}");
        s.parameter(&name, n / PARTS, |sh, dt, d| randn(sh, 0.0, 1.0, dt, d))
            .expect("parameter");
        let gi = randn(n / PARTS, 0.0, 1.0, DType::F32, &Device::Cpu).expect("gradient");
        g.insert(&name, gi);
    }
    (s, g)
}

/// Bytes one step must move: read p, g and k state tensors; write p and k state tensors.
fn bytes(n: usize, k: usize) -> u64 {
    (4 * n * (2 + k + 1 + k)) as u64
}

fn bench_rule<R: Rule>(c: &mut Criterion, name: &str, rule: R) {
    let n = params();
    let (s, g) = store(n);
    let k = rule.state_names().len();
    let mut opt = Optimizer::new(rule, &s).expect("optimizer");
    opt.step(&g).expect("first step allocates the state");
    let mut group = c.benchmark_group("optimizer step, 10M f32 parameters");
    group.throughput(Throughput::Bytes(bytes(n, k)));
    group.sample_size(20);
    group.bench_function(format!("Taper {name}"), |b| {
        b.iter(|| opt.step(&g).expect("step"))
    });
    group.finish();
}

/// Every registered configuration (`visit_optimizers`).
fn taper(c: &mut Criterion) {
    struct Rows<'a>(&'a mut Criterion);
    impl Visitor for Rows<'_> {
        fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
            bench_rule(self.0, entry.key, rule);
        }
    }
    visit_optimizers(&mut Rows(c));
}

/// candle-nn's AdamW and SGD on the same parameters and gradients.
fn candle(c: &mut Criterion) {
    let n = params();
    let (s, g) = store(n);
    let vars: Vec<Var> = s.trainable().into_iter().map(|(_, v)| v).collect();
    // A GradStore holding exactly g, as the gradient of Σ p·g (its constructor is private).
    let mut dot = Tensor::zeros((), DType::F32, &Device::Cpu).expect("zero");
    for (name, v) in s.trainable() {
        let term = v.as_tensor().mul(g.get(&name).expect("gradient"));
        dot = (dot + term.and_then(|t| t.sum_all()).expect("dot")).expect("sum");
    }
    let grads = dot.backward().expect("backward");
    let mut group = c.benchmark_group("optimizer step, 10M f32 parameters");
    group.sample_size(10);
    let params = candle_nn::ParamsAdamW {
        lr: 1e-3,
        ..Default::default()
    };
    let mut adamw = candle_nn::AdamW::new(vars.clone(), params).expect("AdamW");
    group.throughput(Throughput::Bytes(bytes(n, 2)));
    group.bench_function("candle-nn AdamW", |b| {
        b.iter(|| adamw.step(&grads).expect("step"))
    });
    let mut sgd = candle_nn::SGD::new(vars, 1e-3).expect("SGD");
    group.throughput(Throughput::Bytes(bytes(n, 0)));
    group.bench_function("candle-nn SGD", |b| {
        b.iter(|| sgd.step(&grads).expect("step"))
    });
    group.finish();
}

/// `a += b` on all threads over n elements: 12 bytes per element, an optimizer's pattern.
fn stream(c: &mut Criterion) {
    const CHUNK: usize = 1 << 15;
    let n = params();
    let b = vec![1.0f32; n];
    let mut group = c.benchmark_group("optimizer step, 10M f32 parameters");
    group.throughput(Throughput::Bytes(12 * n as u64));
    group.sample_size(20);
    let mut a = vec![0.0f32; n];
    group.bench_function("streaming a += b (bandwidth yardstick)", |bench| {
        bench.iter(|| {
            a.par_chunks_mut(CHUNK)
                .zip(b.par_chunks(CHUNK))
                .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b))
        })
    });
    group.finish();
}

criterion_group!(benches, stream, taper, candle);
criterion_main!(benches);
