//! `Conv2d` on the CPU as one autograd node: im2col into single-threaded gemm calls, one
//! block of samples per thread, in f32 and f64.
//!
//! Forward, per sample and group: the input's windows are unrolled into a (C/g·kh·kw) ×
//! (OH·OW) matrix (`im2col`; skipped for 1×1 convolutions with stride 1 and no padding),
//! and y = W·cols plus the bias (computed as yᵀ = colsᵀ·Wᵀ when that spares gemm a copy of
//! cols, see [`Geometry::forward_transposed`]). Backward, per sample and group, from the
//! output gradient G (O/g × OH·OW):
//! - weight: dWᵀ += cols·Gᵀ, with cols unrolled again (cheaper than keeping every sample's
//!   cols alive between forward and backward: for the benchmark CNN that would be 25 MB);
//! - bias: row sums of G;
//! - input, only when the input is tracked (never for the data batch): dcols = Wᵀ·G, then
//!   `col2im` adds each column back to the pixels it came from.
//!
//! With stride 1 and "same" padding (the output as wide as the input), each row of cols is
//! the input plane shifted by a constant, so `im2col` and `col2im` move one contiguous span
//! per row instead of one short run per output row.
//!
//! With a fused ReLU (`Sequential` runs `Conv2d → ReLU` so), each sample's output passes
//! through the ReLU while it is in cache, and the backward takes G as the node's gradient
//! masked by y > 0 (the `Masked` source), as the ReLU node would pass it.
//!
//! Each thread keeps its own weight- and bias-gradient sums, added at the end, so threads
//! never share an output. The unrolled matrices live in one scratch buffer per thread, kept
//! between calls (`Elem::with_scratch`), so a step allocates only the tensors it returns.

use candle_core::backend::BackendStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul_serial, Elem, View};
use super::{float_kernel_applies, slice_of, with_slice, GradTensors, Grads};

/// Multiply-adds below which a convolution runs on one thread.
const MIN_WORK_PER_THREAD: usize = 1 << 18;

/// The shapes of one convolution: input (n, c, h, w), weight (o, c/groups, kh, kw),
/// output (n, o, oh, ow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both dimensions).
    pub stride: usize,
    /// Zero padding (every side).
    pub pad: usize,
    /// Dilation (both dimensions).
    pub dil: usize,
    /// Channel groups.
    pub groups: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Geometry {
    /// The geometry of `x` (n, c, h, w) convolved with a weight (o, c/groups, kh, kw);
    /// `None` when the window does not fit inside the padded input or a size is zero.
    pub(crate) fn new(
        x: (usize, usize, usize, usize),
        weight: (usize, usize, usize, usize),
        (stride, pad, dil, groups): (usize, usize, usize, usize),
    ) -> Option<Self> {
        let (n, c, h, w) = x;
        let (o, cg, kh, kw) = weight;
        if stride == 0 || dil == 0 || groups == 0 || cg * groups != c || o % groups != 0 {
            return None;
        }
        let out = |size: usize, k: usize| {
            let span = dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
            let padded = size.checked_add(pad.checked_mul(2)?)?;
            (size > 0 && k > 0 && padded >= span).then(|| (padded - span) / stride + 1)
        };
        Some(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad,
            dil,
            groups,
            oh: out(h, kh)?,
            ow: out(w, kw)?,
        })
    }

    /// Input channels per group.
    pub(crate) fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub(crate) fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of the unrolled matrix: C/g·kh·kw.
    pub(crate) fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output pixels per channel: OH·OW.
    pub(crate) fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Elements of one input sample.
    pub(crate) fn x_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Elements of one output sample.
    pub(crate) fn y_len(&self) -> usize {
        self.o * self.p()
    }

    /// Whether the unrolled matrix is the input itself (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Whether the forward product is computed as yᵀ = colsᵀ·Wᵀ and transposed into y,
    /// rather than as y = W·cols. The gemm crate works on the transposed problem
    /// (colsᵀ·Wᵀ) either way, and uses colsᵀ in place only when its row count OH·OW is a
    /// multiple of the SIMD width (16 f32 lanes); otherwise it copies all of cols into a
    /// packed buffer first. Asking for yᵀ makes the small weight the operand it packs, for
    /// the price of transposing an output of O/g·OH·OW elements.
    fn forward_transposed(&self) -> bool {
        self.p() % 16 != 0
    }

    /// Samples per task: all in one task for small work, else about four tasks per thread,
    /// so a thread that falls behind (a busy core) is helped by the others.
    pub(crate) fn samples_per_task(&self) -> usize {
        let work = self.n * self.o * self.k() * self.p();
        let tasks = (4 * rayon::current_num_threads())
            .min(work / MIN_WORK_PER_THREAD)
            .clamp(1, self.n.max(1));
        self.n.div_ceil(tasks).max(1)
    }

    /// The output positions `lo..hi` along one axis whose input index `o·stride + offset`
    /// falls inside `0..size`.
    fn valid(&self, offset: isize, outs: usize, size: usize) -> (usize, usize) {
        let s = self.stride as isize;
        let lo = if offset >= 0 {
            0
        } else {
            (-offset + s - 1) / s
        };
        let hi = if size as isize <= offset {
            0
        } else {
            (size as isize - offset + s - 1) / s
        };
        let hi = (hi.max(0) as usize).min(outs);
        ((lo as usize).min(hi), hi)
    }
}

