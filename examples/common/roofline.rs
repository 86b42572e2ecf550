//! Roofline figures for the benchmarks: a `Sequential`'s floating-point operations per
//! sample, counted layer by layer from its architecture (`Sequential::spec`), and the
//! machine's f32 matmul rate, measured in the same run through the gemm crate and, when
//! `python3 -c 'import torch'` works, through `torch.mm`.

use std::process::Command;
use std::time::Instant;

use taper::nn::{LayerSpec, Sequential};
use taper::prelude::*;

/// FLOPs per sample (a multiply-add counts 2).
#[derive(Debug, Clone)]
pub struct Flops {
    /// The forward pass.
    pub forward: f64,
    /// A training step: forward, the weight gradients, and the input gradients of every
    /// layer but the first (the data needs none).
    pub train: f64,
    /// Each layer with products: its name and forward FLOPs.
    pub per_layer: Vec<(String, f64)>,
}

/// Counts `model`'s products for one sample of shape `input` (without the batch
/// dimension): convolutions and linear layers; element-wise layers are not counted (they
/// are memory-bound, not FLOP-bound).
pub fn count(model: &Sequential, input: &[usize]) -> anyhow::Result<Flops> {
    let LayerSpec::Sequential { layers } = model.spec()? else {
        anyhow::bail!("expected a Sequential's spec");
    };
    let mut shape = input.to_vec();
    let mut per_layer = Vec::new();
    let (mut forward, mut first_with_products) = (0.0, None);
    for (i, layer) in layers.iter().enumerate() {
        let flops = match layer {
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let out =
                    |n: usize, k: usize| (n + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
                let (h, w) = (out(shape[1], kernel.0), out(shape[2], kernel.1));
                shape = vec![*out_channels, h, w];
                let macs = out_channels * h * w * (in_channels / groups) * kernel.0 * kernel.1;
                Some((
                    format!(
                        "{i}: Conv2d {in_channels}→{out_channels} {}×{}",
                        kernel.0, kernel.1
                    ),
                    2.0 * macs as f64,
                ))
            }
            LayerSpec::Linear {
                in_features,
                out_features,
                ..
            } => {
                shape = vec![*out_features];
                Some((
                    format!("{i}: Linear {in_features}→{out_features}"),
                    2.0 * (in_features * out_features) as f64,
                ))
            }
            LayerSpec::MaxPool2d { kernel, stride } | LayerSpec::AvgPool2d { kernel, stride } => {
                shape = vec![
                    shape[0],
                    (shape[1] - kernel.0) / stride.0 + 1,
                    (shape[2] - kernel.1) / stride.1 + 1,
                ];
                None
            }
            LayerSpec::Flatten { .. } => {
                shape = vec![shape.iter().product()];
                None
            }
            _ => None,
        };
        if let Some((name, f)) = flops {
            first_with_products.get_or_insert(f);
            forward += f;
            per_layer.push((name, f));
        }
    }
    // Backward: each product's weight gradient and input gradient cost what its forward
    // did; the first layer's input gradient is not computed.
    let train = 3.0 * forward - first_with_products.unwrap_or(0.0);
    Ok(Flops {
        forward,
        train,
        per_layer,
    })
}

/// The f32 matmul rate of candle's CPU matmul (the gemm crate, as Taper's layers use it):
/// a 1024×1024 by 1024×1024 product repeated for about a second, in GFLOP/s.
pub fn matmul_gflops() -> anyhow::Result<f64> {
    let n = 1024;
    let a = randn((n, n), 0.0, 1.0, DType::F32, &Device::Cpu)?;
    let b = randn((n, n), 0.0, 1.0, DType::F32, &Device::Cpu)?;
    a.matmul(&b)?;
    let (start, mut reps) = (Instant::now(), 0u32);
    while start.elapsed().as_secs_f64() < 1.0 {
        a.matmul(&b)?;
        reps += 1;
    }
    Ok(2.0 * (n as f64).powi(3) * reps as f64 / start.elapsed().as_secs_f64() / 1e9)
}

/// The same 1024³ sgemm through `torch.mm` on `threads` threads, in GFLOP/s; `None` when
/// PyTorch cannot be run.
pub fn torch_matmul_gflops(threads: usize) -> Option<f64> {
    let script = format!(
        "import time, torch\n\
         torch.set_num_threads({threads})\n\
         a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)\n\
         torch.mm(a, b)\n\
         t, reps = time.perf_counter(), 0\n\
         while time.perf_counter() - t < 1.0:\n    torch.mm(a, b); reps += 1\n\
         print(2 * 1024**3 * reps / (time.perf_counter() - t) / 1e9)\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Prints the roofline table: for each (framework, network, phase, samples/s), the achieved
/// GFLOP/s and the percentage of the matmul rate: the higher of the gemm crate's
/// (`matmul_gflops`) and PyTorch's (`torch_matmul_gflops`), both measured now.
pub fn print_table(rows: &[(String, String, &str, f64, f64)], gemm: f64) {
    let torch = torch_matmul_gflops(rayon::current_num_threads());
    let peak = gemm.max(torch.unwrap_or(0.0));
    let through_torch = torch.map_or(" (PyTorch: not run)".to_string(), |t| {
        format!(", torch.mm {t:.1}")
    });
    println!(
        "\nroofline against the measured f32 matmul rate, {peak:.1} GFLOP/s \
         (1024³ sgemm, same run: gemm crate {gemm:.1}{through_torch}; the higher):"
    );
    println!(
        "{:<36} {:<8} {:<9} {:>12} {:>11} {:>10} {:>8}",
        "framework", "network", "phase", "MFLOP/sample", "samples/s", "GFLOP/s", "% peak"
    );
    for (framework, net, phase, flops, rate) in rows {
        let g = rate * flops / 1e9;
        println!(
            "{framework:<36} {net:<8} {phase:<9} {:>12.2} {rate:>11.0} {g:>10.1} {:>7.1}%",
            flops / 1e6,
            100.0 * g / peak
        );
    }
}
