//! The GPU suite: CUDA against the CPU for every optimizer, layer and loss, checkpoints
//! across devices, and MNIST trained on the GPU. Built with `--features cuda`; each test
//! skips, printing why, where no CUDA device can be opened, so a CUDA build passes on a
//! machine without a GPU (CI compiles it there).
//!
//! Run on a GPU machine: `cargo test --release --features cuda --test gpu -- --nocapture`.
//! Status: compiled in CI; not yet run on a GPU (no GPU was lent to the sessions so far).

#![cfg(feature = "cuda")]

#[path = "../examples/mnist/core.rs"]
#[allow(dead_code)]
mod mnist_core;

use std::sync::{Mutex, MutexGuard};

use candle_core::{ModuleT, Var};
use clap::Parser;
use taper::optim::UpdatePath;
use taper::prelude::*;

/// The first CUDA device and a lock held for the rest of the test, or `None` after printing
/// why there is none. The tests share one GPU, and one of them counts NVRTC compilations,
/// which the others would change if they ran alongside.
fn gpu() -> Option<(Device, MutexGuard<'static, ()>)> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next one still runs.
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    match taper::tensor::device("cuda") {
        Ok(d) => Some((d, serial)),
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The largest |a − b| / (1 + |a|).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
        .fold(0.0, f32::max)
}

const N: usize = 1000;
const STEPS: u64 = 25;

fn grad(step: u64, dev: &Device) -> Tensor {
    let v: Vec<f32> = (0..N)
        .map(|i| ((i as f32 * 0.37 + step as f32).sin() * 0.5) + 0.01)
        .collect();
    Tensor::from_vec(v, N, dev).unwrap()
}

/// 25 steps of `rule` on `dev` along `path`: the parameter, then each state tensor, and
/// how the optimizer said it ran ([`Optimizer::execution`]).
fn run<R: Rule>(rule: &R, dev: &Device, path: UpdatePath) -> (Vec<Vec<f32>>, String) {
    let store = ParamStore::new(dev, DType::F32);
    let p0: Vec<f32> = (0..N).map(|i| (i as f32 * 0.11).cos()).collect();
    store
        .parameter("w", N, |_, _, d| Ok(Tensor::from_vec(p0.clone(), N, d)?))
        .unwrap();
    let mut opt = Optimizer::new(rule.clone(), &store)
        .unwrap()
        .update_path(path);
    for step in 1..=STEPS {
        let mut g = Gradients::default();
        g.insert("w", grad(step, dev));
        opt.step(&g).unwrap();
    }
    let mut out = vec![host(store.var("w").unwrap().as_tensor())];
    for t in &opt.state("w").unwrap().tensors {
        out.push(host(t));
    }
    (out, opt.execution().join("; "))
}

#[test]
fn every_optimizer_on_cuda_matches_the_cpu_over_25_steps() {
    let Some((dev, _serial)) = gpu() else { return };
    struct Each<'a> {
        dev: &'a Device,
        worst: f32,
        fused: usize,
    }
    impl taper::optim::Visitor for Each<'_> {
        fn visit<R: Rule>(&mut self, entry: &taper::optim::Entry, rule: R) {
            let (cpu, _) = run(&rule, &Device::Cpu, UpdatePath::Auto);
            let (fused, how) = run(&rule, self.dev, UpdatePath::Auto);
            let (generic, _) = run(&rule, self.dev, UpdatePath::Generic);
            if rule.whole_tensor(&[N]) {
                assert!(how.contains("tensor ops"), "{}: {how}", entry.key);
            } else {
                assert!(how.contains("fused CUDA kernel"), "{}: {how}", entry.key);
                self.fused += 1;
            }
            // The fused kernel and the generic tensor path on the GPU, each against the CPU.
            for (path, gpu) in [("fused", &fused), ("generic", &generic)] {
                for (k, (a, b)) in cpu.iter().zip(gpu).enumerate() {
                    let e = rel(a, b);
                    assert!(
                        e <= 1e-6,
                        "{} tensor {k}: the {path} CUDA path differs from the CPU by {e:e}",
                        entry.key
                    );
                    self.worst = self.worst.max(e);
                }
            }
        }
    }
    let mut each = Each {
        dev: &dev,
        worst: 0.0,
        fused: 0,
    };
    let before = taper::optim::compiled_kernels();
    taper::optim::visit_optimizers(&mut each);
    println!(
        "every optimizer: CUDA (fused kernel for {} configurations, and tensor ops) within {:e} \
         of the CPU after {STEPS} steps; NVRTC compiled {} kernels",
        each.fused,
        each.worst,
        taper::optim::compiled_kernels() - before
    );
    assert!(each.fused >= 15, "{}", each.fused);
}

