//! GELU, ½x(1 + erf(x/√2)), as one graph node: one pass forward, one backward
//! (g·(Φ(x) + x·φ(x))), where candle's composition takes four ops forward and about ten
//! backward. f64 uses libm's `erf` (as candle's generic op does); f32 uses a rational
//! approximation of erf (Eigen's, within a few ulp) that the compiler vectorizes, where
//! libm's `erff` is a scalar call.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{float_kernel_applies, slice_of, with_slice};

/// Elements per parallel task: fixed, so results do not depend on scheduling.
const CHUNK: usize = 1 << 14;

/// The erf the kernel uses, per element type.
trait GeluFloat: candle_core::WithDType + Copy + Send + Sync {
    fn gelu(x: Self) -> Self;
    fn gelu_grad(x: Self, g: Self) -> Self;
}

/// erf(x) for f32: Eigen's `generic_fast_erf_float` (a 13/8-degree rational function on
/// [−4, 4], ±1 outside), branch-free. The constants are Eigen's, as published.
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_2e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024_e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

impl GeluFloat for f32 {
    #[inline(always)]
    fn gelu(x: f32) -> f32 {
        0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
    }
    #[inline(always)]
    fn gelu_grad(x: f32, g: f32) -> f32 {
        let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = (-0.5 * x * x).exp()
            * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
        g * (cdf + x * pdf)
    }
}

impl GeluFloat for f64 {
    fn gelu(x: f64) -> f64 {
        0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
    }
    fn gelu_grad(x: f64, g: f64) -> f64 {
        let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x * std::f64::consts::FRAC_1_SQRT_2));
        let pdf = (-0.5 * x * x).exp()
            * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
        g * (cdf + x * pdf)
    }
}

fn forward<T: GeluFloat>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = T::gelu(x)));
    y
}

fn backward<T: GeluFloat>(x: &[T], g: &[T]) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(d, (x, g))| {
            d.iter_mut()
                .zip(x.iter().zip(g))
                .for_each(|(d, (&x, &g))| *d = T::gelu_grad(x, g))
        });
    dx
}

struct GeluNode;

impl CustomOp1 for GeluNode {
    fn name(&self) -> &'static str {
        "taper-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = l.shape().elem_count();
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(forward(slice_of::<f32>(s, l, n)?)),
            CpuStorage::F64(_) => CpuStorage::F64(forward(slice_of::<f64>(s, l, n)?)),
            _ => candle_core::bail!("taper-gelu: expected f32 or f64"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        float_dispatch!(x.dtype(), "taper-gelu", T => {
            let dx = with_slice::<T, _>(x, |xs| with_slice::<T, _>(grad, |gs| backward(xs, gs)))??;
            Ok(Some(Tensor::from_vec(dx, x.shape(), &candle_core::Device::Cpu)?))
        })
    }
}

/// GELU as one node for a contiguous CPU f32/f64 tensor on the training path (Taper's
/// kernels on, a gradient wanted); `None` elsewhere.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !x.track_op() || !x.is_contiguous() || !float_kernel_applies(&[x]) {
        return Ok(None);
    }
    Ok(Some(x.apply_op1(GeluNode)?))
}

/// GELU of a contiguous CPU f32/f64 tensor without a graph (evaluation); `None` elsewhere.
pub(crate) fn gelu_eval(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if x.track_op() || !float_kernel_applies(&[x]) {
        return Ok(None);
    }
    float_dispatch!(x.dtype(), "taper-gelu", T => {
        let y = with_slice::<T, _>(x, forward)?;
        Ok(Some(Tensor::from_vec(y, x.shape(), &candle_core::Device::Cpu)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_f32_erf_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let e = (erf_f32(x) - candle_core::cpu::erf::erf_f32(x)).abs();
            worst = worst.max(e);
        }
        assert!(worst < 5e-7, "{worst}");
        assert!((erf_f32(10.0) - 1.0).abs() <= f32::EPSILON);
        assert!((erf_f32(-10.0) + 1.0).abs() <= f32::EPSILON);
    }
}
