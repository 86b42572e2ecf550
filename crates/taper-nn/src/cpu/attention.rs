//! Scaled dot-product attention as one graph node (f32 and f64): the forward keeps the
//! attention probabilities P once (B·H·Lq·Lk values), and the backward computes, per batch
//! and head, dV = Pᵀ·dO, dP = dO·Vᵀ, then the softmax's backward in place in dP's buffer
//! (dS = P ⊙ (dP − rowsum(dP ⊙ P))), then dQ = dS·K·scale and dK = dSᵀ·Q·scale, with no
//! other copy of the attention matrix. Batches and heads are split across threads, each
//! product single-threaded (`gemm::matmul_serial`), as the convolution kernel does.
//!
//! The masks are applied as the generic path applies them: the causal mask and a boolean
//! mask set masked scores to −∞, a float mask is added, and a row whose every score is −∞
//! gets probabilities 0 (so its output and gradients are 0).

use candle_core::{CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::cpu::gemm::{matmul_serial, Elem, View};
use crate::cpu::{float_kernel_applies, storage_of, tensor_from, with_slice};
use crate::layers::attention::Mask;

/// The sizes of one call: `n` = batch·heads blocks of (Lq × E) queries, (Lk × E) keys and
/// (Lk × Ev) values.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    lq: usize,
    lk: usize,
    e: usize,
    ev: usize,
}

/// The mask as a per-block additive term, materialized once: `None`, or `n · Lq · Lk`
/// values (0 or −∞ for boolean and causal masks, the mask's values for a float one).
type Bias<T> = Option<Vec<T>>;

/// Attention on the CPU kernel when it applies (CPU, f32/f64, fast kernels on): `None`
/// otherwise, and the caller takes the generic path.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Mask<'_>,
    causal: bool,
    scale: f64,
) -> candle_core::Result<Option<Tensor>> {
    let mut all = vec![q, k, v];
    if let Mask::Additive(m) = mask {
        if m.track_op() {
            return Ok(None); // a mask with a gradient: the generic path computes it
        }
        all.push(m);
    }
    if !float_kernel_applies(&all) {
        return Ok(None);
    }
    let r = q.rank();
    let (qd, vd) = (q.dims(), v.dims());
    let lead: usize = qd[..r - 2].iter().product();
    let dims = Dims {
        n: lead,
        lq: qd[r - 2],
        lk: k.dims()[r - 2],
        e: qd[r - 1],
        ev: vd[r - 1],
    };
    let mut out_shape = qd.to_vec();
    out_shape[r - 1] = dims.ev;
    float_dispatch!(q.dtype(), "attention", T => {
        let bias = bias::<T>(q, mask, causal, dims)?;
        let (p, o) = with_slice::<T, _>(q, |qs| {
            with_slice::<T, _>(k, |ks| with_slice::<T, _>(v, |vs| forward(qs, ks, vs, bias.as_deref(), dims, scale)))
        })????;
        let out = tensor_from(o, out_shape)?;
        let node = AttentionNode {
            p: tensor_from(p, (dims.n, dims.lq, dims.lk))?,
            out,
            dims,
            scale,
        };
        Ok(Some(q.apply_op3(k, v, node)?))
    })
}

/// The additive mask term for every block, or `None` without masks.
fn bias<T: Elem + WithDType>(
    q: &Tensor,
    mask: &Mask<'_>,
    causal: bool,
    d: Dims,
) -> candle_core::Result<Bias<T>> {
    let r = q.rank();
    let mut scores = q.dims()[..r - 2].to_vec();
    scores.extend([d.lq, d.lk]);
    let neg = T::NEG_INFINITY;
    let mut b: Vec<T> = match mask {
        Mask::None if !causal => return Ok(None),
        Mask::None => vec![T::ZERO; d.n * d.lq * d.lk],
        Mask::Allowed(m) => {
            let m = m.broadcast_as(scores.as_slice())?.contiguous()?;
            with_slice::<u8, _>(&m, |ms| {
                ms.iter()
                    .map(|&a| if a != 0 { T::ZERO } else { neg })
                    .collect()
            })?
        }
        Mask::Additive(m) => {
            let m = m.broadcast_as(scores.as_slice())?.contiguous()?;
            with_slice::<T, _>(&m, |ms| ms.to_vec())?
        }
    };
    if causal {
        for block in b.chunks_mut(d.lq * d.lk) {
            for i in 0..d.lq {
                for v in &mut block[i * d.lk + (i + 1).min(d.lk)..(i + 1) * d.lk] {
                    *v = neg;
                }
            }
        }
    }
    Ok(Some(b))
}

/// The forward pass: P (n × Lq × Lk) and O (n × Lq × Ev).
fn forward<T: Elem>(
    q: &[T],
    k: &[T],
    v: &[T],
    bias: Option<&[T]>,
    d: Dims,
    scale: f64,
) -> candle_core::Result<(Vec<T>, Vec<T>)> {
    let (pn, on) = (d.lq * d.lk, d.lq * d.ev);
    let mut p = vec![T::ZERO; d.n * pn];
    let mut o = vec![T::ZERO; d.n * on];
    let scale = T::from_f64(scale);
    p.par_chunks_mut(pn)
        .zip(o.par_chunks_mut(on))
        .enumerate()
        .try_for_each(|(b, (pb, ob))| -> candle_core::Result<()> {
            let qb = View::row_major(&q[b * d.lq * d.e..], d.lq, d.e).expect("sized by Dims");
            let kb = View::row_major(&k[b * d.lk * d.e..], d.lk, d.e).expect("sized by Dims");
            let vb = View::row_major(&v[b * d.lk * d.ev..], d.lk, d.ev).expect("sized by Dims");
            if !matmul_serial(pb, qb, kb.t(), false) {
                candle_core::bail!("attention kernel: shapes do not fit");
            }
            let bb = bias.map(|bs| &bs[b * pn..(b + 1) * pn]);
            for (i, row) in pb.chunks_mut(d.lk).enumerate() {
                softmax_row(row, scale, bb.map(|bs| &bs[i * d.lk..(i + 1) * d.lk]));
            }
            let pv = View::row_major(pb, d.lq, d.lk).expect("sized by Dims");
            if !matmul_serial(ob, pv, vb, false) {
                candle_core::bail!("attention kernel: shapes do not fit");
            }
            Ok(())
        })?;
    Ok((p, o))
}

