//! Optimizer-step throughput: every registered Taper optimizer's step over 10M f32
//! parameters (8 tensors; the fused CPU loop where the rule is element-wise), against the
//! machine's streaming bandwidth (a copy/add kernel measured in the same run), candle-nn's
//! AdamW and SGD, and PyTorch's fused and foreach Adam when `python3 -c 'import torch'`
//! works; then Muon on a 1024×1024 parameter: its Newton–Schulz iteration against the
//! matmul rate of the gemm `Linear` uses, and PyTorch's Muon step. Prints medians and
//! ratios; machines are noisy, so compare only within one invocation.
//!
//! Run: `cargo run --release --example bench_optimizers [-- N_PARAMS REPS]`

use std::time::Instant;

use rayon::prelude::*;
use taper::optim::*;
use taper::prelude::*;
use taper::tensor::candle_nn::{self, Optimizer as _};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// The machine's streaming bandwidth on all threads, in GB/s: the better of `a = b + c`
/// (12 bytes counted per element) and the in-place `a += b` (12 bytes, the access pattern
/// of an optimizer step, with no write-allocate traffic).
fn stream_gbs(n: usize, reps: usize) -> f64 {
    const C: usize = 1 << 15;
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let add = time_ms(reps, || {
        a.par_chunks_mut(C)
            .zip(b.par_chunks(C))
            .zip(c.par_chunks(C))
            .for_each(|((a, b), c)| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + c;
                }
            })
    });
    let inplace = time_ms(reps, || {
        a.par_chunks_mut(C).zip(b.par_chunks(C)).for_each(|(a, b)| {
            for (a, b) in a.iter_mut().zip(b) {
                *a += b;
            }
        })
    });
    std::hint::black_box(&a);
    12.0 * n as f64 / (add.min(inplace) * 1e6)
}

