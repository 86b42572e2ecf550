//! The source documents' own example: fit y = 2x + 1 + 0.1·noise by batch gradient descent
//! (learning rate 0.01, 1000 iterations) and print the learned weight, bias and MSE.
//!
//! Run: `cargo run --release --example linear_regression`

use taper::prelude::*;

fn main() -> anyhow::Result<()> {
    manual_seed(42);
    let dev = Device::Cpu;
    let n = 100;
    // Data: X ~ U(0, 1), y = 2X + 1 + 0.1·N(0, 1).
    let x = rand_uniform((n, 1), 0.0, 1.0, DType::F32, &dev)?;
    let y = (x.affine(2.0, 1.0)? + randn((n, 1), 0.0, 0.1, DType::F32, &dev)?)?;

    let store = ParamStore::new(&dev, DType::F32);
    let w = store.parameter("weight", (1, 1), |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
    let b = store.parameter("bias", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
    let lr = 0.01;
    let mse = |w: &Tensor, b: &Tensor| -> anyhow::Result<Tensor> {
        Ok(x.matmul(&w.t()?)?
            .broadcast_add(b)?
            .sub(&y)?
            .sqr()?
            .mean_all()?)
    };
    for it in 0..1000 {
        let loss = mse(&w, &b)?;
        let grads = Gradients::compute(&loss, &store)?;
        // Batch gradient descent: θ ← θ − η ∇L(θ) over the whole data set.
        for (name, var) in store.trainable() {
            let g = grads
                .get(&name)
                .expect("every parameter is used in the loss");
            var.set(&(var.as_tensor() - g.affine(lr, 0.0)?)?)?;
        }
        if it % 200 == 0 {
            println!("iteration {it:4}  mse {:.5}", loss.to_scalar::<f32>()?);
        }
    }
    let w_final = w.flatten_all()?.to_vec1::<f32>()?[0];
    let b_final = b.to_vec1::<f32>()?[0];
    let loss = mse(&w, &b)?.to_scalar::<f32>()?;
    println!("learned weight {w_final:.4} (true 2), bias {b_final:.4} (true 1), mse {loss:.5}");
    Ok(())
}