#[test]
fn the_fused_cuda_step_compiles_once_and_allocates_nothing_per_step() {
    let Some((dev, _serial)) = gpu() else { return };
    let store = ParamStore::new(&dev, DType::F32);
    let w = store
        .parameter("w", 1 << 20, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    let mut opt = Optimizer::new(Adam::new(1e-3), &store).unwrap();
    let mut g = Gradients::default();
    g.insert("w", Tensor::ones(1 << 20, DType::F32, &dev).unwrap());
    opt.step(&g).unwrap();
    let compiled = taper::optim::compiled_kernels();
    let ptr = |t: &Tensor| {
        let (s, _) = t.storage_and_layout();
        match &*s {
            candle_core::Storage::Cuda(c) => {
                use candle_core::cuda::cudarc::driver::DevicePtr;
                let slice = c.as_cuda_slice::<f32>().unwrap();
                let (ptr, _sync) = slice.device_ptr(slice.stream());
                ptr as usize
            }
            _ => unreachable!("on the GPU"),
        }
    };
    let (p0, m0) = (ptr(&w), ptr(&opt.state("w").unwrap().tensors[0]));
    for _ in 0..10 {
        opt.step(&g).unwrap();
    }
    assert_eq!(
        taper::optim::compiled_kernels(),
        compiled,
        "steps 2..11 reuse step 1's kernel"
    );
    // In place: the parameter and its state keep their storage.
    assert_eq!(ptr(&w), p0);
    assert_eq!(ptr(&opt.state("w").unwrap().tensors[0]), m0);
}

/// A layer's forward pass (training mode).
type Forward = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;

/// Builds a layer over a store and returns its forward pass.
type Build = fn(&ParamStore) -> taper::nn::Result<Forward>;

fn boxed<M: ModuleT + 'static>(m: M) -> Forward {
    Box::new(move |x| m.forward_t(x, true))
}

