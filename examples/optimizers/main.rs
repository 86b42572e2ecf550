//! Compares every optimizer on the same problems: trajectories on the Rosenbrock and Beale
//! functions over contour plots, loss curves on an MNIST MLP, and a table of final losses
//! and steps to reach a target. The optimizers are taper-optim's registry (`visit_optimizers`)
//! plus Lookahead around Adam, L-BFGS with the strong-Wolfe line search (one iteration per
//! step; 2-D functions only) and Muon with AdamW (MNIST only): on the 2-D functions each
//! runs at its best rate from a log grid, on MNIST at the registry's rate.
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
    // (value, steps), or a dash twice where the optimizer does not apply.
    let cell = |c: Option<(f64, Option<usize>)>, mnist: bool| match c {
        Some((v, s)) if mnist => (format!("{v:.4}"), steps(s)),
        Some((v, s)) => (format!("{v:.3e}"), steps(s)),
        None => ("-".into(), "-".into()),
    };
    for r in &rows {
        let (ros, ros_s) = cell(r.rosenbrock, false);
        let (bea, bea_s) = cell(r.beale, false);
        let (mn, mn_s) = cell(r.mnist, true);
        println!(
            "{:<22} {ros:>14} {ros_s:>10} {bea:>14} {bea_s:>10} {mn:>14} {mn_s:>10}",
            r.name
        );
    }
    println!("plots: {}", cfg.out.display());
    Ok(())
}
