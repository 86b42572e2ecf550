//! Batch normalization on the CPU as one autograd node, in f32 and f64: one pass for the
//! per-channel statistics and one to normalize forward; one for the per-channel sums and
//! one for the input gradient backward.
//!
//! With x̂ = (x − μ)·s, s = 1/√(σ² + ε), y = γ·x̂ + β, M values per channel, and G the
//! output gradient, the gradients are dβ = ΣG, dγ = ΣG·x̂ and
//! - with the batch's statistics (training): dx = γ·s·(G − ΣG/M − x̂·ΣG·x̂/M);
//! - with fixed statistics (evaluation, running statistics): dx = γ·s·G.
//!
//! Sums are accumulated in f64 whatever the element type.

use candle_core::backend::BackendStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::Elem;
use super::{slice_of, with_slice, GradTensors, Grads};

/// The layout (n, c, s) of one batch normalization: s values per sample and channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Values per sample and channel (H·W, L or 1).
    pub s: usize,
}

impl Geometry {
    /// Values per channel.
    fn m(&self) -> usize {
        self.n * self.s
    }
}

/// The mean and biased variance of every channel of `x` (n, c, s), two passes each, on all
/// threads.
pub(crate) fn stats<T: Elem>(g: &Geometry, x: &[T]) -> Vec<(f64, f64)> {
    let m = g.m() as f64;
    (0..g.c)
        .into_par_iter()
        .map(|c| {
            let blocks = || (0..g.n).map(move |n| &x[(n * g.c + c) * g.s..][..g.s]);
            let mean = blocks().map(|b| lane_sum(b, |v| v)).sum::<f64>() / m;
            let var = blocks()
                .map(|b| lane_sum(b, |v| (v - mean) * (v - mean)))
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .collect()
}

/// Partial sums kept apart: eight independent f64 additions the CPU overlaps (and
/// vectorizes), where one running sum waits for each addition before the next.
const LANES: usize = 8;

/// Σ f(v) over `v`, in f64, in [`LANES`] interleaved partial sums.
fn lane_sum<T: Elem>(v: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x.to_f64());
        }
    }
    tail.iter().map(|x| f(x.to_f64())).sum::<f64>() + acc.iter().sum::<f64>()
}

/// Σ a·f(b) over the pairs of `a` and `b`, in f64, in [`LANES`] interleaved partial sums.
fn lane_dot<T: Elem>(a: &[T], b: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x.to_f64() * f(y.to_f64()))
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += x.to_f64() * f(y.to_f64());
        }
    }
    tail + acc.iter().sum::<f64>()
}

/// Per channel: the mean, 1/√(σ² + ε), and the scale γ (1 without affine parameters).
#[derive(Debug, Clone)]
pub(crate) struct Normalization {
    /// μ per channel.
    pub mean: Vec<f64>,
    /// s = 1/√(σ² + ε) per channel.
    pub inv_std: Vec<f64>,
    /// Whether μ and σ² are the batch's own (training), so the gradient flows through them.
    pub batch_stats: bool,
}

/// y = γ·(x − μ)·s + β, per (sample, channel) block on all threads.
fn forward<T: Elem>(
    g: &Geometry,
    norm: &Normalization,
    x: &[T],
    affine: Option<(&[T], &[T])>,
) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    y.par_chunks_mut(g.s)
        .zip(x.par_chunks(g.s))
        .enumerate()
        .for_each(|(i, (yb, xb))| normalize_block(yb, xb, norm.coefficients(i % g.c, affine)));
    y
}

impl Normalization {
    /// Channel `c`'s y = a·x + b: a = γ·s, b = β − μ·a.
    pub(crate) fn coefficients<T: Elem>(&self, c: usize, affine: Option<(&[T], &[T])>) -> (T, T) {
        let (gamma, beta) = affine.map_or((1.0, 0.0), |(w, b)| (w[c].to_f64(), b[c].to_f64()));
        let a = gamma * self.inv_std[c];
        (T::from_f64(a), T::from_f64(beta - self.mean[c] * a))
    }

    /// Channel `c`'s dx = k·G + a·x + b (`sums` = (ΣG, ΣG·x̂) over the channel's M values;
    /// with fixed statistics a = b = 0).
    pub(crate) fn grad_coefficients<T: Elem>(
        &self,
        c: usize,
        gamma: Option<&[T]>,
        sums: (f64, f64),
        m: f64,
    ) -> (T, T, T) {
        let (mu, s) = (self.mean[c], self.inv_std[c]);
        let k = gamma.map_or(1.0, |w| w[c].to_f64()) * s;
        if !self.batch_stats {
            return (T::from_f64(k), T::ZERO, T::ZERO);
        }
        // dx = k·(G − ΣG/M − x̂·ΣGx̂/M) = k·G + a·x + b, per channel constants.
        let (sg, sgx) = (sums.0 / m, sums.1 / m);
        let a = -k * sgx * s;
        let b = -k * sg + k * sgx * s * mu;
        (T::from_f64(k), T::from_f64(a), T::from_f64(b))
    }

