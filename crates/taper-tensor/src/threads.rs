//! Running a training loop on the CPU thread pool.
//!
//! candle's and Taper's CPU kernels split large work across rayon's thread pool. A kernel
//! called from a thread outside the pool (such as `main`) hands its work to the pool and
//! sleeps until it is done; called from a pool thread, it starts the work itself and lets the
//! other threads steal. On the 2-core benchmark machine an empty parallel call took 8–16 µs
//! from `main` and 0.1–3 µs from a pool thread, and a training step makes dozens of them:
//! running the MLP benchmark's loop through [`on_thread_pool`] made it 6–12% faster.

use crate::no_grad::NoGradGuard;

/// The environment variable candle 0.11 reads, once, when its CPU worker pool starts.
const CANDLE_SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Makes candle's CPU workers sleep as soon as an operation ends, instead of spinning for
/// about a millisecond (candle's default: 25,000 spins) waiting for the next one.
///
/// Taper's own kernels and candle's operations run on two different thread pools. A
/// spinning candle worker holds a core that Taper's next kernel needs: on the 2-core
/// benchmark machine the CNN's convolution backward took 7.2 ms a step with candle's
/// default and 5.5 ms with this, and MLP training ran up to 1.4x faster. Waking a sleeping
/// worker costs a few microseconds per candle operation instead.
///
/// Candle reads its setting from the environment once, when its pool first starts, so call
/// this first thing in `main`, before any tensor operation and before starting threads
/// (it sets the variable `CANDLE_BARRIER_POOL_SPIN_LIMIT` to 0). A value the user has set
/// is kept. Returns whether the setting is in effect (false if a different value was set
/// by the user).
///
/// ```
/// // First thing in `main`:
/// assert!(taper_tensor::park_idle_candle_workers());
/// assert_eq!(std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").as_deref(), Ok("0"));
/// // ... then build the model and train.
/// ```
///
/// It also keeps freed memory in the process ([`crate::retain_freed_memory`]), which works
/// fully only when it comes before the script's first large allocations.
pub fn park_idle_candle_workers() -> bool {
    crate::memory::retain_freed_memory();
    match std::env::var(CANDLE_SPIN_LIMIT) {
        Ok(v) => v.trim() == "0",
        Err(_) => {
            // Sound at the start of `main`, before other threads read the environment
            // (the documented contract).
            std::env::set_var(CANDLE_SPIN_LIMIT, "0");
            true
        }
    }
}
use crate::{
    fast_kernels_enabled, is_grad_enabled, rng_state, set_rng_state, with_generic_kernels,
};

/// Runs `f` on a thread of the CPU thread pool, with this thread's random generator,
/// gradient mode and kernel choice ([`crate::with_generic_kernels`]), and returns its result.
///
/// The generator's position comes back afterwards, so seeded runs stay reproducible
/// whether or not the loop runs here. Already on a pool thread, it just calls `f`. It keeps
/// freed memory in the process first ([`crate::retain_freed_memory`]).
///
/// ```
/// use taper_tensor::{manual_seed, on_thread_pool, randn, DType, Device};
/// manual_seed(7);
/// let a = on_thread_pool(|| randn(3, 0.0, 1.0, DType::F32, &Device::Cpu))?;
/// manual_seed(7);
/// let b = randn(3, 0.0, 1.0, DType::F32, &Device::Cpu)?;
/// assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn on_thread_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    crate::memory::retain_freed_memory();
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let (rng, grad, fast) = (rng_state(), is_grad_enabled(), fast_kernels_enabled());
    let (out, rng) = rayon::scope(|_| {
        let previous = (rng_state(), is_grad_enabled());
        set_rng_state(&rng);
        let guard = (!grad).then(NoGradGuard::new);
        let out = if fast { f() } else { with_generic_kernels(f) };
        drop(guard);
        let after = rng_state();
        // Leave the pool thread as it was.
        set_rng_state(&previous.0);
        (out, after)
    });
    set_rng_state(&rng);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{manual_seed, no_grad, randn, DType, Device};

    #[test]
    fn runs_on_a_pool_thread_with_the_callers_generator_and_grad_mode() {
        manual_seed(3);
        let (on_pool, grad, x) = no_grad(|| {
            on_thread_pool(|| {
                let x = randn(4, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
                (
                    rayon::current_thread_index().is_some(),
                    is_grad_enabled(),
                    x,
                )
            })
        });
        assert!(on_pool);
        assert!(!grad, "no_grad carries over");
        assert!(is_grad_enabled(), "and ends with the caller's scope");
        // The generator continues here from where the pool thread left it.
        let y = randn(4, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
        manual_seed(3);
        let x2 = randn(4, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
        let y2 = randn(4, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(x.to_vec1::<f64>().unwrap(), x2.to_vec1::<f64>().unwrap());
        assert_eq!(y.to_vec1::<f64>().unwrap(), y2.to_vec1::<f64>().unwrap());
    }
}
