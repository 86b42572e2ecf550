//! `Conv2d` followed by `MaxPool2d` (and optionally ReLU) as one autograd node on the CPU,
//! in f32 and f64: what `Sequential` runs for `Conv2d → ReLU → MaxPool2d`,
//! `Conv2d → MaxPool2d → ReLU` and `Conv2d → MaxPool2d`.
//!
//! Forward, per sample: the convolution's output (o, oh, ow) is computed into a scratch
//! buffer ([`conv::forward_sample`]), pooled plane by plane ([`pool::pool_plane`], which
//! remembers each window's argmax), and the ReLU, when there is one, is applied to the
//! pooled values (max pooling and ReLU commute, see `Sequential`). The full-size
//! convolution output is never a tensor: the graph holds only the pooled output, so
//! candle's backward allocates, zero-fills and adds no accumulator for it, and no pass
//! writes or reads it outside the cache.
//!
//! Backward, per sample: the pooled gradient, masked by the ReLU (y > 0), is scattered to
//! the argmax positions of a zeroed (o, oh, ow) scratch buffer, which is the convolution's
//! output gradient, and the convolution's backward runs on it ([`conv::backward_from`]).
//!
//! Values and gradients are exactly those of the separate `Conv2d`, `MaxPool2d` and ReLU
//! kernels (tests compare them bit for bit).

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::conv::{self, relu, OutGrad};
use super::gemm::Elem;
use super::pool::{self, Reduce};
use super::{float_kernel_applies, slice_of, with_slice, GradTensors};

/// The pooling (and ReLU) after the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pooling {
    /// Max-pool window (kh, kw).
    pub kernel: (usize, usize),
    /// Max-pool stride (sh, sw).
    pub stride: (usize, usize),
    /// Whether a ReLU follows (or precedes: they commute) the pooling.
    pub relu: bool,
}

/// The argmax a fused pooling node's forward pass leaves for its backward pass: kept only
/// when a backward pass can follow, set once.
pub(crate) struct KeptArgmax {
    /// Whether a backward pass can follow (any input is tracked).
    pub keep: bool,
    cell: OnceLock<Vec<u32>>,
}

impl KeptArgmax {
    /// Kept when `keep`.
    pub(crate) fn new(keep: bool) -> Self {
        KeptArgmax {
            keep,
            cell: OnceLock::new(),
        }
    }

    /// Stores the forward pass's argmax when kept; an error naming `node` if it ran twice.
    pub(crate) fn store(&self, arg: Vec<u32>, node: &str) -> candle_core::Result<()> {
        if self.keep && self.cell.set(arg).is_err() {
            candle_core::bail!("{node}: forward ran twice");
        }
        Ok(())
    }

    /// The stored argmax; an error naming `node` before a forward pass.
    pub(crate) fn get(&self, node: &str) -> candle_core::Result<&[u32]> {
        match self.cell.get() {
            Some(a) => Ok(a),
            None => candle_core::bail!("{node}: backward without a forward"),
        }
    }
}

/// The pooling of one sample's convolution output: `o` planes of (oh, ow).
fn plane_geometry(g: &conv::Geometry, p: &Pooling) -> Option<pool::Geometry> {
    let ((kh, kw), (sh, sw)) = (p.kernel, p.stride);
    let fits = kh > 0 && kw > 0 && sh > 0 && sw > 0 && g.oh >= kh && g.ow >= kw;
    (fits && g.oh * g.ow <= u32::MAX as usize).then(|| pool::Geometry {
        planes: g.o,
        hw: (g.oh, g.ow),
        kernel: p.kernel,
        stride: p.stride,
        out: ((g.oh - kh) / sh + 1, (g.ow - kw) / sw + 1),
    })
}

/// The forward pass: the pooled output (n, o, ph, pw), and the argmax of every output
/// (its index in its (oh, ow) plane) when `keep_argmax`.
fn forward<T: Elem>(
    g: &conv::Geometry,
    pg: &pool::Geometry,
    relu_after: bool,
    (x, w, b): (&[T], &[T], Option<&[T]>),
    keep_argmax: bool,
) -> (Vec<T>, Vec<u32>) {
    let out_len = g.o * pg.out_len();
    let mut y = vec![T::ZERO; g.n * out_len];
    let mut arg = vec![0u32; if keep_argmax { y.len() } else { 0 }];
    let per = g.samples_per_task();
    let arg_chunk = if keep_argmax {
        per * out_len
    } else {
        usize::MAX
    };
    let args: Vec<&mut [u32]> = if keep_argmax {
        arg.chunks_mut(arg_chunk).collect()
    } else {
        (0..g.n.div_ceil(per)).map(|_| &mut [][..]).collect()
    };
    y.par_chunks_mut(per * out_len)
        .zip(args)
        .zip(x.par_chunks(per * g.x_len()))
        .for_each(|((ys, args), xs)| {
            let (cols_len, yt_len) = conv::forward_scratch(g);
            T::with_scratch(cols_len + yt_len + g.o * g.p(), |buf| {
                let (cols, rest) = buf.split_at_mut(cols_len);
                let (yt, conv_out) = rest.split_at_mut(yt_len);
                for (s, (yn, xn)) in ys
                    .chunks_exact_mut(out_len)
                    .zip(xs.chunks_exact(g.x_len()))
                    .enumerate()
                {
                    conv::forward_sample(g, conv_out, xn, w, b, (&mut *cols, &mut *yt));
                    let an: &mut [u32] = if keep_argmax {
                        &mut args[s * out_len..][..out_len]
                    } else {
                        &mut []
                    };
                    pool_sample(pg, conv_out, yn, an);
                    if relu_after {
                        relu(yn);
                    }
                }
            })
        });
    (y, arg)
}