    /// One (sample, channel) block's contribution to channel `c`'s (ΣG, ΣG·x̂).
    pub(crate) fn block_sums<T: Elem>(&self, c: usize, gb: &[T], xb: &[T]) -> (f64, f64) {
        let (mu, s) = (self.mean[c], self.inv_std[c]);
        // ΣG·x̂ = s·ΣG·(x − μ).
        (lane_sum(gb, |v| v), lane_dot(gb, xb, |v| v - mu) * s)
    }
}

/// One block of y = a·x + b.
pub(crate) fn normalize_block<T: Elem>(yb: &mut [T], xb: &[T], (a, b): (T, T)) {
    for (o, &v) in yb.iter_mut().zip(xb) {
        *o = v * a + b;
    }
}

/// One block of dx = k·G + a·x + b (k·G alone with fixed statistics).
pub(crate) fn input_grad_block<T: Elem>(
    db: &mut [T],
    gb: &[T],
    xb: &[T],
    (k, a, b): (T, T, T),
    batch_stats: bool,
) {
    if batch_stats {
        for ((d, &gv), &xv) in db.iter_mut().zip(gb).zip(xb) {
            *d = k * gv + a * xv + b;
        }
    } else {
        for (d, &gv) in db.iter_mut().zip(gb) {
            *d = k * gv;
        }
    }
}

/// The backward pass from the output gradient `gy`.
fn backward<T: Elem>(
    g: &Geometry,
    norm: &Normalization,
    x: &[T],
    gy: &[T],
    gamma: Option<&[T]>,
    (want_x, want_w, want_b): (bool, bool, bool),
) -> Grads<T> {
    // Per channel: ΣG and ΣG·x̂.
    let sums: Vec<(f64, f64)> = (0..g.c)
        .into_par_iter()
        .map(|c| {
            let (mut sg, mut sgx) = (0.0, 0.0);
            for n in 0..g.n {
                let at = (n * g.c + c) * g.s;
                let (a, b) = norm.block_sums(c, &gy[at..at + g.s], &x[at..at + g.s]);
                sg += a;
                sgx += b;
            }
            (sg, sgx)
        })
        .collect();
    let dx = want_x.then(|| {
        let m = g.m() as f64;
        let mut dx = vec![T::ZERO; x.len()];
        dx.par_chunks_mut(g.s)
            .zip(gy.par_chunks(g.s).zip(x.par_chunks(g.s)))
            .enumerate()
            .for_each(|(i, (db, (gb, xb)))| {
                let c = i % g.c;
                let coef = norm.grad_coefficients(c, gamma, sums[c], m);
                input_grad_block(db, gb, xb, coef, norm.batch_stats);
            });
        dx
    });
    Grads {
        x: dx,
        w: want_w.then(|| sums.iter().map(|s| T::from_f64(s.1)).collect()),
        b: want_b.then(|| sums.iter().map(|s| T::from_f64(s.0)).collect()),
    }
}

/// One input of the node as candle hands it over: storage and layout.
type Operand<'a> = (&'a CpuStorage, &'a Layout);

/// The batch normalization node: x, and for [`CustomOp3`] the weight γ and bias β.
pub(crate) struct BatchNormNode {
    /// The layout.
    pub geometry: Geometry,
    /// The statistics the node normalizes with.
    pub norm: Normalization,
}

impl BatchNormNode {
    fn run(
        &self,
        x: Operand<'_>,
        affine: Option<(Operand<'_>, Operand<'_>)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let shape = x.1.shape().clone();
        float_dispatch!(x.0.dtype(), "taper-batch-norm", T => {
            let xs = slice_of::<T>(x.0, x.1, g.n * g.c * g.s)?;
            let params = match affine {
                Some((w, b)) => Some((slice_of::<T>(w.0, w.1, g.c)?, slice_of::<T>(b.0, b.1, g.c)?)),
                None => None,
            };
            Ok((T::to_cpu_storage_owned(forward(g, &self.norm, xs, params)), shape))
        })
    }

