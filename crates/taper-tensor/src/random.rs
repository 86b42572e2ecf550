//! Seeding and random tensors.
//!
//! Taper draws every random number it needs (parameter initialization, dropout masks,
//! data shuffles, augmentation) from one generator per thread, a ChaCha8 stream.
//! [`manual_seed`] makes all of them reproducible on the CPU, like `torch.manual_seed`.
//! Candle's own CPU `rand`/`randn` cannot be seeded, so Taper generates on the CPU and moves
//! the result to the target device.
//!
//! The generator's position is plain data ([`RngState`]), so a checkpoint can save it and
//! a resumed run continues the same random stream.
//!
//! Differences from PyTorch: the generator is per thread (tests running in parallel threads
//! do not disturb one another), and an unseeded thread starts from OS entropy rather than a
//! fixed default seed.

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{DType, Device, Error, Result, Shape, Tensor};

/// The random generator behind Taper's seeding.
pub type TaperRng = ChaCha8Rng;

thread_local! {
    static RNG: RefCell<(u64, TaperRng)> = RefCell::new({
        let seed: u64 = rand::rng().random();
        (seed, TaperRng::seed_from_u64(seed))
    });
}

/// Seeds this thread's generator: initialization, dropout and shuffles become reproducible.
///
/// ```
/// use taper_tensor::{manual_seed, randn, DType, Device};
/// manual_seed(42);
/// let a = randn((2, 3), 0.0, 1.0, DType::F32, &Device::Cpu)?;
/// manual_seed(42);
/// let b = randn((2, 3), 0.0, 1.0, DType::F32, &Device::Cpu)?;
/// assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
/// # Ok::<(), taper_tensor::Error>(())
/// ```
pub fn manual_seed(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = (seed, TaperRng::seed_from_u64(seed)));
}

/// The seed this thread's generator was last seeded with (from OS entropy if never seeded).
pub fn initial_seed() -> u64 {
    RNG.with(|r| r.borrow().0)
}

/// Runs `f` with this thread's generator, for code that needs raw random numbers.
pub fn with_rng<T>(f: impl FnOnce(&mut TaperRng) -> T) -> T {
    RNG.with(|r| f(&mut r.borrow_mut().1))
}

/// A new independent generator derived from this thread's one (e.g. for a data loader),
/// so its use does not shift the main stream by an amount that depends on the data.
pub fn fork_rng() -> TaperRng {
    with_rng(|rng| TaperRng::seed_from_u64(rng.random()))
}

/// The exact position of a generator: enough to save it and continue the stream later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngState {
    /// The seed given to `manual_seed` (or drawn from entropy).
    pub seed: u64,
    /// The ChaCha key the generator runs with.
    pub key: [u8; 32],
    /// The ChaCha stream number.
    pub stream: u64,
    /// The position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl RngState {
    /// Captures a generator's position.
    pub fn of(seed: u64, rng: &TaperRng) -> Self {
        Self {
            seed,
            key: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator at exactly this position.
    pub fn to_rng(&self) -> TaperRng {
        let mut rng = TaperRng::from_seed(self.key);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

/// The position of this thread's generator (for checkpoints).
pub fn rng_state() -> RngState {
    RNG.with(|r| {
        let r = r.borrow();
        RngState::of(r.0, &r.1)
    })
}

/// Restores this thread's generator to a saved position.
pub fn set_rng_state(state: &RngState) {
    RNG.with(|r| *r.borrow_mut() = (state.seed, state.to_rng()));
}

fn check_finite(field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            field,
            value: v.to_string(),
            expected: "a finite number",
        })
    }
}

/// Builds a tensor from values drawn on the CPU, then casts and moves it.
fn from_samples(
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
    mut sample: impl FnMut(&mut TaperRng) -> f64,
) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.elem_count();
    let data: Vec<f64> = with_rng(|rng| (0..n).map(|_| sample(rng)).collect());
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// A tensor of samples from U(low, high), drawn from the seeded generator.
pub fn rand_uniform(
    shape: impl Into<Shape>,
    low: f64,
    high: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    check_finite("low", low)?;
    check_finite("high", high)?;
    if low > high {
        return Err(Error::InvalidValue {
            field: "low",
            value: format!("{low} > high {high}"),
            expected: "low <= high",
        });
    }
    from_samples(shape, dtype, device, |rng| {
        low + (high - low) * rng.random::<f64>()
    })
}

/// A tensor of samples from N(mean, std²), drawn from the seeded generator.
pub fn randn(
    shape: impl Into<Shape>,
    mean: f64,
    std: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    check_finite("mean", mean)?;
    check_finite("std", std)?;
    if std < 0.0 {
        return Err(Error::InvalidValue {
            field: "std",
            value: std.to_string(),
            expected: "std >= 0",
        });
    }
    from_samples(shape, dtype, device, |rng| {
        let z: f64 = StandardNormal.sample(rng);
        mean + std * z
    })
}

