//! The documents' Keras snippets in Taper: `Sequential([Dense(10, relu), Dense(1)])`, MSE,
//! `SGD(0.01)` and then `Adam(0.001)`, 10 epochs on `rand(100, 10)`, printing each epoch as
//! Keras does.
//!
//! Run: `cargo run --release --example keras_style`

mod core;

fn main() -> anyhow::Result<()> {
    for (label, snippet) in [
        ("SGD(learning_rate=0.01)", core::Snippet::Sgd),
        ("Adam(learning_rate=0.001)", core::Snippet::Adam),
    ] {
        println!("model.compile(optimizer={label}, loss=\"mse\"); model.fit(x_train, y_train, epochs=10)");
        let history = core::run(snippet, 10, false)?;
        let loss = history.get("loss");
        println!(
            "loss went from {:.4} to {:.4}\n",
            loss[0],
            loss[loss.len() - 1]
        );
    }
    Ok(())
}
