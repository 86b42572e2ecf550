//! Inverted dropout as one graph node: the mask is drawn from taper-tensor's seeded generator
//! by `fill_bernoulli`, as `bernoulli` draws it (so the generic path gets the same mask from
//! the same seed), already scaled by 1/(1 − p), and kept by the node; forward x·m, backward g·m. The
//! generic path takes a sample pass, a conversion, a scaling pass and a product.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::cpu::gemm::Elem;
use crate::cpu::{float_kernel_applies, slice_of, with_slice};

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// The scaled mask, as the element type of the input.
struct DropoutNode<T> {
    mask: Vec<T>,
}

fn times<T: Elem>(x: &[T], m: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(m.par_chunks(CHUNK)))
        .for_each(|(y, (x, m))| {
            y.iter_mut()
                .zip(x.iter().zip(m))
                .for_each(|(y, (&x, &m))| *y = x * m)
        });
    y
}

impl<T: Elem + WithDType> CustomOp1 for DropoutNode<T> {
    fn name(&self) -> &'static str {
        "taper-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice_of::<T>(s, l, self.mask.len())?;
        Ok((
            T::to_cpu_storage_owned(times(x, &self.mask)),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = with_slice::<T, _>(grad, |g| times(g, &self.mask))?;
        Ok(Some(Tensor::from_vec(
            dx,
            x.shape(),
            &candle_core::Device::Cpu,
        )?))
    }
}

/// Dropout with probability `p` in (0, 1) of a CPU f32/f64 tensor as one node (just the
/// product when `x` needs no gradient); `None` when Taper's kernels do not apply.
pub(crate) fn dropout(x: &Tensor, p: f64) -> candle_core::Result<Option<Tensor>> {
    if !float_kernel_applies(&[x]) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let keep = 1.0 - p;
    float_dispatch!(x.dtype(), "taper-dropout", T => {
        let scale = <T as Elem>::from_f64(1.0 / keep);
        let n = x.elem_count();
        let mut mask = vec![T::ZERO; n];
        taper_tensor::fill_bernoulli(&mut mask, keep, (scale, T::ZERO))
            .map_err(|e| crate::error::Error::from(e).into_candle())?;
        if x.track_op() {
            Ok(Some(x.apply_op1(DropoutNode { mask })?))
        } else {
            let y = with_slice::<T, _>(&x, |xs| times(xs, &mask))?;
            Ok(Some(Tensor::from_vec(y, x.shape(), &candle_core::Device::Cpu)?))
        }
    })
}