/// One row of the unrolled matrix: the window offset (`off_h`, `off_w`) and the output
/// positions it reads inside the input (`ys` rows, `xs` columns, from [`Geometry::valid`]).
#[derive(Clone, Copy)]
struct Tap {
    off_h: isize,
    off_w: isize,
    ys: (usize, usize),
    xs: (usize, usize),
}

impl Geometry {
    /// The window offset of kernel element (i, j), and the output positions it reads
    /// inside the input.
    fn tap(&self, i: usize, j: usize) -> Tap {
        let off_h = (i * self.dil) as isize - self.pad as isize;
        let off_w = (j * self.dil) as isize - self.pad as isize;
        Tap {
            off_h,
            off_w,
            ys: self.valid(off_h, self.oh, self.h),
            xs: self.valid(off_w, self.ow, self.w),
        }
    }

    /// Whether an unrolled row is its input plane shifted by a constant: stride 1 and the
    /// output as wide as the input ("same" padding). Output (oy, ox) then reads input
    /// element oy·w + ox + (off_h·w + off_w), so the rows inside the window are one
    /// contiguous span of the plane, apart from the columns that fall in the padding.
    fn is_shift(&self) -> bool {
        self.stride == 1 && self.ow == self.w
    }
}

impl Tap {
    /// For a shift geometry ([`Geometry::is_shift`]): the span `start..end` of the
    /// unrolled row that maps onto the input, and the offset from it to the input plane;
    /// `None` when the window lies wholly in the padding.
    fn span(&self, g: &Geometry) -> Option<(usize, usize, isize)> {
        let ((y_lo, y_hi), (x_lo, x_hi)) = (self.ys, self.xs);
        (y_lo < y_hi && x_lo < x_hi).then(|| {
            let start = y_lo * g.ow + x_lo;
            let end = (y_hi - 1) * g.ow + x_hi;
            (start, end, self.off_h * g.w as isize + self.off_w)
        })
    }

    /// For a shift geometry: zeroes the elements of the span that wrapped around from the
    /// next output row (columns in the left or right padding), a few elements each.
    fn zero_wrapped<T: Elem>(&self, g: &Geometry, row: &mut [T]) {
        let ((y_lo, y_hi), (x_lo, x_hi)) = (self.ys, self.xs);
        if x_lo == 0 && x_hi == g.ow {
            return;
        }
        for oy in y_lo..y_hi.saturating_sub(1) {
            for e in &mut row[oy * g.ow + x_hi..(oy + 1) * g.ow + x_lo] {
                // SAFETY: `e` is a valid, exclusive reference. The store is volatile only so
                // that the compiler keeps these few stores inline instead of calling
                // `memset`, whose call costs more than the stores.
                unsafe { std::ptr::write_volatile(e, T::ZERO) };
            }
        }
    }
}

/// Unrolls the windows of one group of one sample, `x` (C/g, h, w), into `cols`
/// (C/g·kh·kw rows of OH·OW), zeros where a window covers padding.
fn im2col<T: Elem>(g: &Geometry, x: &[T], cols: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    let mut rows = cols.chunks_exact_mut(p);
    for plane in x.chunks_exact(hw).take(g.cg()) {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let tap = g.tap(i, j);
                if g.is_shift() {
                    im2col_shift(g, &tap, plane, row);
                } else {
                    im2col_rows(g, &tap, plane, row);
                }
            }
        }
    }
}

