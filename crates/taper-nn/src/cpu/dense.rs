//! The dense layers' CPU nodes: `Linear` and cross-entropy (and ReLU) each become one node of
//! candle's autograd graph instead of several.
//!
//! The forward pass runs on candle's kernels over detached inputs (no graph), and a custom
//! op records the result with a hand-written backward. That removes two wastes of candle's
//! generic backward: the gradient of the constant data batch (computed for every matmul
//! input) and the chain of intermediate nodes and zero-filled accumulators of log-softmax,
//! gather, bias add. Results equal the unfused ops' (tests compare both and gradcheck them).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor,
};

use rayon::prelude::*;

use super::gemm::{matmul, matmul_into, View};
use super::{slice_of, storage_of};

/// Calls `f` with a tensor's values when it is a contiguous f32 CPU tensor (no copy);
/// `None` otherwise.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(c) => slice_of::<f32>(c, l, t.elem_count()).ok().map(f),
        _ => None,
    }
}

/// `a·b` (or `a·bᵀ` when `b_t`) for contiguous f32 CPU matrices `a` (m×k) and `b`, on all
/// threads, added to `init` (row-major m×n) when given; `None` when the inputs do not fit.
fn matmul_f32(
    a: &Tensor,
    (m, k): (usize, usize),
    b: &Tensor,
    (n, b_t): (usize, bool),
    init: Option<Vec<f32>>,
) -> Option<Vec<f32>> {
    with_f32(a, |av| {
        with_f32(b, |bv| {
            let a = View::row_major(av, m, k)?;
            let b = if b_t {
                View::row_major(bv, n, k)?.t()
            } else {
                View::row_major(bv, k, n)?
            };
            match init {
                Some(mut out) => matmul_into(&mut out, a, b, true).then_some(out),
                None => matmul(a, b),
            }
        })
    })
    .flatten()
    .flatten()
}

/// `gᵀ·x` for g (rows×out) and x (rows×in): the weight gradient, on all threads.
fn weight_grad_f32(
    g: &Tensor,
    x: &Tensor,
    rows: usize,
    (out_f, in_f): (usize, usize),
) -> Option<Vec<f32>> {
    with_f32(g, |gv| {
        with_f32(x, |xv| {
            matmul(
                View::row_major(gv, rows, out_f)?.t(),
                View::row_major(xv, rows, in_f)?,
            )
        })
    })
    .flatten()
    .flatten()
}

/// Column sums of g (rows×out): the bias gradient.
fn bias_grad_f32(g: &Tensor, rows: usize, out_f: usize) -> Option<Vec<f32>> {
    with_f32(g, |gv| {
        let mut sum = vec![0.0f32; out_f];
        for row in gv.chunks_exact(out_f).take(rows) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        sum
    })
}

/// y = x·Wᵀ + b, already computed; backward skips x when x is constant.
struct LinearNode {
    out: Tensor,
}

impl CustomOp3 for LinearNode {
    fn name(&self) -> &'static str {
        "taper-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        storage_of(&self.out)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out_f, in_f) = w.dims2()?;
        let rows = x.elem_count() / in_f;
        let g = grad.reshape((rows, out_f))?.contiguous()?;
        let gx = if x.track_op() {
            let fast = matmul_f32(&g, (rows, out_f), w, (in_f, false), None);
            Some(match fast {
                Some(v) => Tensor::from_vec(v, x.shape(), &Device::Cpu)?,
                None => g.matmul(w)?.reshape(x.shape())?,
            })
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(match weight_grad_f32(&g, x, rows, (out_f, in_f)) {
                Some(v) => Tensor::from_vec(v, (out_f, in_f), &Device::Cpu)?,
                None => g.t()?.matmul(&x.reshape((rows, in_f))?)?,
            })
        } else {
            None
        };
        let gb = if b.track_op() {
            Some(match bias_grad_f32(&g, rows, out_f) {
                Some(v) => Tensor::from_vec(v, out_f, &Device::Cpu)?,
                None => g.sum(0)?,
            })
        } else {
            None
        };
        Ok((gx, gw, gb))
    }
}