/// Forward and backward of one layer on both devices: outputs, input gradients and every
/// parameter gradient agree to 1e-4 (f32; the GPU sums in another order).
fn layer_agrees(name: &str, build: Build, input: &[usize], dev: &Device) {
    manual_seed(3);
    let cpu = ParamStore::new(&Device::Cpu, DType::F32);
    let f_cpu = build(&cpu).unwrap();
    let gpu_store = cpu.to_device(dev).unwrap();
    let f_gpu = build(&gpu_store).unwrap();
    let x = randn(input, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let run =
        |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>, store: &ParamStore, d: &Device| {
            let xv = Var::from_tensor(&x.to_device(d).unwrap()).unwrap();
            let y = f(xv.as_tensor()).unwrap();
            let loss = y.sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            let mut out = vec![host(&y), host(g.get(xv.as_tensor()).unwrap())];
            for (_, v) in store.trainable() {
                out.push(host(g.get(v.as_tensor()).unwrap()));
            }
            out
        };
    let a = run(&*f_cpu, &cpu, &Device::Cpu);
    let b = run(&*f_gpu, &gpu_store, dev);
    for (k, (a, b)) in a.iter().zip(&b).enumerate() {
        let e = rel(a, b);
        assert!(e <= 1e-4, "{name}: output/gradient {k} differs by {e:e}");
    }
}

#[test]
fn every_layer_forward_and_backward_on_cuda_matches_the_cpu() {
    let Some((dev, _serial)) = gpu() else { return };
    let layers: [(&str, Build, &[usize]); 8] = [
        ("Linear", |s| Ok(boxed(Linear::new(12, 5, s)?)), &[4, 12]),
        (
            "Conv2d",
            |s| {
                let conv = Conv2dConfig::new(3, 4, (3, 3)).padding(1).stride(2);
                Ok(boxed(conv.build(s)?))
            },
            &[2, 3, 9, 9],
        ),
        ("MaxPool2d", |_| Ok(boxed(MaxPool2d::new(2))), &[2, 3, 8, 8]),
        ("AvgPool2d", |_| Ok(boxed(AvgPool2d::new(2))), &[2, 3, 8, 8]),
        (
            "BatchNorm2d",
            |s| Ok(boxed(BatchNorm::new_2d(3, s)?)),
            &[4, 3, 5, 5],
        ),
        (
            "LayerNorm",
            |s| Ok(boxed(LayerNorm::new(&[6], s)?)),
            &[4, 6],
        ),
        ("Flatten", |_| Ok(boxed(Flatten::default())), &[2, 3, 4]),
        (
            "Sequential MLP",
            |s| {
                Ok(boxed(
                    Sequential::new(s)
                        .append_with(|s| Linear::new(10, 8, s))?
                        .append(Activation::Relu)
                        .append_with(|s| Linear::new(8, 3, s))?,
                ))
            },
            &[5, 10],
        ),
    ];
    for (name, build, input) in layers {
        layer_agrees(name, build, input, &dev);
    }
    for act in [
        Activation::Relu,
        Activation::LeakyRelu(0.1),
        Activation::Elu(1.0),
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softmax(-1),
        Activation::LogSoftmax(-1),
    ] {
        let x = randn((4, 7), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let a = host(&act.forward_t(&x, true).unwrap());
        let b = host(&act.forward_t(&x.to_device(&dev).unwrap(), true).unwrap());
        assert!(rel(&a, &b) <= 1e-5, "{act:?}");
    }
    // Embedding: integer ids in, rows out.
    let cpu = ParamStore::new(&Device::Cpu, DType::F32);
    let e_cpu = Embedding::new(10, 4, &cpu).unwrap();
    let gs = cpu.to_device(&dev).unwrap();
    let e_gpu = Embedding::new(10, 4, &gs).unwrap();
    let ids = Tensor::new(&[1u32, 7, 7, 0], &Device::Cpu).unwrap();
    let a = host(&e_cpu.forward_t(&ids, true).unwrap());
    let b = host(
        &e_gpu
            .forward_t(&ids.to_device(&dev).unwrap(), true)
            .unwrap(),
    );
    assert_eq!(a, b);
}

#[test]
fn every_loss_on_cuda_matches_the_cpu() {
    let Some((dev, _serial)) = gpu() else { return };
    let x = randn((6, 5), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let y = randn((6, 5), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let p = candle_nn::ops::softmax(&y, 1).unwrap();
    let logp = candle_nn::ops::log_softmax(&x, 1).unwrap();
    let bits = y.ge(0.0).unwrap().to_dtype(DType::F32).unwrap();
    let classes = Tensor::new(&[0u32, 4, 2, 2, 1, 3], &Device::Cpu).unwrap();
    type Loss = Box<dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>>;
    let m = |r: taper::nn::Result<Tensor>| r.map_err(candle_core::Error::wrap);
    let losses: Vec<(&str, Vec<Tensor>, Loss)> = vec![
        (
            "mse",
            vec![x.clone(), y.clone()],
            Box::new(move |t| m(mse_loss(&t[0], &t[1], Reduction::Mean))),
        ),
        (
            "l1",
            vec![x.clone(), y.clone()],
            Box::new(move |t| m(l1_loss(&t[0], &t[1], Reduction::Sum))),
        ),
        (
            "smooth_l1",
            vec![x.clone(), y.clone()],
            Box::new(move |t| m(smooth_l1_loss(&t[0], &t[1], 0.5, Reduction::Mean))),
        ),
        (
            "huber",
            vec![x.clone(), y.clone()],
            Box::new(move |t| m(huber_loss(&t[0], &t[1], 0.7, Reduction::Mean))),
        ),
        (
            "cross_entropy",
            vec![x.clone(), classes.clone()],
            Box::new(move |t| m(cross_entropy(&t[0], &t[1]))),
        ),
        (
            "bce_with_logits",
            vec![x.clone(), bits.clone()],
            Box::new(move |t| {
                m(binary_cross_entropy_with_logits(
                    &t[0],
                    &t[1],
                    None,
                    None,
                    Reduction::Mean,
                ))
            }),
        ),
        (
            "kl_div",
            vec![logp.clone(), p.clone()],
            Box::new(move |t| m(kl_div(&t[0], &t[1], KlReduction::BatchMean, false))),
        ),
    ];
    for (name, inputs, f) in losses {
        let on = |d: &Device| {
            let xv = Var::from_tensor(&inputs[0].to_device(d).unwrap()).unwrap();
            let rest: Vec<Tensor> = inputs[1..]
                .iter()
                .map(|t| t.to_device(d).unwrap())
                .collect();
            let all: Vec<Tensor> = std::iter::once(xv.as_tensor().clone())
                .chain(rest)
                .collect();
            let loss = f(&all).unwrap();
            let g = loss.backward().unwrap();
            (host(&loss), host(g.get(xv.as_tensor()).unwrap()))
        };
        let (la, ga) = on(&Device::Cpu);
        let (lb, gb) = on(&dev);
        assert!(rel(&la, &lb) <= 1e-5, "{name}: loss {la:?} vs {lb:?}");
        assert!(rel(&ga, &gb) <= 1e-5, "{name}: gradient");
    }
}

#[test]
fn a_checkpoint_saved_on_the_gpu_loads_on_the_cpu_and_back() {
    let Some((dev, _serial)) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("taper-gpu-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    manual_seed(5);
    let on_gpu = ParamStore::new(&dev, DType::F32);
    let _m = Linear::new(7, 3, &on_gpu).unwrap();
    let mut opt = Optimizer::new(Adam::new(1e-2), &on_gpu).unwrap();
    let x = randn((4, 7), 0.0, 1.0, DType::F32, &dev).unwrap();
    let loss = _m
        .forward_t(&x, true)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    opt.backward_step(&loss).unwrap();
    let ckpt = Checkpoint::capture(&on_gpu, &opt, taper::train::TrainState::new(0)).unwrap();
    ckpt.save(dir.join("gpu")).unwrap();

    let on_cpu = ParamStore::new(&Device::Cpu, DType::F32);
    let _c = Linear::new(7, 3, &on_cpu).unwrap();
    let mut opt_cpu = Optimizer::new(Adam::new(1e-2), &on_cpu).unwrap();
    Checkpoint::load(dir.join("gpu"))
        .unwrap()
        .restore(&on_cpu, &mut opt_cpu, &mut [])
        .unwrap();
    for (n, t) in on_gpu.state_dict() {
        assert_eq!(host(&t), host(on_cpu.var(&n).unwrap().as_tensor()), "{n}");
    }
    assert_eq!(opt_cpu.steps(), 1);

    // And back: the CPU checkpoint onto a fresh GPU model.
    Checkpoint::capture(&on_cpu, &opt_cpu, taper::train::TrainState::new(0))
        .unwrap()
        .save(dir.join("cpu"))
        .unwrap();
    let back = ParamStore::new(&dev, DType::F32);
    let _b = Linear::new(7, 3, &back).unwrap();
    let mut opt_back = Optimizer::new(Adam::new(1e-2), &back).unwrap();
    Checkpoint::load(dir.join("cpu"))
        .unwrap()
        .restore(&back, &mut opt_back, &mut [])
        .unwrap();
    for (n, t) in on_cpu.state_dict() {
        assert_eq!(host(&t), host(back.var(&n).unwrap().as_tensor()), "{n}");
        assert!(
            back.var(&n).unwrap().device().is_cuda(),
            "{n} stays on the GPU"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mnist_trains_on_cuda_to_97_percent_in_2_epochs() {
    let Some((_dev, _serial)) = gpu() else { return };
    let out = std::env::temp_dir().join(format!("taper-gpu-mnist-{}", std::process::id()));
    let args = mnist_core::Args::parse_from([
        "mnist",
        "--device",
        "cuda",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let summary = mnist_core::run(&args).unwrap();
    println!(
        "mnist --device cuda, 2 epochs: {:.2}%",
        100.0 * summary.final_test_accuracy
    );
    assert!(
        summary.final_test_accuracy >= 0.97,
        "{}",
        summary.final_test_accuracy
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Where no GPU opens (CI: a CUDA build linked against the stub driver of
/// `scripts/cuda-env.sh link`, which answers CUDA_ERROR_NO_DEVICE as a driver without a GPU
/// does): asking for CUDA is an error that says so, the best device is the CPU, and
/// `mnist --device cuda` fails with that error instead of panicking.
#[test]
fn a_cuda_build_without_a_gpu_reports_it_and_runs_on_the_cpu() {
    if let Ok(dev) = Device::new_cuda(0) {
        println!("skipped: a GPU is present ({dev:?}); this test covers machines without one");
        return;
    }
    let err = taper::tensor::device("cuda:0").unwrap_err();
    assert!(
        matches!(err, taper::tensor::Error::CudaUnavailable { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("cuda:0") && msg.contains("no CUDA GPU") && !msg.contains("backtrace"),
        "{msg}"
    );
    assert!(taper::tensor::cuda_compiled());
    assert!(!taper::tensor::cuda_is_available());
    assert!(taper::tensor::best_device().is_cpu());

    let out = std::env::temp_dir().join(format!("taper-gpu-none-{}", std::process::id()));
    let args = mnist_core::Args::parse_from([
        "mnist",
        "--device",
        "cuda",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = mnist_core::run(&args).expect_err("no GPU to train on");
    assert!(format!("{err:#}").contains("no CUDA GPU"), "{err:#}");
    // The CPU still trains in this build.
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let w = store
        .parameter("w", 4, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    let mut opt = Optimizer::new(Adam::new(0.1), &store).unwrap();
    opt.backward_step(&w.sqr().unwrap().sum_all().unwrap())
        .unwrap();
    assert!(host(&w).iter().all(|&x| x < 1.0));
    let _ = std::fs::remove_dir_all(&out);
}
