//! The documents' linear-regression data: X ~ U(0, 1), y = 2X + 1 + 0.1·N(0, 1).

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::dataset::TensorDataset;
use crate::Result;

/// `n` examples of y = 2x + 1 + 0.1·ε, as (n, 1) f32 inputs and targets, from `seed`.
///
/// ```
/// let data = taper_data::linear_regression(100, 42)?;
/// assert_eq!(data.inputs().dims(), &[100, 1]);
/// # Ok::<(), taper_data::Error>(())
/// ```
pub fn linear_regression(n: usize, seed: u64) -> Result<TensorDataset> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let x: f64 = rng.random();
        let e: f64 = StandardNormal.sample(&mut rng);
        xs.push(x as f32);
        ys.push((2.0 * x + 1.0 + 0.1 * e) as f32);
    }
    TensorDataset::new(
        Tensor::from_vec(xs, (n, 1), &Device::Cpu)?,
        Tensor::from_vec(ys, (n, 1), &Device::Cpu)?,
    )
}
