//! Compares every optimizer on the same problems: trajectories on the Rosenbrock and Beale
//! functions over contour plots, loss curves on an MNIST MLP, and a table of final losses
//! and steps to reach a target. The optimizers are taper-optim's registry (`visit_optimizers`):
//! on the 2-D functions each runs at its best rate from a log grid, on MNIST at the
//! registry's rate.
//!
//! Run: `cargo run --release --example optimizers` (writes `rosenbrock.png` and `beale.png`,
//! one panel per optimizer, `convergence.png` and `mnist_loss.png` to `runs/optimizers/`).

mod core;

fn main() -> anyhow::Result<()> {
    let cfg = core::Config::default();
    let rows = core::run(&cfg)?;
    println!(
        "{:<22} {:>14} {:>10} {:>14} {:>10} {:>14} {:>10}",
        "optimizer", "Rosenbrock", "steps<1e-2", "Beale", "steps<1e-2", "MNIST loss", "steps<0.5"
    );
    let steps = |s: Option<usize>| s.map_or("never".to_string(), |v| v.to_string());
    for r in &rows {
        println!(
            "{:<22} {:>14.3e} {:>10} {:>14.3e} {:>10} {:>14.4} {:>10}",
            r.name,
            r.rosenbrock.0,
            steps(r.rosenbrock.1),
            r.beale.0,
            steps(r.beale.1),
            r.mnist.0,
            steps(r.mnist.1)
        );
    }
    println!("plots: {}", cfg.out.display());
    Ok(())
}