/// One unrolled row of a shift geometry ([`Geometry::is_shift`]): one copy of the span
/// the window covers, then zeros over the padding.
fn im2col_shift<T: Elem>(g: &Geometry, tap: &Tap, plane: &[T], row: &mut [T]) {
    let Some((start, end, shift)) = tap.span(g) else {
        row.fill(T::ZERO);
        return;
    };
    row[..start].fill(T::ZERO);
    let from = (start as isize + shift) as usize;
    row[start..end].copy_from_slice(&plane[from..from + end - start]);
    row[end..].fill(T::ZERO);
    tap.zero_wrapped(g, row);
}

/// One unrolled row of any geometry, output row by output row.
fn im2col_rows<T: Elem>(g: &Geometry, tap: &Tap, plane: &[T], row: &mut [T]) {
    let ((y_lo, y_hi), (x_lo, x_hi)) = (tap.ys, tap.xs);
    for (oy, out) in row.chunks_exact_mut(g.ow).enumerate() {
        if oy < y_lo || oy >= y_hi {
            out.fill(T::ZERO);
            continue;
        }
        let iy = (oy * g.stride) as isize + tap.off_h;
        let src = &plane[iy as usize * g.w..][..g.w];
        out[..x_lo].fill(T::ZERO);
        out[x_hi..].fill(T::ZERO);
        let ix0 = ((x_lo * g.stride) as isize + tap.off_w) as usize;
        if g.stride == 1 {
            out[x_lo..x_hi].copy_from_slice(&src[ix0..ix0 + x_hi - x_lo]);
        } else {
            let taken = src[ix0..].iter().step_by(g.stride);
            for (o, &v) in out[x_lo..x_hi].iter_mut().zip(taken) {
                *o = v;
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every element of `cols` to the input pixel it was read
/// from, in `dx` (C/g, h, w). `cols` is scratch: a shift geometry zeroes its padding
/// columns first, so that one contiguous add per row is exact.
fn col2im<T: Elem>(g: &Geometry, cols: &mut [T], dx: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    let mut rows = cols.chunks_exact_mut(p);
    for plane in dx.chunks_exact_mut(hw).take(g.cg()) {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let tap = g.tap(i, j);
                if g.is_shift() {
                    col2im_shift(g, &tap, row, plane);
                } else {
                    col2im_rows(g, &tap, row, plane);
                }
            }
        }
    }
}

/// [`col2im`] for one row of a shift geometry.
fn col2im_shift<T: Elem>(g: &Geometry, tap: &Tap, row: &mut [T], plane: &mut [T]) {
    let Some((start, end, shift)) = tap.span(g) else {
        return;
    };
    tap.zero_wrapped(g, row);
    let from = (start as isize + shift) as usize;
    let dst = &mut plane[from..from + end - start];
    for (d, &v) in dst.iter_mut().zip(&row[start..end]) {
        *d += v;
    }
}

/// [`col2im`] for one row of any geometry, output row by output row.
fn col2im_rows<T: Elem>(g: &Geometry, tap: &Tap, row: &[T], plane: &mut [T]) {
    let ((y_lo, y_hi), (x_lo, x_hi)) = (tap.ys, tap.xs);
    for oy in y_lo..y_hi {
        let iy = (oy * g.stride) as isize + tap.off_h;
        let dst = &mut plane[iy as usize * g.w..][..g.w];
        let src = &row[oy * g.ow..][x_lo..x_hi];
        let ix0 = ((x_lo * g.stride) as isize + tap.off_w) as usize;
        if g.stride == 1 {
            // Contiguous: a plain zip vectorizes, where `step_by` stays one scalar add
            // per element.
            for (d, &v) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                *d += v;
            }
        } else {
            let targets = dst[ix0..].iter_mut().step_by(g.stride);
            for (d, &v) in targets.zip(src) {
                *d += v;
            }
        }
    }
}

/// The sum of `v`, in sixteen interleaved partial sums that the compiler keeps in vector
/// registers (a single running sum is one dependent add per element).
fn lane_sum<T: Elem>(v: &[T]) -> T {
    let mut acc = [T::ZERO; 16];
    let chunks = v.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    tail.iter()
        .fold(acc.iter().fold(T::ZERO, |s, &a| s + a), |s, &x| s + x)
}

/// ReLU as the CPU kernels compute it: `x < 0 ? 0 : x`, which keeps NaN (as torch.relu).
pub(crate) fn relu<T: Elem>(v: &mut [T]) {
    for x in v {
        *x = T::select(*x < T::ZERO, T::ZERO, *x);
    }
}

/// The forward pass: y (n, o, oh, ow) from x, the weight and an optional bias, passed
/// through a ReLU when `relu_after`.
pub(crate) fn forward<T: Elem>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    relu_after: bool,
) -> Vec<T> {
    let mut y = vec![T::ZERO; g.n * g.y_len()];
    let per = g.samples_per_task();
    let tasks = y
        .par_chunks_mut(per * g.y_len())
        .zip(x.par_chunks(per * g.x_len()));
    tasks.for_each(|(ys, xs)| {
        let (cols_len, yt_len) = forward_scratch(g);
        T::with_scratch(cols_len + yt_len, |buf| {
            let scratch = buf.split_at_mut(cols_len);
            forward_block(g, ys, xs, (w, b), scratch, relu_after)
        })
    });
    y
}

