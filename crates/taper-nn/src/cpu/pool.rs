//! `MaxPool2d` and `AvgPool2d` on the CPU as single autograd nodes, in f32 and f64, one
//! plane (sample × channel) per task.
//!
//! Max pooling remembers, for every output, which input it took (its argmax, as PyTorch's
//! `return_indices` does): the backward pass is then one scatter of the output gradient,
//! with no comparison against the input. Ties go to the first maximum in the window, and a
//! NaN in a window wins, as in PyTorch (candle's generic ops split a tie's gradient between
//! the tied inputs instead). Average pooling's backward spreads each output gradient evenly
//! over its window.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::Elem;
use super::{float_kernel_applies, slice_of, tensor_from, with_slice};

/// Output elements below which a pooling runs on one thread.
const MIN_PER_THREAD: usize = 1 << 15;

/// The reduction over each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reduce {
    /// The largest value (NaN wins), with its position remembered.
    Max,
    /// The mean.
    Mean,
}

/// The shapes of one pooling: input (n, c, h, w), windows (kh, kw) every (sh, sw), output
/// (n, c, oh, ow); no padding, floor mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Planes: batch × channels.
    pub planes: usize,
    /// Input height and width.
    pub hw: (usize, usize),
    /// Window height and width.
    pub kernel: (usize, usize),
    /// Steps between windows.
    pub stride: (usize, usize),
    /// Output height and width.
    pub out: (usize, usize),
}

impl Geometry {
    pub(crate) fn in_len(&self) -> usize {
        self.hw.0 * self.hw.1
    }

    pub(crate) fn out_len(&self) -> usize {
        self.out.0 * self.out.1
    }

    /// Planes per task: enough that a task is worth starting.
    fn planes_per_task(&self) -> usize {
        let total = self.planes * self.out_len() * self.kernel.0 * self.kernel.1;
        let tasks = rayon::current_num_threads()
            .min(total / MIN_PER_THREAD)
            .max(1);
        self.planes.div_ceil(tasks * 4).max(1)
    }
}

/// One plane's pooling: `y` from `x`, and the argmax (index into the plane) into `arg`
/// when it is not empty.
pub(crate) fn pool_plane<T: Elem>(
    g: &Geometry,
    how: Reduce,
    x: &[T],
    y: &mut [T],
    arg: &mut [u32],
) {
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    let (w, (oh, ow)) = (g.hw.1, g.out);
    let x = &x[..g.in_len()];
    let y = &mut y[..oh * ow];
    let scale = T::from_f64(1.0 / (kh * kw) as f64);
    if how == Reduce::Max && (kh, kw) == (2, 2) {
        return max_2x2(g, x, y, arg);
    }
    for oy in 0..oh {
        for ox in 0..ow {
            let base = oy * sh * w + ox * sw;
            let o = oy * ow + ox;
            match how {
                Reduce::Max => {
                    // Selects, not branches: on real data the comparison's outcome is
                    // unpredictable.
                    let (mut m, mut at) = (T::NEG_INFINITY, base);
                    for i in 0..kh {
                        let row = base + i * w;
                        for (j, &v) in x[row..row + kw].iter().enumerate() {
                            let take = (v > m) | v.is_nan();
                            m = T::select(take, v, m);
                            let mask = usize::from(take).wrapping_neg();
                            at = (at & !mask) | ((row + j) & mask);
                        }
                    }
                    y[o] = m;
                    if let Some(slot) = arg.get_mut(o) {
                        *slot = at as u32;
                    }
                }
                Reduce::Mean => {
                    let mut s = T::ZERO;
                    for i in 0..kh {
                        let row = base + i * w;
                        for &v in &x[row..row + kw] {
                            s += v;
                        }
                    }
                    y[o] = s * scale;
                }
            }
        }
    }
}