fn store(n: usize, parts: usize) -> (ParamStore, Gradients) {
    manual_seed(0);
    let s = ParamStore::new(&Device::Cpu, DType::F32);
    let mut g = Gradients::default();
    for i in 0..parts {
        let name = format!("p{i}");
        s.parameter(&name, n / parts, |sh, dt, d| randn(sh, 0.0, 1.0, dt, d))
            .unwrap();
        g.insert(
            &name,
            randn(n / parts, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap(),
        );
    }
    (s, g)
}

/// Median step time of `rule` and bytes moved per element (reads + writes of p, g, state;
/// plus the read-only norm pass of a rule that needs per-tensor norms).
fn taper_step<R: Rule>(rule: R, n: usize, reps: usize) -> (f64, usize) {
    let (s, g) = store(n, 8);
    let k = rule.slots_for(&[n / 8]).len();
    let norm_pass = if rule.needs_norms() { 2 + k } else { 0 };
    let mut opt = Optimizer::new(rule, &s).unwrap();
    let ms = time_ms(reps, || {
        opt.step(&g).unwrap();
    });
    // read p, g, k states; write p, k states
    (ms, 4 * (2 + k + 1 + k + norm_pass))
}

/// Muon on a `dim` × `dim` parameter: its whole step and the Newton–Schulz iteration alone,
/// in bfloat16 (PyTorch's) and float32, against one `dim`³ matmul on the gemm `Linear` uses.
fn muon_rows(dim: usize, reps: usize) -> anyhow::Result<f64> {
    let reps = reps.min(5);
    let s = ParamStore::new(&Device::Cpu, DType::F32);
    s.parameter("w", (dim, dim), |sh, dt, d| randn(sh, 0.0, 1.0, dt, d))?;
    let mut g = Gradients::default();
    g.insert("w", randn((dim, dim), 0.0, 1.0, DType::F32, &Device::Cpu)?);
    let x = g.get("w").unwrap().clone();
    let matmul = time_ms(reps, || {
        std::hint::black_box(x.matmul(&x).unwrap());
    });
    let gflops = |ms: f64, matmuls: f64| matmuls * 2.0 * (dim as f64).powi(3) / (ms * 1e6);
    println!(
        "
Muon on a {dim}x{dim} parameter (Newton–Schulz: 5 steps of 3 matmuls each)
         one {dim}^3 f32 matmul (Linear's gemm) {matmul:>8.1} ms   {:>6.1} GFLOP/s",
        gflops(matmul, 1.0)
    );
    let mut step_ms = 0.0;
    for (label, precision) in [("bf16", NsPrecision::Bf16), ("f32", NsPrecision::F32)] {
        let muon = Muon::new(0.02).ns_precision(precision);
        let ns = time_ms(reps, || {
            std::hint::black_box(muon.orthogonalize(&x).unwrap());
        });
        let mut opt = Optimizer::new(muon, &s)?;
        let step = time_ms(reps, || {
            opt.step(&g).unwrap();
        });
        if precision == NsPrecision::Bf16 {
            step_ms = step;
        }
        println!(
            "Newton–Schulz, {label:<4}             {ns:>8.1} ms   {:>6.1} GFLOP/s ({:.0}% of the \
             matmul's rate); whole Muon step {step:.1} ms",
            gflops(ns, 15.0),
            100.0 * gflops(ns, 15.0) / gflops(matmul, 1.0)
        );
    }
    Ok(step_ms)
}

fn torch_side(n: usize, reps: usize) -> Option<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_optim_step.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(n.to_string())
        .arg(reps.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(
        out.stdout
            .split(|&b| b == b'\n')
            .find(|l| l.starts_with(b"{"))?,
    )
    .ok()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    println!(
        "{n} f32 parameters in 8 tensors, median of {reps} steps, {} threads",
        rayon::current_num_threads()
    );
    let bw = stream_gbs(n, reps);
    println!("streaming bandwidth (best of a = b + c and a += b, all threads): {bw:.1} GB/s\n");
    println!(
        "{:<26} {:>10} {:>12} {:>14}",
        "Taper optimizer", "ms/step", "GB/s moved", "% of stream"
    );
    // Every registered configuration (taper-optim's registry), at its registered options.
    struct Rows {
        n: usize,
        reps: usize,
        bw: f64,
        adam_ms: f64,
    }
    impl Visitor for Rows {
        fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
            let (ms, bytes) = taper_step(rule, self.n, self.reps);
            let gbs = bytes as f64 * self.n as f64 / (ms * 1e6);
            println!(
                "{:<26} {:>10.2} {:>12.1} {:>13.0}%",
                entry.key,
                ms,
                gbs,
                100.0 * gbs / self.bw
            );
            if entry.key == "adam" {
                self.adam_ms = ms;
            }
        }
    }
    let mut rows = Rows {
        n,
        reps,
        bw,
        adam_ms: 0.0,
    };
    visit_optimizers(&mut rows);
    let adam_ms = rows.adam_ms;

    // candle-nn on the same tensors.
    let (s, g) = store(n, 8);
    let vars: Vec<Var> = s.trainable().into_iter().map(|(_, v)| v).collect();
    // A GradStore holding exactly g: the gradient of Σ p·g (candle's constructor is private).
    let mut dot = Tensor::zeros((), DType::F32, &Device::Cpu)?;
    for (name, v) in s.trainable() {
        dot = (dot + v.as_tensor().mul(g.get(&name).unwrap())?.sum_all()?)?;
    }
    let grad_store = dot.backward()?;
    let mut adamw = candle_nn::AdamW::new(
        vars.clone(),
        candle_nn::ParamsAdamW {
            lr: 1e-3,
            ..Default::default()
        },
    )?;
    let candle_adamw = time_ms(reps, || adamw.step(&grad_store).unwrap());
    let mut sgd = candle_nn::SGD::new(vars, 1e-3)?;
    let candle_sgd = time_ms(reps, || sgd.step(&grad_store).unwrap());
    println!(
        "\ncandle-nn AdamW            {candle_adamw:>10.2} ms   Taper Adam is {:.1}× faster",
        candle_adamw / adam_ms
    );
    println!("candle-nn SGD              {candle_sgd:>10.2} ms");

    let muon_ms = muon_rows(1024, reps)?;

    match torch_side(n, reps) {
        Some(t) => {
            let muon = t["muon_1024_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "PyTorch Muon step (1024x1024, bf16) {muon:>8.1} ms   Taper's is {:.2}× its speed",
                muon / muon_ms
            );
            let fused = t["adam_fused_ms"].as_f64().unwrap_or(f64::NAN);
            let foreach = t["adam_foreach_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "PyTorch {} Adam fused      {fused:>10.2} ms   Taper Adam is {:.2}× its speed ({} torch threads)",
                t["torch"].as_str().unwrap_or("?"),
                fused / adam_ms,
                t["threads"]
            );
            println!(
                "PyTorch Adam foreach       {foreach:>10.2} ms   Taper Adam is {:.2}× its speed",
                foreach / adam_ms
            );
        }
        None => println!("PyTorch: skipped (python3 -c 'import torch' does not work here)"),
    }
    Ok(())
}