/// One task's share of the forward pass: the outputs `ys` of the samples `xs`, unrolling
/// each into `cols`, each sample's output passed through the ReLU while it is in cache.
fn forward_block<T: Elem>(
    g: &Geometry,
    ys: &mut [T],
    xs: &[T],
    (w, b): (&[T], Option<&[T]>),
    (cols, yt): (&mut [T], &mut [T]),
    relu_after: bool,
) {
    for (yn, xn) in ys
        .chunks_exact_mut(g.y_len())
        .zip(xs.chunks_exact(g.x_len()))
    {
        forward_sample(g, yn, xn, w, b, (&mut *cols, &mut *yt));
        if relu_after {
            relu(yn);
        }
    }
}

/// The scratch lengths one sample's forward pass needs: the unrolled input and, for
/// [`Geometry::forward_transposed`], the transposed output.
pub(crate) fn forward_scratch(g: &Geometry) -> (usize, usize) {
    let cols = if g.is_pointwise() { 0 } else { g.k() * g.p() };
    let yt = if g.forward_transposed() {
        g.og() * g.p()
    } else {
        0
    };
    (cols, yt)
}

/// One sample's output `yn` (o, oh, ow) from its input `xn`, with the scratch matrices
/// sized by [`forward_scratch`].
pub(crate) fn forward_sample<T: Elem>(
    g: &Geometry,
    yn: &mut [T],
    xn: &[T],
    w: &[T],
    b: Option<&[T]>,
    (cols, yt): (&mut [T], &mut [T]),
) {
    let (k, p, og) = (g.k(), g.p(), g.og());
    for grp in 0..g.groups {
        let xg = &xn[grp * g.cg() * g.h * g.w..][..g.cg() * g.h * g.w];
        let src: &[T] = if g.is_pointwise() {
            xg
        } else {
            im2col(g, xg, cols);
            cols
        };
        let yg = &mut yn[grp * og * p..][..og * p];
        let wg = View::row_major(&w[grp * og * k..], og, k);
        let cg = View::row_major(src, k, p);
        let bias = |o: usize| b.map_or(T::ZERO, |b| b[grp * og + o]);
        let done = if g.forward_transposed() {
            let done = cg
                .map(View::t)
                .zip(wg.map(View::t))
                .is_some_and(|(c, a)| matmul_serial(yt, c, a, false));
            for (o, row) in yg.chunks_exact_mut(p).enumerate() {
                let bv = bias(o);
                for (pp, y) in row.iter_mut().enumerate() {
                    *y = yt[pp * og + o] + bv;
                }
            }
            done
        } else {
            for (o, row) in yg.chunks_exact_mut(p).enumerate() {
                row.fill(bias(o));
            }
            wg.zip(cg)
                .is_some_and(|(a, c)| matmul_serial(yg, a, c, true))
        };
        debug_assert!(done, "conv forward: shapes checked by Geometry");
    }
}

