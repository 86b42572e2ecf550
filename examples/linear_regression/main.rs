//! The source documents' own example: fit y = 2x + 1 + 0.1·noise by batch gradient descent
//! (learning rate 0.01, 1000 iterations), then with stochastic and mini-batch descent and
//! with each optimizer and learning-rate rule from the documents, and compare.
//!
//! Run: `cargo run --release --example linear_regression`

mod core;

fn main() -> anyhow::Result<()> {
    let cfg = core::Config::default();
    let rows = core::run(&cfg)?;
    let bgd = &rows[0];
    println!(
        "Batch gradient descent, lr {}, {} iterations: weight {:.4}, bias {:.4}, MSE {:.5} (data: y = 2x + 1 + 0.1·N(0,1), {} points)\n",
        cfg.lr, cfg.iterations, bgd.weight, bgd.bias, bgd.final_mse, cfg.points
    );
    println!(
        "{:<34} {:>9} {:>9} {:>10} {:>16} {:>9}",
        "method",
        "weight",
        "bias",
        "final MSE",
        format!("iters to {}", cfg.threshold),
        "time ms"
    );
    for r in &rows {
        let reach = r
            .iterations_to_threshold
            .map_or("never".to_string(), |i| i.to_string());
        println!(
            "{:<34} {:>9.4} {:>9.4} {:>10.5} {:>16} {:>9.1}",
            r.method, r.weight, r.bias, r.final_mse, reach, r.millis
        );
    }
    Ok(())
}
