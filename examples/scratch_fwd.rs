use taper::nn::{Activation, Flatten, Linear, Sequential};
use taper::prelude::*;
fn main() -> anyhow::Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let l1 = Linear::new(784, 256, &store.sub("0"))?;
    let model = Sequential::new(&store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 256, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(256, 10, s))?;
    let x = randn((64, 1, 28, 28), 0.0, 1.0, DType::F32, &Device::Cpu)?;
    let x2 = x.flatten_from(1)?;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            let _ = model.forward_t(&x, true)?;
        }
        let a = t.elapsed().as_secs_f64() / 2000.0 * 1e6;
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            let _ = l1.forward(&x2)?;
        }
        let b = t.elapsed().as_secs_f64() / 2000.0 * 1e6;
        let h = l1.forward(&x2)?;
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            let _ = h.relu()?;
        }
        let c = t.elapsed().as_secs_f64() / 2000.0 * 1e6;
        println!("model fwd {a:.1} us, linear1 {b:.1} us, relu {c:.1} us");
    }
    Ok(())
}