/// Where each sample's output gradient G (o, oh, ow) comes from.
pub(crate) trait OutGrad<T: Elem>: Sync {
    /// Scratch elements [`OutGrad::sample`] needs per task.
    fn scratch_len(&self) -> usize;
    /// Sample `n`'s output gradient, in `buf` (of [`OutGrad::scratch_len`] elements) or
    /// borrowed from the gradient itself.
    fn sample<'a>(&'a self, n: usize, buf: &'a mut [T]) -> &'a [T];
}

/// The convolution's own output gradient (n, o, oh, ow), read in place.
struct Direct<'a, T> {
    gy: &'a [T],
    y_len: usize,
}

impl<T: Elem> OutGrad<T> for Direct<'_, T> {
    fn scratch_len(&self) -> usize {
        0
    }

    fn sample<'a>(&'a self, n: usize, _buf: &'a mut [T]) -> &'a [T] {
        &self.gy[n * self.y_len..][..self.y_len]
    }
}

/// The output gradient behind a fused ReLU: the node's gradient where its output `y` is
/// positive, zero elsewhere (the ReLU node's g·(y > 0)).
struct Masked<'a, T> {
    gy: &'a [T],
    y: &'a [T],
    y_len: usize,
}

impl<T: Elem> OutGrad<T> for Masked<'_, T> {
    fn scratch_len(&self) -> usize {
        self.y_len
    }

    fn sample<'a>(&'a self, n: usize, buf: &'a mut [T]) -> &'a [T] {
        let at = n * self.y_len..(n + 1) * self.y_len;
        for ((o, &g), &y) in buf.iter_mut().zip(&self.gy[at.clone()]).zip(&self.y[at]) {
            *o = T::select(y > T::ZERO, g, T::ZERO);
        }
        buf
    }
}

/// One task's share of the backward pass over the samples `first..first + count`: its
/// input-gradient block `dxs` is written in place, its weight- and bias-gradient sums are
/// returned.
#[allow(clippy::too_many_arguments)]
fn backward_block<T: Elem>(
    g: &Geometry,
    (first, count): (usize, usize),
    x: &[T],
    out: &dyn OutGrad<T>,
    w: &[T],
    dxs: Option<&mut [T]>,
    want_w: bool,
    want_b: bool,
) -> (Vec<T>, Vec<T>) {
    let (k, p) = (g.k(), g.p());
    let mut dw = vec![T::ZERO; if want_w { g.o * k } else { 0 }];
    let mut db = vec![T::ZERO; if want_b { g.o } else { 0 }];
    let cols_len = if want_w && !g.is_pointwise() {
        k * p
    } else {
        0
    };
    let dcols_len = if dxs.is_some() { k * p } else { 0 };
    let g_len = out.scratch_len();
    T::with_scratch(cols_len + dcols_len + g_len, |buf| {
        let (cols, rest) = buf.split_at_mut(cols_len);
        let (dcols, gbuf) = rest.split_at_mut(dcols_len);
        let mut dxs = dxs;
        for n in first..first + count {
            let xn = &x[n * g.x_len()..][..g.x_len()];
            let dxn = dxs
                .as_deref_mut()
                .map(|d| &mut d[(n - first) * g.x_len()..][..g.x_len()]);
            let gn = out.sample(n, gbuf);
            backward_sample(g, xn, gn, w, dxn, (&mut dw, &mut db), (cols, dcols));
        }
    });
    (transpose_groups(&dw, k, g.og()), db)
}

/// Each group's block of `dwt`, a (k × og) matrix, transposed to (og × k): the weight
/// gradient's layout, from the one [`backward_sample`] accumulates in.
fn transpose_groups<T: Elem>(dwt: &[T], k: usize, og: usize) -> Vec<T> {
    let mut dw = vec![T::ZERO; dwt.len()];
    for (src, dst) in dwt.chunks_exact(k * og).zip(dw.chunks_exact_mut(k * og)) {
        for (kk, row) in src.chunks_exact(og).enumerate() {
            for (o, &v) in row.iter().enumerate() {
                dst[o * k + kk] = v;
            }
        }
    }
    dw
}

