//! `BatchNorm2d` followed by `MaxPool2d` (and optionally ReLU) as one autograd node on the
//! CPU, in f32 and f64: what `Sequential` runs for `BatchNorm2d → ReLU → MaxPool2d`,
//! `BatchNorm2d → MaxPool2d → ReLU` and `BatchNorm2d → MaxPool2d`, when the normalization
//! has its affine parameters.
//!
//! The layer computes the statistics (and updates its running ones) as for the plain node;
//! then, per (sample, channel) plane: the plane is normalized into a scratch buffer
//! (y = a·x + b, as `batch_norm.rs` does), max-pooled with its argmax kept, and passed
//! through the ReLU. The normalized full-size tensor never exists, so candle allocates,
//! zero-fills and adds no accumulator for it.
//!
//! Backward, per plane: the pooled gradient (zero where the ReLU's output is not positive)
//! is scattered to its argmax in a zeroed scratch plane, which is the normalization's output
//! gradient G for that plane. Its sums and the input gradient dx = k·G + a·x + b are those
//! of `batch_norm.rs`, computed the same way in the same order, so values and gradients
//! equal those of the separate nodes bit for bit.

use candle_core::backend::BackendStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::batch_norm::{self, input_grad_block, normalize_block, Normalization};
use super::conv::relu;
use super::conv_pool::{KeptArgmax, Pooling};
use super::gemm::Elem;
use super::pool::{self, Reduce};
use super::{float_kernel_applies, slice_of, with_slice, GradTensors, Grads};

/// The node: x (n, c, h, w), γ and β.
struct BatchNormPoolNode {
    bn: batch_norm::Geometry,
    norm: Normalization,
    /// One plane's pooling (`planes` is n·c).
    pool: pool::Geometry,
    relu: bool,
    argmax: KeptArgmax,
}

impl BatchNormPoolNode {
    /// The forward pass: the pooled output, and the argmax of every output (its index in
    /// its plane) when kept.
    fn forward<T: Elem>(&self, x: &[T], affine: (&[T], &[T])) -> (Vec<T>, Vec<u32>) {
        let pg = &self.pool;
        let (il, ol) = (pg.in_len(), pg.out_len());
        let mut y = vec![T::ZERO; pg.planes * ol];
        let mut arg = vec![0u32; if self.argmax.keep { y.len() } else { 0 }];
        let args: Vec<&mut [u32]> = if self.argmax.keep {
            arg.chunks_mut(ol).collect()
        } else {
            (0..pg.planes).map(|_| &mut [][..]).collect()
        };
        y.par_chunks_mut(ol)
            .zip(args)
            .zip(x.par_chunks(il))
            .enumerate()
            .for_each(|(i, ((yp, ap), xp))| {
                let coef = self.norm.coefficients(i % self.bn.c, Some(affine));
                T::with_scratch(il, |plane| {
                    normalize_block(plane, xp, coef);
                    pool::pool_plane(pg, Reduce::Max, plane, yp, ap);
                });
                if self.relu {
                    relu(yp);
                }
            });
        (y, arg)
    }

    /// Plane `i`'s output gradient G, from the pooled gradient `gy` and the node's output
    /// `y` (for the ReLU's mask), into `plane`.
    fn scatter<T: Elem>(&self, i: usize, gy: &[T], y: &[T], argmax: &[u32], plane: &mut [T]) {
        let ol = self.pool.out_len();
        let at = i * ol..(i + 1) * ol;
        plane.fill(T::ZERO);
        for ((&gv, &yv), &a) in gy[at.clone()].iter().zip(&y[at.clone()]).zip(&argmax[at]) {
            let pass = !self.relu || yv > T::ZERO;
            plane[a as usize] += T::select(pass, gv, T::ZERO);
        }
    }

