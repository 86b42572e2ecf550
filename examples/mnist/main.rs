//! Trains a classifier on MNIST-format data: the README's main example.
//!
//! `cargo run --release --example mnist` trains an MLP on the built-in MNIST subset.
//! `--help` lists every option: model, optimizer, schedule, batching, device, resume.

mod core;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Before any tensor operation: candle's idle workers must not hold the cores.
    taper::tensor::park_idle_candle_workers();
    let args = core::Args::parse();
    // The training loop runs on the CPU thread pool: parallel kernels start faster there.
    let summary = taper::tensor::on_thread_pool(|| core::run(&args))?;
    println!(
        "best test accuracy {:.2}% (epoch {}), final {:.2}%; {:.1} s ({:.1}% of step time loading data); outputs in {}",
        100.0 * summary.best_test_accuracy,
        summary.best_epoch,
        100.0 * summary.final_test_accuracy,
        summary.seconds,
        100.0 * summary.data_fraction,
        summary.out_dir.display()
    );
    Ok(())
}