/// The fused `x·Wᵀ + b` (CPU); `x` is (*, in), `w` (out, in), `b` (out).
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (out_f, in_f) = w.dims2()?;
    let rows = x.elem_count() / in_f.max(1);
    // f32: the bias is the product's starting value, and the product runs on all threads.
    let init = with_f32(b, |bv| bv.repeat(rows));
    let fast = init.and_then(|init| matmul_f32(x, (rows, in_f), w, (out_f, true), Some(init)));
    let out = match fast {
        Some(y) => {
            let mut dims = x.dims().to_vec();
            if let Some(last) = dims.last_mut() {
                *last = out_f;
            }
            Tensor::from_vec(y, dims, &Device::Cpu)?
        }
        None => {
            let (xd, wt) = (x.detach(), w.detach().t()?);
            let y = match x.rank() {
                2 => xd.matmul(&wt)?,
                _ => xd.broadcast_matmul(&wt)?,
            };
            y.broadcast_add(&b.detach())?
        }
    };
    x.apply_op3(w, b, LinearNode { out })
}

/// Elements below which an element-wise pass stays on one thread.
const MIN_PARALLEL: usize = 1 << 16;

/// `f` over `x` (or over `x` and `y` pairwise), split across threads for large inputs,
/// written once into a new vector.
fn par_map(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    x.par_iter()
        .with_min_len(MIN_PARALLEL)
        .map(|&v| f(v))
        .collect_into_vec(&mut out);
    out
}

/// max(x, 0) with a one-pass backward, g·(y > 0).
struct ReluNode;

impl CustomOp1 for ReluNode {
    fn name(&self) -> &'static str {
        "taper-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => {
                // `x < 0 ? 0 : x` keeps NaN, as torch.relu does.
                let y = par_map(&v[a..b], |x| if x < 0.0 { 0.0 } else { x });
                Ok((CpuStorage::F32(y), l.shape().clone()))
            }
            _ => candle_core::bail!("taper-relu: expected a contiguous f32 tensor"),
        }
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let masked = with_f32(y, |yv| {
            with_f32(&grad, |gv| {
                let mut out = Vec::with_capacity(gv.len());
                yv.par_iter()
                    .zip(gv)
                    .with_min_len(MIN_PARALLEL)
                    .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
                    .collect_into_vec(&mut out);
                out
            })
        });
        Ok(Some(match masked.flatten() {
            Some(v) => Tensor::from_vec(v, y.shape(), &Device::Cpu)?,
            None => (grad * y.gt(0.0)?.to_dtype(y.dtype())?)?,
        }))
    }
}

/// ReLU as one graph node for contiguous f32 CPU tensors on the training path; `None`
/// elsewhere. candle's own ReLU backward takes six tensor operations (and passes gradient
/// at x = 0, where PyTorch passes none; this node follows PyTorch).
pub(crate) fn relu(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !x.device().is_cpu()
        || x.dtype() != DType::F32
        || !x.is_contiguous()
        || !x.track_op()
        || !taper_tensor::fast_kernels_enabled()
    {
        return Ok(None);
    }
    Ok(Some(x.apply_op1(ReluNode)?))
}

/// Mean cross-entropy, already computed, with its gradient template (p − onehot)/N.
struct CrossEntropyNode {
    loss: Tensor,
    dlogits: Tensor,
}

impl CustomOp1 for CrossEntropyNode {
    fn name(&self) -> &'static str {
        "taper-cross-entropy"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        storage_of(&self.loss)
    }

    fn bwd(
        &self,
        _logits: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.dlogits.broadcast_mul(grad)?))
    }
}

/// Mean cross-entropy of f32 CPU logits (N, C) at valid class ids, in one pass over the
/// logits; `None` when the fused path does not apply (other dtype or device).
pub(crate) fn cross_entropy_mean(
    logits: &Tensor,
    ids: &[u32],
) -> candle_core::Result<Option<Tensor>> {
    if !logits.device().is_cpu()
        || logits.dtype() != DType::F32
        || logits.rank() != 2
        || !taper_tensor::fast_kernels_enabled()
    {
        return Ok(None);
    }
    let (n, c) = logits.dims2()?;
    if n == 0 || ids.len() != n {
        return Ok(None);
    }
    let x: Vec<f32> = logits.detach().flatten_all()?.to_vec1()?;
    let mut d = vec![0f32; n * c];
    let mut total = 0f64;
    let inv_n = 1.0 / n as f32;
    for ((row, drow), &y) in x.chunks_exact(c).zip(d.chunks_exact_mut(c)).zip(ids) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - m).exp()).sum();
        let lse = m + sum.ln();
        total += (lse - row[y as usize]) as f64;
        for (dv, v) in drow.iter_mut().zip(row) {
            *dv = (v - lse).exp() * inv_n;
        }
        drow[y as usize] -= inv_n;
    }
    let loss = Tensor::new((total / n as f64) as f32, logits.device())?;
    let dlogits = Tensor::from_vec(d, (n, c), logits.device())?;
    Ok(Some(logits.apply_op1(CrossEntropyNode { loss, dlogits })?))
}
