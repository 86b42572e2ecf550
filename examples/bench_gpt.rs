//! GPT training throughput, side by side in one run: the `char_gpt` example's model (4
//! layers, d_model 128, 4 heads, block 128, tied embeddings, dropout 0.1) trained with
//! AdamW and clipping in Taper, and the same model in PyTorch when `python3 -c 'import
//! torch'` works (`benches/torch_gpt.py`), with the same threads, batch and block. Reports
//! tokens/s and the ratio, FLOPs per training token with the achieved fraction of the
//! machine's f32 matmul rate (a 1024³ sgemm through the gemm Taper uses, and through
//! torch.mm, measured in the same run), and peak memory.
//!
//! Run: `cargo run --release --example bench_gpt [-- STEPS [BATCH]]` (defaults: 20 timed
//! steps after 3 warmup steps, batch 32).

#[path = "char_gpt/core.rs"]
#[allow(dead_code)]
mod core;
#[path = "common/peers.rs"]
#[allow(dead_code)]
mod peers;
#[path = "common/roofline.rs"]
#[allow(dead_code)]
mod roofline;

use std::process::Command;
use std::time::Instant;

use core::{GptConfig, OptimizerKind, Recipe, Run};
use taper::data::text::{shakespeare, TokenWindows, Vocab};
use taper::prelude::*;

const WARMUP: u64 = 3;

/// Taper's tokens/s over `steps` timed steps (after the warmup).
fn taper_rates(config: GptConfig, batch: usize, steps: u64) -> anyhow::Result<(Vec<f64>, f64)> {
    let corpus = shakespeare();
    let vocab = Vocab::chars_of(corpus.train);
    let train = TokenWindows::new(&vocab.encode(corpus.train)?, config.block_size)?;
    let loader = DataLoader::new(train, Batching::MiniBatch(batch))?
        .shuffle(true)
        .seed(0);
    let recipe = Recipe {
        steps: WARMUP + steps,
        batch_size: batch,
        lr: 1e-3,
        warmup: 1,
        optimizer: OptimizerKind::Adamw,
        clip: 1.0,
        seed: 0,
    };
    let mut run = Run::new(config, &recipe, &loader)?;
    let (mut rates, mut last) = (Vec::new(), Instant::now());
    let mut loss = f64::NAN;
    run.train_until(&loader, WARMUP + steps, |run, l| {
        let now = Instant::now();
        if run.state.step > WARMUP {
            let secs = (now - last).as_secs_f64();
            rates.push((batch * config.block_size) as f64 / secs);
        }
        loss = l;
        last = now;
        Ok(())
    })?;
    Ok((rates, loss))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let batch: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
    let config = GptConfig {
        vocab_size: 65,
        block_size: 128,
        n_layer: 4,
        n_head: 4,
        d_model: 128,
        dropout: 0.1,
    };
    let flops = config.train_flops_per_token();
    println!(
        "GPT: {} parameters, {:.2} MFLOP per training token, batch {batch} × block {}, {} threads",
        config.parameters(),
        flops / 1e6,
        config.block_size,
        taper::tensor::candle::utils::get_num_threads()
    );
    let peak = roofline::matmul_gflops()?;
    let (rates, loss) = taper_rates(config, batch, steps)?;
    let taper_rate = median(rates.clone());
    let taper_peak = peers::peak_mib();
    let root = env!("CARGO_MANIFEST_DIR");
    let torch = peers::json_lines(
        Command::new("python3")
            .arg(format!("{root}/benches/torch_gpt.py"))
            .args(
                [65, 128, 4, 128, 4, batch, steps as usize, WARMUP as usize].map(|v| v.to_string()),
            ),
    )
    .and_then(|l| l.into_iter().next());
    let torch_mm = torch.as_ref().and_then(|t| t["matmul_gflops"].as_f64());
    println!(
        "\nmatmul rate (1024³ sgemm): gemm {peak:.1} GFLOP/s{}; % peak is against the higher",
        torch_mm.map_or(String::new(), |g| format!(", torch.mm {g:.1} GFLOP/s"))
    );
    let peak = peak.max(torch_mm.unwrap_or(0.0));
    println!(
        "\n{:<24} {:>12} {:>12} {:>10} {:>9} {:>10} {:>10}",
        "framework", "tokens/s", "range", "GFLOP/s", "% peak", "peak MiB", "vs PyTorch"
    );
    let torch_rate = torch.as_ref().and_then(|t| {
        let r: Vec<f64> = t["tokens_per_s"]
            .as_array()?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect();
        Some((median(r.clone()), r))
    });
    let row = |name: &str, rates: &[f64], rate: f64, mib: Option<f64>| {
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        println!(
            "{name:<24} {rate:>12.0} {:>12} {:>10.1} {:>8.1}% {:>10} {:>10}",
            format!("{lo:.0}–{hi:.0}"),
            rate * flops / 1e9,
            100.0 * rate * flops / 1e9 / peak,
            mib.map_or("-".into(), |m| format!("{m:.0}")),
            torch_rate
                .as_ref()
                .map_or("-".into(), |(t, _)| format!("{:.2}×", rate / t)),
        );
    };
    row("Taper", &rates, taper_rate, taper_peak);
    match (&torch, &torch_rate) {
        (Some(t), Some((rate, rates))) => row(
            &format!("PyTorch {}", t["version"].as_str().unwrap_or("?")),
            rates,
            *rate,
            t["peak_mib"].as_f64(),
        ),
        _ => println!("PyTorch: skipped (needs python3 with torch)"),
    }
    println!("\nTaper's last loss {loss:.3} (nats/token); medians of {steps} timed steps, after {WARMUP} warmup steps");
    Ok(())
}