/// Max-pools one sample's convolution output, plane by plane, into `yn` (and its argmax
/// into `an` unless it is empty).
fn pool_sample<T: Elem>(pg: &pool::Geometry, conv_out: &[T], yn: &mut [T], an: &mut [u32]) {
    let (il, ol) = (pg.in_len(), pg.out_len());
    for (c, (plane, yp)) in conv_out
        .chunks_exact(il)
        .zip(yn.chunks_exact_mut(ol))
        .enumerate()
    {
        let ap: &mut [u32] = if an.is_empty() {
            &mut []
        } else {
            &mut an[c * ol..][..ol]
        };
        pool::pool_plane(pg, Reduce::Max, plane, yp, ap);
    }
}

/// The convolution's output gradient, sample by sample, from the pooled gradient: each
/// pooled gradient (zero where the ReLU's output is not positive) goes to its window's
/// argmax.
struct Scattered<'a, T> {
    pg: pool::Geometry,
    /// The pooled output gradient (n, o, ph, pw).
    gy: &'a [T],
    /// The node's output, for the ReLU's mask (`None` without a ReLU).
    y: Option<&'a [T]>,
    argmax: &'a [u32],
}

impl<T: Elem> OutGrad<T> for Scattered<'_, T> {
    fn scratch_len(&self) -> usize {
        self.pg.planes * self.pg.in_len()
    }

    fn sample<'a>(&'a self, n: usize, buf: &'a mut [T]) -> &'a [T] {
        let (il, ol) = (self.pg.in_len(), self.pg.out_len());
        let len = self.pg.planes * ol;
        let (gy, arg) = (&self.gy[n * len..][..len], &self.argmax[n * len..][..len]);
        buf.fill(T::ZERO);
        for (c, plane) in buf.chunks_exact_mut(il).enumerate() {
            let at = c * ol..(c + 1) * ol;
            for (i, (&gv, &a)) in gy[at.clone()].iter().zip(&arg[at]).enumerate() {
                let pass = self.y.is_none_or(|y| y[n * len + c * ol + i] > T::ZERO);
                plane[a as usize] += T::select(pass, gv, T::ZERO);
            }
        }
        buf
    }
}

/// The fused node: x, weight and bias (a zero-length stand-in when the layer has none).
struct ConvPoolNode {
    conv: conv::Geometry,
    pool: pool::Geometry,
    relu: bool,
    has_bias: bool,
    argmax: KeptArgmax,
}

impl CustomOp3 for ConvPoolNode {
    fn name(&self) -> &'static str {
        "taper-conv2d-max-pool2d"
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
        let (g, pg) = (&self.conv, &self.pool);
        let shape = Shape::from((g.n, g.o, pg.out.0, pg.out.1));
        float_dispatch!(xs.dtype(), self.name(), T => {
            let x = slice_of::<T>(xs, xl, g.n * g.x_len())?;
            let w = slice_of::<T>(ws, wl, g.o * g.k())?;
            let b = if self.has_bias { Some(slice_of::<T>(bs, bl, g.o)?) } else { None };
            let (y, arg) = forward(g, pg, self.relu, (x, w, b), self.argmax.keep);
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
        let g = &self.conv;
        let want = (x.track_op(), w.track_op(), self.has_bias && b.track_op());
        let grad = grad.contiguous()?;
        float_dispatch!(x.dtype(), self.name(), T => {
            let grads = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(w, |ws| {
                    with_slice::<T, _>(&grad, |gy| {
                        with_slice::<T, _>(res, |y| {
                            let out = Scattered {
                                pg: self.pool,
                                gy,
                                y: self.relu.then_some(y),
                                argmax,
                            };
                            conv::backward_from(g, xs, ws, &out, want)
                        })
                    })
                })
            })????;
            let (dx, dw, db) = grads.into_tensors(x.shape(), w.shape(), &Shape::from(g.o))?;
            Ok((dx, dw, db.filter(|_| self.has_bias)))
        })
    }
}

/// The convolution of `x` by `w` (and `b`), max-pooled (and passed through a ReLU), as one
/// node through the CPU kernels when they apply ([`float_kernel_applies`]) and the pooling
/// window fits the convolution's output; `None` elsewhere (the caller then runs the
/// layers one by one). `geometry` describes `x` and `w`.
pub(crate) fn conv2d_max_pool2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    geometry: conv::Geometry,
    pooling: Pooling,
) -> candle_core::Result<Option<Tensor>> {
    let applies = match b {
        Some(b) => float_kernel_applies(&[x, w, b]),
        None => float_kernel_applies(&[x, w]),
    };
    let Some(pool) = plane_geometry(&geometry, &pooling).filter(|_| applies) else {
        return Ok(None);
    };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let has_bias = b.is_some();
    // A layer without a bias passes an empty, untracked stand-in as the third input.
    let b = match b {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(0, x.dtype(), x.device())?,
    };
    let node = ConvPoolNode {
        conv: geometry,
        pool,
        relu: pooling.relu,
        has_bias,
        argmax: KeptArgmax::new(x.track_op() || w.track_op() || b.track_op()),
    };
    Ok(Some(x.apply_op3(&w, &b, node)?))
}
