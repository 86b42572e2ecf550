//! Inference with no model code: loads the `mnist` example's `runs/mnist/model.safetensors`
//! and `model.json` (or the path given), rebuilds the network from the JSON, and classifies
//! ten test digits.
//!
//! Run: `cargo run --release --example mnist` first, then
//! `cargo run --release --example predict [-- PATH]`

mod core;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or("runs/mnist/model.safetensors".into());
    let (predicted, labels) = core::run(path.as_ref(), 10)?;
    println!("predicted {predicted:?}\nlabels    {labels:?}");
    Ok(())
}