/// [`pool_plane`] for 2×2 max windows (the common case), unrolled: a quarter of the
/// instructions of the general loop.
fn max_2x2<T: Elem>(g: &Geometry, x: &[T], y: &mut [T], arg: &mut [u32]) {
    let (sh, sw) = g.stride;
    let (w, (oh, ow)) = (g.hw.1, g.out);
    for oy in 0..oh {
        let (r0, r1) = (&x[oy * sh * w..][..w], &x[(oy * sh + 1) * w..][..w]);
        let yrow = &mut y[oy * ow..][..ow];
        // PyTorch's order and rule: row by row, a value wins when greater or NaN.
        for (ox, out) in yrow.iter_mut().enumerate() {
            let c = ox * sw;
            let (a, b, cc, d) = (r0[c], r0[c + 1], r1[c], r1[c + 1]);
            let tb = (b > a) | b.is_nan();
            let m1 = T::select(tb, b, a);
            let tc = (cc > m1) | cc.is_nan();
            let m2 = T::select(tc, cc, m1);
            let td = (d > m2) | d.is_nan();
            *out = T::select(td, d, m2);
        }
        if arg.is_empty() {
            continue;
        }
        // The winner's position, found again from the maximum by integer arithmetic on
        // comparisons (a separate loop keeps the one above vectorizable): the first value
        // equal to the maximum, or, when it is NaN, the last NaN (PyTorch's rule).
        let arow = &mut arg[oy * ow..][..ow];
        for (ox, (slot, &m)) in arow.iter_mut().zip(yrow.iter()).enumerate() {
            let c = ox * sw;
            let v = [r0[c], r0[c + 1], r1[c], r1[c + 1]];
            let ne = v.map(|v| u32::from(v != m));
            let first_equal = ne[0] * (1 + ne[1] * (1 + ne[2]));
            let nan = v.map(|v| u32::from(v.is_nan()));
            let last_nan = nan[3] * 3 + (1 - nan[3]) * (nan[2] * 2 + (1 - nan[2]) * nan[1]);
            let is_nan = u32::from(m.is_nan());
            let k = is_nan * last_nan + (1 - is_nan) * first_equal;
            *slot = (oy * sh * w + c) as u32 + (k >> 1) * w as u32 + (k & 1);
        }
    }
}

/// The forward pass over all planes; the argmax too when `keep_argmax` (max pooling).
fn forward<T: Elem>(g: &Geometry, how: Reduce, x: &[T], keep_argmax: bool) -> (Vec<T>, Vec<u32>) {
    let mut y = vec![T::ZERO; g.planes * g.out_len()];
    let mut arg = vec![0u32; if keep_argmax { y.len() } else { 0 }];
    let per = g.planes_per_task();
    let (ol, il) = (g.out_len(), g.in_len());
    if keep_argmax {
        y.par_chunks_mut(per * ol)
            .zip(arg.par_chunks_mut(per * ol))
            .zip(x.par_chunks(per * il))
            .for_each(|((ys, args), xs)| {
                for ((yp, ap), xp) in ys
                    .chunks_exact_mut(ol)
                    .zip(args.chunks_exact_mut(ol))
                    .zip(xs.chunks_exact(il))
                {
                    pool_plane(g, how, xp, yp, ap);
                }
            });
    } else {
        y.par_chunks_mut(per * ol)
            .zip(x.par_chunks(per * il))
            .for_each(|(ys, xs)| {
                for (yp, xp) in ys.chunks_exact_mut(ol).zip(xs.chunks_exact(il)) {
                    pool_plane(g, how, xp, yp, &mut []);
                }
            });
    }
    (y, arg)
}