/// One sample's share of the backward pass, from its output gradient `gn`: adds to the
/// weight gradient (kept transposed, (k × og) per group) and the bias gradient, and
/// writes the input gradient `dxn` when it is wanted.
fn backward_sample<T: Elem>(
    g: &Geometry,
    xn: &[T],
    gn: &[T],
    w: &[T],
    mut dxn: Option<&mut [T]>,
    (dw, db): (&mut [T], &mut [T]),
    (cols, dcols): (&mut [T], &mut [T]),
) {
    let (k, p, og) = (g.k(), g.p(), g.og());
    let (want_w, want_b) = (!dw.is_empty(), !db.is_empty());
    let gsz = g.cg() * g.h * g.w;
    for grp in 0..g.groups {
        let gg = &gn[grp * og * p..][..og * p];
        let g_view = View::row_major(gg, og, p);
        if want_w {
            let xg = &xn[grp * gsz..][..gsz];
            let src: &[T] = if g.is_pointwise() {
                xg
            } else {
                im2col(g, xg, cols);
                cols
            };
            // dWᵀ += cols·Gᵀ: gemm then reads cols in place as its broadcast operand and
            // packs only G, where dW += G·colsᵀ would copy all of cols first.
            let dwg = &mut dw[grp * og * k..][..og * k];
            let c_view = View::row_major(src, k, p);
            let done = c_view
                .zip(g_view.map(View::t))
                .is_some_and(|(c, a)| matmul_serial(dwg, c, a, true));
            debug_assert!(done, "conv weight gradient: shapes checked by Geometry");
        }
        if want_b {
            for (d, row) in db[grp * og..].iter_mut().zip(gg.chunks_exact(p)) {
                *d += lane_sum(row);
            }
        }
        if let Some(dx) = dxn.as_deref_mut() {
            let dxg = &mut dx[grp * gsz..][..gsz];
            let w_view = View::row_major(&w[grp * og * k..], og, k).map(View::t);
            let into: &mut [T] = if g.is_pointwise() { dxg } else { dcols };
            let done = w_view
                .zip(g_view)
                .is_some_and(|(a, c)| matmul_serial(into, a, c, false));
            debug_assert!(done, "conv input gradient: shapes checked by Geometry");
            if !g.is_pointwise() {
                col2im(g, dcols, dxg);
            }
        }
    }
}

/// The backward pass from the output gradient `gy` (n, o, oh, ow); with `relu_out`, the
/// output y of a fused ReLU, whose mask (y > 0) the gradient passes first.
pub(crate) fn backward<T: Elem>(
    g: &Geometry,
    (x, w): (&[T], &[T]),
    gy: &[T],
    relu_out: Option<&[T]>,
    want: (bool, bool, bool),
) -> Grads<T> {
    let y_len = g.y_len();
    match relu_out {
        Some(y) => backward_from(g, x, w, &Masked { gy, y, y_len }, want),
        None => backward_from(g, x, w, &Direct { gy, y_len }, want),
    }
}

/// The backward pass from any source of the output gradient ([`OutGrad`]): blocks of
/// samples in parallel, each with its own weight- and bias-gradient sums, added at the end.
pub(crate) fn backward_from<T: Elem>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    out: &dyn OutGrad<T>,
    (want_x, want_w, want_b): (bool, bool, bool),
) -> Grads<T> {
    let per = g.samples_per_task();
    let mut dx = want_x.then(|| vec![T::ZERO; g.n * g.x_len()]);
    let dx_blocks: Vec<Option<&mut [T]>> = match dx.as_mut() {
        Some(v) => v.chunks_mut(per * g.x_len()).map(Some).collect(),
        None => (0..g.n.div_ceil(per)).map(|_| None).collect(),
    };
    let sums = dx_blocks
        .into_par_iter()
        .enumerate()
        .map(|(t, dxs)| {
            let first = t * per;
            let block = (first, per.min(g.n - first));
            backward_block(g, block, x, out, w, dxs, want_w, want_b)
        })
        .reduce_with(|(mut dw, mut db), (dw2, db2)| {
            dw.iter_mut().zip(dw2).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(db2).for_each(|(a, b)| *a += b);
            (dw, db)
        });
    // An empty batch gives zero parameter gradients.
    let (dw, db) = sums.unwrap_or_else(|| (vec![T::ZERO; g.o * g.k()], vec![T::ZERO; g.o]));
    Grads {
        x: dx,
        w: want_w.then_some(dw),
        b: want_b.then_some(db),
    }
}