/// One row of scores to probabilities, in place: scale, add the mask, subtract the
/// maximum, exponentiate, normalize; a row with every score −∞ becomes 0.
fn softmax_row<T: Elem>(row: &mut [T], scale: T, bias: Option<&[T]>) {
    let mut max = T::NEG_INFINITY;
    for (j, x) in row.iter_mut().enumerate() {
        *x = *x * scale;
        if let Some(b) = bias {
            *x += b[j];
        }
        if *x > max {
            max = *x;
        }
    }
    if max == T::NEG_INFINITY {
        row.fill(T::ZERO);
        return;
    }
    let mut sum = 0.0f64;
    for x in row.iter_mut() {
        let e = (*x - max).exp();
        *x = e;
        sum += e.to_f64();
    }
    let inv = T::from_f64(1.0 / sum);
    for x in row.iter_mut() {
        *x = *x * inv;
    }
}

/// The node: the output, and P for the backward pass.
struct AttentionNode {
    p: Tensor,
    out: Tensor,
    dims: Dims,
    scale: f64,
}

impl CustomOp3 for AttentionNode {
    fn name(&self) -> &'static str {
        "taper-attention"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        storage_of(&self.out)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims;
        float_dispatch!(q.dtype(), "attention backward", T => {
            let (dq, dk, dv) = with_slice::<T, _>(q, |qs| {
                with_slice::<T, _>(k, |ks| {
                    with_slice::<T, _>(v, |vs| {
                        with_slice::<T, _>(&self.p, |ps| {
                            with_slice::<T, _>(grad, |gs| backward(qs, ks, vs, ps, gs, d, self.scale))
                        })
                    })
                })
            })??????;
            let wanted = |t: &Tensor, g: Vec<T>| -> candle_core::Result<Option<Tensor>> {
                t.track_op().then(|| tensor_from(g, t.shape().clone())).transpose()
            };
            Ok((wanted(q, dq)?, wanted(k, dk)?, wanted(v, dv)?))
        })
    }
}

/// Rows × cols row-major from `off` (sized by [`Dims`], so always in bounds).
fn view<T>(s: &[T], off: usize, rows: usize, cols: usize) -> View<'_, T> {
    View::row_major(&s[off..], rows, cols).expect("sized by Dims")
}

/// dQ, dK and dV from P and dO.
fn backward<T: Elem>(
    q: &[T],
    k: &[T],
    v: &[T],
    p: &[T],
    dout: &[T],
    d: Dims,
    scale: f64,
) -> candle_core::Result<(Vec<T>, Vec<T>, Vec<T>)> {
    let (qn, kn, vn, pn) = (d.lq * d.e, d.lk * d.e, d.lk * d.ev, d.lq * d.lk);
    let mut dq = vec![T::ZERO; d.n * qn];
    let mut dk = vec![T::ZERO; d.n * kn];
    let mut dv = vec![T::ZERO; d.n * vn];
    let scale = T::from_f64(scale);
    dq.par_chunks_mut(qn)
        .zip(dk.par_chunks_mut(kn))
        .zip(dv.par_chunks_mut(vn))
        .enumerate()
        .try_for_each(|(b, ((dqb, dkb), dvb))| -> candle_core::Result<()> {
            let pb = view(p, b * pn, d.lq, d.lk);
            let gb = view(dout, b * d.lq * d.ev, d.lq, d.ev);
            let ok = |fit: bool| {
                if fit {
                    Ok(())
                } else {
                    Err(candle_core::Error::Msg(
                        "attention kernel: shapes do not fit".into(),
                    ))
                }
            };
            // dV = Pᵀ·dO.
            ok(matmul_serial(dvb, pb.t(), gb, false))?;
            T::with_scratch(pn, |ds| -> candle_core::Result<()> {
                // dP = dO·Vᵀ, then the softmax's backward in place: dS = P ⊙ (dP − Σ dP⊙P).
                ok(matmul_serial(
                    ds,
                    gb,
                    view(v, b * vn, d.lk, d.ev).t(),
                    false,
                ))?;
                let prow = &p[b * pn..(b + 1) * pn];
                for (dsr, pr) in ds.chunks_mut(d.lk).zip(prow.chunks(d.lk)) {
                    let dot = dsr
                        .iter()
                        .zip(pr)
                        .fold(0.0f64, |a, (&g, &pv)| a + (g * pv).to_f64());
                    let dot = T::from_f64(dot);
                    for (g, &pv) in dsr.iter_mut().zip(pr) {
                        *g = pv * (*g + T::from_f64(-dot.to_f64())) * scale;
                    }
                }
                let dsv = View::row_major(ds, d.lq, d.lk).expect("sized by Dims");
                // dQ = dS·K·scale, dK = dSᵀ·Q·scale (the scale is in dS).
                ok(matmul_serial(dqb, dsv, view(k, b * kn, d.lk, d.e), false))?;
                ok(matmul_serial(
                    dkb,
                    dsv.t(),
                    view(q, b * qn, d.lq, d.e),
                    false,
                ))
            })
        })?;
    Ok((dq, dk, dv))
}