    fn grads(
        &self,
        x: &Tensor,
        affine: Option<(&Tensor, &Tensor)>,
        grad: &Tensor,
    ) -> candle_core::Result<GradTensors> {
        let g = &self.geometry;
        let want = (
            x.track_op(),
            affine.is_some_and(|(w, _)| w.track_op()),
            affine.is_some_and(|(_, b)| b.track_op()),
        );
        float_dispatch!(x.dtype(), "taper-batch-norm", T => {
            let gamma: Option<Vec<T>> = match affine {
                Some((w, _)) => Some(w.flatten_all()?.to_vec1()?),
                None => None,
            };
            let grads = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(grad, |gs| backward(g, &self.norm, xs, gs, gamma.as_deref(), want))
            })??;
            let c = Shape::from(g.c);
            grads.into_tensors(x.shape(), &c, &c)
        })
    }
}

impl CustomOp1 for BatchNormNode {
    fn name(&self) -> &'static str {
        "taper-batch-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s, l), None)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(self.grads(x, None, grad)?.0)
    }
}

impl CustomOp3 for BatchNormNode {
    fn name(&self) -> &'static str {
        "taper-batch-norm"
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
        self.run((xs, xl), Some(((ws, wl), (bs, bl))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(x, Some((w, b)), grad)
    }
}

/// The per-channel statistics of `x` viewed as (n, c, s) (contiguous CPU f32 or f64, see
/// [`applies`]).
pub(crate) fn batch_stats(x: &Tensor, g: &Geometry) -> candle_core::Result<Vec<(f64, f64)>> {
    float_dispatch!(x.dtype(), "taper-batch-norm", T => with_slice::<T, _>(x, |v| stats(g, v)))
}

/// Normalizes `x` with `norm` (and γ, β when given) as one node.
pub(crate) fn batch_norm(
    x: &Tensor,
    geometry: Geometry,
    norm: Normalization,
    params: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let node = BatchNormNode { geometry, norm };
    match params {
        Some((w, b)) => x.apply_op3(&w.contiguous()?, &b.contiguous()?, node),
        None => x.apply_op1(node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_and_gradients_match_the_formulas() {
        let g = Geometry { n: 3, c: 2, s: 4 };
        let x: Vec<f64> = (0..24)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0)
            .collect();
        let st = stats(&g, &x);
        for (c, &(mean, var)) in st.iter().enumerate() {
            let vals: Vec<f64> = (0..3)
                .flat_map(|n| x[(n * 2 + c) * 4..][..4].to_vec())
                .collect();
            let m = vals.iter().sum::<f64>() / 12.0;
            let v = vals.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 12.0;
            assert!((mean - m).abs() < 1e-14 && (var - v).abs() < 1e-14);
        }
        let norm = Normalization {
            mean: st.iter().map(|s| s.0).collect(),
            inv_std: st.iter().map(|s| 1.0 / (s.1 + 1e-5).sqrt()).collect(),
            batch_stats: true,
        };
        let (w, b) = (vec![1.5, 0.5], vec![0.25, -1.0]);
        let y = forward(&g, &norm, &x, Some((&w, &b)));
        // Central differences of sum(y·r) through the whole normalization, statistics
        // included.
        let r: Vec<f64> = (0..24).map(|i| ((i * 11 % 7) as f64 - 3.0) / 3.0).collect();
        let loss = |x: &[f64]| {
            let st = stats(&g, x);
            let norm = Normalization {
                mean: st.iter().map(|s| s.0).collect(),
                inv_std: st.iter().map(|s| 1.0 / (s.1 + 1e-5).sqrt()).collect(),
                batch_stats: true,
            };
            let y = forward(&g, &norm, x, Some((&w, &b)));
            y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
        };
        let grads = backward(&g, &norm, &x, &r, Some(&w), (true, true, true));
        let dx = grads.x.unwrap();
        for i in 0..24 {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += 1e-6;
            xm[i] -= 1e-6;
            let d = (loss(&xp) - loss(&xm)) / 2e-6;
            assert!((dx[i] - d).abs() < 1e-6, "dx[{i}] {} vs {d}", dx[i]);
        }
        let db = grads.b.unwrap();
        let dw = grads.w.unwrap();
        for c in 0..2 {
            let sum_r: f64 = (0..3)
                .flat_map(|n| r[(n * 2 + c) * 4..][..4].to_vec())
                .sum();
            assert!((db[c] - sum_r).abs() < 1e-12);
            let xhat_r: f64 = (0..3)
                .flat_map(|n| (0..4).map(move |j| (n * 2 + c) * 4 + j))
                .map(|i| r[i] * (y[i] - b[c]) / w[c])
                .sum();
            assert!((dw[c] - xhat_r).abs() < 1e-10);
        }
    }
}