/// The convolution node: x, weight and (for [`CustomOp3`]) bias.
pub(crate) struct ConvNode {
    /// The checked shapes.
    pub geometry: Geometry,
    /// Whether a ReLU follows, in the same node.
    pub relu: bool,
}

impl ConvNode {
    /// The forward pass over CPU storages, with the bias when given.
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let shape = Shape::from((g.n, g.o, g.oh, g.ow));
        float_dispatch!(x.0.dtype(), "taper-conv2d", T => {
            let xs = slice_of::<T>(x.0, x.1, g.n * g.x_len())?;
            let ws = slice_of::<T>(w.0, w.1, g.o * g.k())?;
            let bs = match b {
                Some((s, l)) => Some(slice_of::<T>(s, l, g.o)?),
                None => None,
            };
            let y = forward(g, xs, ws, bs, self.relu);
            Ok((T::to_cpu_storage_owned(y), shape))
        })
    }

    /// The backward pass, computing only the gradients of tracked inputs; `res` is the
    /// node's output (the fused ReLU's mask).
    fn grads(
        &self,
        (x, w, b): (&Tensor, &Tensor, Option<&Tensor>),
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<GradTensors> {
        let g = &self.geometry;
        let want = (x.track_op(), w.track_op(), b.is_some_and(|b| b.track_op()));
        let grad = grad.contiguous()?;
        float_dispatch!(x.dtype(), "taper-conv2d", T => {
            let grads = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(w, |ws| {
                    with_slice::<T, _>(&grad, |gs| {
                        with_slice::<T, _>(res, |y| {
                            backward(g, (xs, ws), gs, self.relu.then_some(y), want)
                        })
                    })
                })
            })????;
            grads.into_tensors(x.shape(), w.shape(), &Shape::from(g.o))
        })
    }
}

impl CustomOp2 for ConvNode {
    fn name(&self) -> &'static str {
        "taper-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((xs, xl), (ws, wl), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = self.grads((x, w, None), res, grad)?;
        Ok((gx, gw))
    }
}

impl CustomOp3 for ConvNode {
    fn name(&self) -> &'static str {
        "taper-conv2d"
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
        self.run((xs, xl), (ws, wl), Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads((x, w, Some(b)), res, grad)
    }
}