/// The input gradient from the output gradient `gy`: scattered to the argmax (max) or
/// spread over the window (mean).
fn backward<T: Elem>(g: &Geometry, how: Reduce, gy: &[T], arg: &[u32]) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.planes * g.in_len()];
    let per = g.planes_per_task();
    let (ol, il) = (g.out_len(), g.in_len());
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    let w = g.hw.1;
    let scale = T::from_f64(1.0 / (kh * kw) as f64);
    dx.par_chunks_mut(per * il)
        .zip(gy.par_chunks(per * ol))
        .enumerate()
        .for_each(|(t, (dxs, gys))| {
            for (p, (dp, gp)) in dxs
                .chunks_exact_mut(il)
                .zip(gys.chunks_exact(ol))
                .enumerate()
            {
                match how {
                    Reduce::Max => {
                        let start = (t * per + p) * ol;
                        for (&gv, &at) in gp.iter().zip(&arg[start..start + ol]) {
                            dp[at as usize] += gv;
                        }
                    }
                    Reduce::Mean => {
                        for (oy, grow) in gp.chunks_exact(g.out.1).enumerate() {
                            for (ox, &gv) in grow.iter().enumerate() {
                                let v = gv * scale;
                                let (y0, x0) = (oy * sh, ox * sw);
                                for i in y0..y0 + kh {
                                    for d in &mut dp[i * w + x0..][..kw] {
                                        *d += v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
    dx
}

/// The pooling node; holds the argmax between forward and backward.
struct PoolNode {
    geometry: Geometry,
    how: Reduce,
    /// Whether to keep the argmax (only when a backward pass can follow).
    keep_argmax: bool,
    argmax: OnceLock<Vec<u32>>,
}

impl CustomOp1 for PoolNode {
    fn name(&self) -> &'static str {
        match self.how {
            Reduce::Max => "taper-max-pool2d",
            Reduce::Mean => "taper-avg-pool2d",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let shape = {
            let d = l.shape().dims();
            Shape::from((d[0], d[1], g.out.0, g.out.1))
        };
        let keep = self.keep_argmax && self.how == Reduce::Max;
        float_dispatch!(s.dtype(), self.name(), T => {
            let x = slice_of::<T>(s, l, g.planes * g.in_len())?;
            let (y, arg) = forward(g, self.how, x, keep);
            if keep && self.argmax.set(arg).is_err() {
                candle_core::bail!("taper-max-pool2d: forward ran twice");
            }
            Ok((T::to_cpu_storage_owned(y), shape))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = &self.geometry;
        let arg: &[u32] = match self.how {
            Reduce::Max => match self.argmax.get() {
                Some(a) => a,
                None => candle_core::bail!("taper-max-pool2d: backward without a forward"),
            },
            Reduce::Mean => &[],
        };
        let dx = float_dispatch!(x.dtype(), self.name(), T => {
            let dx = with_slice::<T, _>(grad, |gy| backward(g, self.how, gy, arg))?;
            tensor_from(dx, x.shape())?
        });
        Ok(Some(dx))
    }
}

/// Pooling of `x` (n, c, h, w) through the CPU kernel when it applies
/// ([`float_kernel_applies`]); `None` elsewhere. The caller has checked that the windows fit.
pub(crate) fn pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    how: Reduce,
) -> candle_core::Result<Option<Tensor>> {
    if !float_kernel_applies(&[x]) {
        return Ok(None);
    }
    let (n, c, h, w) = x.dims4()?;
    let geometry = Geometry {
        planes: n * c,
        hw: (h, w),
        kernel,
        stride,
        out: ((h - kernel.0) / stride.0 + 1, (w - kernel.1) / stride.1 + 1),
    };
    if geometry.in_len() > u32::MAX as usize {
        return Ok(None);
    }
    let node = PoolNode {
        geometry,
        how,
        keep_argmax: x.track_op(),
        argmax: OnceLock::new(),
    };
    Ok(Some(x.contiguous()?.apply_op1(node)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_keeps_the_first_maximum_and_nan_and_scatters_to_it() {
        // One 3×4 plane, 2×2 windows every (1, 2): outputs (2, 2).
        let g = Geometry {
            planes: 1,
            hw: (3, 4),
            kernel: (2, 2),
            stride: (1, 2),
            out: (2, 2),
        };
        let x = [
            1.0,
            5.0,
            2.0,
            2.0,
            5.0,
            0.0,
            f64::NAN,
            1.0,
            0.0,
            0.0,
            3.0,
            9.0,
        ];
        let (y, arg) = forward(&g, Reduce::Max, &x, true);
        assert_eq!(arg, [1, 6, 4, 6]);
        assert_eq!((y[0], y[2]), (5.0, 5.0));
        assert!(y[1].is_nan() && y[3].is_nan());
        let dx = backward(&g, Reduce::Max, &[1.0, 2.0, 3.0, 4.0], &arg);
        assert_eq!(
            dx,
            [0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        let (m, _) = forward(&g, Reduce::Mean, &[1.0; 12], false);
        assert_eq!(m, [1.0; 4]);
        let dm = backward(&g, Reduce::Mean, &[4.0; 4], &[]);
        assert_eq!(
            dm,
            [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
        );
    }
}
