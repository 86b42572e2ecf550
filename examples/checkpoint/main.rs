//! Train, save a checkpoint, load it into a fresh model, resume, and show that the weights
//! match an uninterrupted run bit for bit.
//!
//! Run: `cargo run --release --example checkpoint`

mod core;

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from("runs/checkpoint");
    let r = core::run(40, &dir)?;
    println!("trained {} steps straight through; {} steps, saved to {}, loaded into a fresh model, {} more", r.steps, r.steps / 2, r.checkpoint.display(), r.steps - r.steps / 2);
    println!(
        "test accuracy: straight {:.2}%, resumed {:.2}%",
        100.0 * r.straight_accuracy,
        100.0 * r.resumed_accuracy
    );
    println!("weights identical bit for bit: {}", r.identical);
    anyhow::ensure!(r.identical, "the resumed run diverged");
    Ok(())
}