/// The convolution (followed by a ReLU in the same node when `relu`) through the CPU
/// kernel when it applies ([`float_kernel_applies`]); `None` elsewhere. The shapes must
/// already be checked: `geometry` describes `x` and `w`.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    geometry: Geometry,
    relu: bool,
) -> candle_core::Result<Option<Tensor>> {
    let applies = match b {
        Some(b) => float_kernel_applies(&[x, w, b]),
        None => float_kernel_applies(&[x, w]),
    };
    if !applies {
        return Ok(None);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let node = ConvNode { geometry, relu };
    Ok(Some(match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, node)?,
        None => x.apply_op2(&w, node)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, in f64.
    fn direct(g: &Geometry, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let (cg, og) = (g.cg(), g.og());
        let mut y = vec![0.0; g.n * g.y_len()];
        for n in 0..g.n {
            for o in 0..g.o {
                let grp = o / og;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = b.map_or(0.0, |b| b[o]);
                        for ci in 0..cg {
                            let c = grp * cg + ci;
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let iy = (oy * g.stride + i * g.dil) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + j * g.dil) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                    s += xv * w[((o * cg + ci) * g.kh + i) * g.kw + j];
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + oy) * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 211) as f64 - 105.0) / 53.0)
            .collect()
    }

    #[test]
    fn forward_and_backward_match_the_definition_for_every_option() {
        // (x dims, weight dims, (stride, pad, dilation, groups))
        let cases = [
            ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1, 1, 1)),
            ((1, 2, 9, 8), (4, 2, 3, 2), (2, 0, 1, 1)),
            ((2, 4, 8, 9), (6, 2, 3, 3), (2, 2, 2, 2)),
            ((3, 2, 5, 5), (3, 2, 1, 1), (1, 0, 1, 1)),
            ((1, 3, 5, 4), (3, 1, 5, 4), (3, 2, 1, 3)),
            ((2, 1, 4, 4), (2, 1, 3, 3), (1, 3, 2, 1)),
            // "Same" geometries (stride 1, output as wide as the input), whose rows are
            // copied as one shifted span: dilated, with windows wholly in the padding, with
            // a 1-wide input, and with rows narrower than the padding.
            ((1, 2, 6, 5), (2, 2, 3, 3), (1, 2, 2, 1)),
            ((2, 2, 1, 5), (3, 2, 3, 3), (1, 1, 1, 1)),
            ((1, 1, 5, 1), (2, 1, 5, 5), (1, 2, 1, 1)),
            ((1, 4, 3, 2), (4, 2, 5, 5), (1, 4, 2, 2)),
            // OH·OW a multiple of 16: the forward product in its untransposed form.
            ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1, 1, 1)),
        ];
        for (xd, wd, opts) in cases {
            let g = Geometry::new(xd, wd, opts).unwrap();
            let x = values(g.n * g.x_len(), 1);
            let w = values(g.o * g.k(), 2);
            let b = values(g.o, 3);
            let want = direct(&g, &x, &w, Some(&b));
            let got = forward(&g, &x, &w, Some(&b), false);
            for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                assert!((a - e).abs() < 1e-12, "{xd:?} {wd:?} {opts:?} y[{i}]");
            }
            // Backward of sum(y·r) equals the directional derivatives of the definition.
            let r = values(want.len(), 4);
            let grads = backward(&g, (&x, &w), &r, None, (true, true, true));
            let dot = |y: &[f64]| y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>();
            let (dx, dw, db) = (grads.x.unwrap(), grads.w.unwrap(), grads.b.unwrap());
            // The map is linear in x (and in w), so a unit step gives the exact derivative.
            for i in (0..x.len()).step_by(7) {
                let mut e = vec![0.0; x.len()];
                e[i] = 1.0;
                let d = dot(&direct(&g, &e, &w, None));
                assert!((dx[i] - d).abs() < 1e-10, "{xd:?} {opts:?} dx[{i}]");
            }
            for i in 0..w.len() {
                let mut e = vec![0.0; w.len()];
                e[i] = 1.0;
                let d = dot(&direct(&g, &x, &e, None));
                assert!((dw[i] - d).abs() < 1e-10, "{xd:?} {opts:?} dw[{i}]");
            }
            for (o, &v) in db.iter().enumerate() {
                let mut e = vec![0.0; g.o];
                e[o] = 1.0;
                let d = dot(&direct(&g, &vec![0.0; x.len()], &w, Some(&e)));
                assert!((v - d).abs() < 1e-10, "db[{o}]");
            }
            // The fused ReLU: its values are the ReLU of the outputs, and its gradients
            // those of the gradient masked by y > 0.
            let fused = forward(&g, &x, &w, Some(&b), true);
            let mut relu_y = got.clone();
            relu(&mut relu_y);
            assert_eq!(fused, relu_y, "{xd:?} {opts:?} fused ReLU values");
            let masked: Vec<f64> = r
                .iter()
                .zip(&fused)
                .map(|(&r, &y)| if y > 0.0 { r } else { 0.0 })
                .collect();
            let want = backward(&g, (&x, &w), &masked, None, (true, true, true));
            let got = backward(&g, (&x, &w), &r, Some(&fused), (true, true, true));
            assert_eq!(
                (got.x, got.w, got.b),
                (want.x, want.w, want.b),
                "{xd:?} {opts:?}"
            );
        }
    }

    #[test]
    fn windows_that_do_not_fit_have_no_geometry() {
        let opts = (1, 0, 1, 1);
        assert!(Geometry::new((1, 1, 2, 5), (1, 1, 3, 3), opts).is_none());
        assert!(Geometry::new((1, 1, 0, 5), (1, 1, 1, 1), opts).is_none());
        assert!(Geometry::new((1, 1, 5, 5), (1, 1, 3, 3), (1, 0, 3, 1)).is_none());
        assert!(Geometry::new((1, 1, 5, 5), (1, 1, 3, 3), (1, 1, 3, 1)).is_some());
        assert!(Geometry::new((1, 2, 5, 5), (1, 1, 3, 3), (1, 0, 1, 1)).is_none());
        assert!(Geometry::new((1, 1, 5, 5), (1, 1, 3, 3), (0, 0, 1, 1)).is_none());
    }
}