    /// The backward pass: (ΣG, ΣG·x̂) per channel, then dx, each plane's G rebuilt in
    /// scratch where it is needed.
    fn backward<T: Elem>(
        &self,
        (x, gy, y): (&[T], &[T], &[T]),
        gamma: &[T],
        argmax: &[u32],
        want_x: bool,
    ) -> Grads<T> {
        let (g, il) = (&self.bn, self.pool.in_len());
        let sums: Vec<(f64, f64)> = (0..g.c)
            .into_par_iter()
            .map(|c| {
                T::with_scratch(il, |plane| {
                    let (mut sg, mut sgx) = (0.0, 0.0);
                    for n in 0..g.n {
                        let i = n * g.c + c;
                        self.scatter(i, gy, y, argmax, plane);
                        let (a, b) = self.norm.block_sums(c, plane, &x[i * il..][..il]);
                        sg += a;
                        sgx += b;
                    }
                    (sg, sgx)
                })
            })
            .collect();
        let dx = want_x.then(|| {
            let m = (g.n * g.s) as f64;
            let mut dx = vec![T::ZERO; x.len()];
            dx.par_chunks_mut(il)
                .zip(x.par_chunks(il))
                .enumerate()
                .for_each(|(i, (db, xb))| {
                    let c = i % g.c;
                    let coef = self.norm.grad_coefficients(c, Some(gamma), sums[c], m);
                    T::with_scratch(il, |plane| {
                        self.scatter(i, gy, y, argmax, plane);
                        input_grad_block(db, plane, xb, coef, self.norm.batch_stats);
                    });
                });
            dx
        });
        Grads {
            x: dx,
            w: Some(sums.iter().map(|s| T::from_f64(s.1)).collect()),
            b: Some(sums.iter().map(|s| T::from_f64(s.0)).collect()),
        }
    }
}

impl CustomOp3 for BatchNormPoolNode {
    fn name(&self) -> &'static str {
        "taper-batch-norm-max-pool2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, pg) = (&self.bn, &self.pool);
        let shape = Shape::from((g.n, g.c, pg.out.0, pg.out.1));
        float_dispatch!(xs.dtype(), self.name(), T => {
            let x = slice_of::<T>(xs, xl, g.n * g.c * g.s)?;
            let affine = (slice_of::<T>(ws, wl, g.c)?, slice_of::<T>(bs, bl, g.c)?);
            let (y, arg) = self.forward(x, affine);
            self.argmax.store(arg, self.name())?;
            Ok((T::to_cpu_storage_owned(y), shape))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<GradTensors> {
        let argmax = self.argmax.get(self.name())?;
        let grad = grad.contiguous()?;
        let c = Shape::from(self.bn.c);
        float_dispatch!(x.dtype(), self.name(), T => {
            let gamma: Vec<T> = w.flatten_all()?.to_vec1()?;
            let grads = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(&grad, |gy| {
                    with_slice::<T, _>(res, |y| {
                        self.backward((xs, gy, y), &gamma, argmax, x.track_op())
                    })
                })
            })???;
            let (dx, dw, db) = grads.into_tensors(x.shape(), &c, &c)?;
            Ok((dx, dw.filter(|_| w.track_op()), db.filter(|_| b.track_op())))
        })
    }
}

/// Batch normalization of `x` (n, c, h, w) with `norm` and the affine parameters, then max
/// pooling (and a ReLU), as one node, when Taper's CPU kernels apply
/// ([`float_kernel_applies`]) and the window fits; `None` elsewhere.
pub(crate) fn batch_norm_max_pool2d(
    x: &Tensor,
    norm: impl FnOnce() -> candle_core::Result<Normalization>,
    (w, b): (&Tensor, &Tensor),
    pooling: Pooling,
) -> candle_core::Result<Option<Tensor>> {
    if x.rank() != 4 || !float_kernel_applies(&[x, w, b]) {
        return Ok(None);
    }
    let (n, c, h, wd) = x.dims4()?;
    let ((kh, kw), (sh, sw)) = (pooling.kernel, pooling.stride);
    let fits = kh > 0 && kw > 0 && sh > 0 && sw > 0 && h >= kh && wd >= kw;
    if !fits || h * wd > u32::MAX as usize {
        return Ok(None);
    }
    let pool = pool::Geometry {
        planes: n * c,
        hw: (h, wd),
        kernel: pooling.kernel,
        stride: pooling.stride,
        out: ((h - kh) / sh + 1, (wd - kw) / sw + 1),
    };
    let node = BatchNormPoolNode {
        bn: batch_norm::Geometry { n, c, s: h * wd },
        norm: norm()?,
        pool,
        relu: pooling.relu,
        argmax: KeptArgmax::new(x.track_op() || w.track_op() || b.track_op()),
    };
    let (w, b) = (w.contiguous()?, b.contiguous()?);
    Ok(Some(x.contiguous()?.apply_op3(&w, &b, node)?))
}