/// A tensor of 0/1 values, each 1 with probability `p` (a Bernoulli mask, e.g. for dropout),
/// drawn as [`fill_bernoulli`] draws them.
pub fn bernoulli(shape: impl Into<Shape>, p: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    let mut data = vec![0f64; shape.elem_count()];
    fill_bernoulli(&mut data, p, (1.0, 0.0))?;
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// Fills `out` with `one` where a Bernoulli draw of probability `p` succeeds and `zero`
/// elsewhere, from the seeded generator: one 32-bit word per element, in bulk, succeeding
/// when the word is below p·2³² (so p = 1 always succeeds and p = 0 never). Every Bernoulli
/// mask in Taper comes from here, so the same seed gives the same mask on every path.
///
/// ```
/// use taper_tensor::{fill_bernoulli, manual_seed};
/// manual_seed(3);
/// let mut mask = [0f32; 1000];
/// fill_bernoulli(&mut mask, 0.75, (2.0, 0.0))?;
/// let kept = mask.iter().filter(|&&m| m == 2.0).count();
/// assert!((700..800).contains(&kept));
/// # Ok::<(), taper_tensor::Error>(())
/// ```
pub fn fill_bernoulli<T: Copy>(out: &mut [T], p: f64, (one, zero): (T, T)) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::InvalidValue {
            field: "p",
            value: p.to_string(),
            expected: "a probability in [0, 1]",
        });
    }
    // p·2³² as an integer bound: exact for p = 1 (every u32 word is below 2³²).
    let bound = (p * 4_294_967_296.0) as u64;
    let mut words = [0u32; 256];
    with_rng(|rng| {
        for block in out.chunks_mut(words.len()) {
            let words = &mut words[..block.len()];
            rng.fill(words);
            for (o, &w) in block.iter_mut().zip(words.iter()) {
                *o = if u64::from(w) < bound { one } else { zero };
            }
        }
    });
    Ok(())
}

/// A uniformly random permutation of `0..n` (Fisher–Yates), from the seeded generator.
pub fn randperm(n: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut v: Vec<usize> = (0..n).collect();
    with_rng(|rng| v.shuffle(rng));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bernoulli_masks_are_exact_at_the_edges_seeded_and_the_same_on_both_paths() {
        let mut m = vec![9f32; 1000];
        fill_bernoulli(&mut m, 1.0, (1.0, 0.0)).unwrap();
        assert!(m.iter().all(|&v| v == 1.0));
        fill_bernoulli(&mut m, 0.0, (1.0, 0.0)).unwrap();
        assert!(m.iter().all(|&v| v == 0.0));
        for p in [-0.1, 1.5, f64::NAN] {
            let before = rng_state();
            assert!(fill_bernoulli(&mut m, p, (1.0, 0.0)).is_err(), "p = {p}");
            assert_eq!(rng_state(), before, "a rejected p draws nothing");
        }
        // The tensor path draws the same mask from the same seed; the frequency is p.
        manual_seed(11);
        let mut a = vec![0f64; 100_000];
        fill_bernoulli(&mut a, 0.3, (1.0, 0.0)).unwrap();
        manual_seed(11);
        let b = bernoulli(100_000, 0.3, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(a, b.to_vec1::<f64>().unwrap());
        let rate = a.iter().sum::<f64>() / a.len() as f64;
        assert!((rate - 0.3).abs() < 0.005, "rate {rate}");
    }

    #[test]
    fn same_seed_same_numbers_different_seed_different_numbers() {
        manual_seed(7);
        let a = rand_uniform(100, -1.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let p1 = randperm(50);
        manual_seed(7);
        let b = rand_uniform(100, -1.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let p2 = randperm(50);
        manual_seed(8);
        let c = rand_uniform(100, -1.0, 1.0, DType::F32, &Device::Cpu).unwrap();
        let (a, b, c) = (
            a.to_vec1::<f32>().unwrap(),
            b.to_vec1::<f32>().unwrap(),
            c.to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(p1, p2);
        assert_eq!(initial_seed(), 8);
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn state_round_trip_continues_the_stream() {
        manual_seed(3);
        let _ = randperm(10);
        let state = rng_state();
        let x = randn(20, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
        manual_seed(999);
        set_rng_state(&state);
        let y = randn(20, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(x.to_vec1::<f64>().unwrap(), y.to_vec1::<f64>().unwrap());
        assert_eq!(initial_seed(), 3);
    }

    #[test]
    fn distribution_moments() {
        manual_seed(1);
        let n = 200_000;
        let x = randn(n, 2.0, 3.0, DType::F64, &Device::Cpu).unwrap();
        let v = x.to_vec1::<f64>().unwrap();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 2.0).abs() < 0.03, "{mean}");
        assert!((var.sqrt() - 3.0).abs() < 0.03, "{var}");
        let m = bernoulli(n, 0.25, DType::F32, &Device::Cpu).unwrap();
        let ones = m.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64 / n as f64;
        assert!((ones - 0.25).abs() < 0.005, "{ones}");
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(randn(3, 0.0, -1.0, DType::F32, &Device::Cpu).is_err());
        assert!(rand_uniform(3, 1.0, 0.0, DType::F32, &Device::Cpu).is_err());
        let e = bernoulli(3, 1.5, DType::F32, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("`p`"), "{e}");
        assert!(randn(3, f64::NAN, 1.0, DType::F32, &Device::Cpu).is_err());
    }
}
