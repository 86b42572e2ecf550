//! `LayerNorm` over rows of `d` features as one graph node: each row's mean and variance in
//! one pass, y = (x − μ)·rstd·γ + β; backward dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with
//! ĝ = g·γ, and dγ = Σ g·x̂, dβ = Σ g over rows. candle's composition takes eight ops forward
//! and about sixteen backward, each a pass over the activations.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::cpu::gemm::Elem;
use crate::cpu::{affine_kernel_applies, slice_of, with_slice, GradTensors, Grads};

/// Rows per parallel task: fixed, so the parameter gradients' sums do not depend on
/// scheduling (bit-identical runs).
const ROWS: usize = 64;

/// One task's partial sums of dγ and dβ.
type Partial = (Vec<f64>, Vec<f64>);
/// An operand's storage and layout.
type Operand<'a> = (&'a CpuStorage, &'a Layout);

/// The node: rows of `d` features, ε.
struct LayerNormNode {
    d: usize,
    eps: f64,
}

/// A row's mean and 1/√(var + ε), accumulated in f64.
fn stats<T: Elem>(row: &[T], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl LayerNormNode {
    fn forward<T: Elem>(&self, x: &[T], affine: Option<(&[T], &[T])>) -> Vec<T> {
        let d = self.d;
        let mut y = vec![T::ZERO; x.len()];
        y.par_chunks_mut(d * ROWS)
            .zip(x.par_chunks(d * ROWS))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                    let (mean, rstd) = stats(xr, self.eps);
                    let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
                    match affine {
                        Some((w, b)) => {
                            for j in 0..d {
                                yr[j] = (xr[j] - m) * r * w[j] + b[j];
                            }
                        }
                        None => {
                            for j in 0..d {
                                yr[j] = (xr[j] - m) * r;
                            }
                        }
                    }
                }
            });
        y
    }

    fn backward<T: Elem>(
        &self,
        x: &[T],
        g: &[T],
        w: Option<&[T]>,
        want: (bool, bool, bool),
    ) -> Grads<T> {
        let d = self.d;
        let mut dx = vec![T::ZERO; if want.0 { x.len() } else { 0 }];
        let want_params = want.1 || want.2;
        let rows_dx = |dxc: &mut [T], xc: &[T], gc: &[T]| -> Partial {
            let (mut dw, mut db) = if want_params {
                (vec![0f64; d], vec![0f64; d])
            } else {
                (Vec::new(), Vec::new())
            };
            for (i, (xr, gr)) in xc.chunks(d).zip(gc.chunks(d)).enumerate() {
                let (mean, rstd) = stats(xr, self.eps);
                let (mut sum_g, mut sum_gx) = (0f64, 0f64);
                for j in 0..d {
                    let xhat = (xr[j].to_f64() - mean) * rstd;
                    let gh = gr[j].to_f64() * w.map_or(1.0, |w| w[j].to_f64());
                    sum_g += gh;
                    sum_gx += gh * xhat;
                    if want_params {
                        dw[j] += gr[j].to_f64() * xhat;
                        db[j] += gr[j].to_f64();
                    }
                }
                if !dxc.is_empty() {
                    let (mg, mgx) = (sum_g / d as f64, sum_gx / d as f64);
                    let out = &mut dxc[i * d..(i + 1) * d];
                    for j in 0..d {
                        let xhat = (xr[j].to_f64() - mean) * rstd;
                        let gh = gr[j].to_f64() * w.map_or(1.0, |w| w[j].to_f64());
                        out[j] = T::from_f64(rstd * (gh - mg - xhat * mgx));
                    }
                }
            }
            (dw, db)
        };
        let partials: Vec<Partial> = if want.0 {
            dx.par_chunks_mut(d * ROWS)
                .zip(x.par_chunks(d * ROWS).zip(g.par_chunks(d * ROWS)))
                .map(|(dxc, (xc, gc))| rows_dx(dxc, xc, gc))
                .collect()
        } else {
            x.par_chunks(d * ROWS)
                .zip(g.par_chunks(d * ROWS))
                .map(|(xc, gc)| rows_dx(&mut [], xc, gc))
                .collect()
        };
        // Sum the partial sums in order: the same bits whatever the scheduling.
        let sum = |pick: fn(&Partial) -> &Vec<f64>| -> Vec<T> {
            let mut acc = vec![0f64; d];
            for p in &partials {
                for (a, v) in acc.iter_mut().zip(pick(p)) {
                    *a += v;
                }
            }
            acc.into_iter().map(T::from_f64).collect()
        };
        Grads {
            x: want.0.then_some(dx),
            w: want.1.then(|| sum(|p| &p.0)),
            b: want.2.then(|| sum(|p| &p.1)),
        }
    }

    fn run<T: Elem + WithDType>(
        &self,
        (xs, xl): Operand<'_>,
        affine: Option<(Operand<'_>, Operand<'_>)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice_of::<T>(xs, xl, xl.shape().elem_count())?;
        let y = match affine {
            Some(((ws, wl), (bs, bl))) => {
                let w = slice_of::<T>(ws, wl, self.d)?;
                let b = slice_of::<T>(bs, bl, self.d)?;
                self.forward(x, Some((w, b)))
            }
            None => self.forward(x, None),
        };
        Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
    }

    fn grads(
        &self,
        x: &Tensor,
        affine: Option<(&Tensor, &Tensor)>,
        grad: &Tensor,
    ) -> candle_core::Result<GradTensors> {
        let want = (
            x.track_op(),
            affine.is_some_and(|(w, _)| w.track_op()),
            affine.is_some_and(|(_, b)| b.track_op()),
        );
        float_dispatch!(x.dtype(), "taper-layer-norm", T => {
            let w: Option<Vec<T>> = match affine {
                Some((w, _)) => Some(w.flatten_all()?.to_vec1()?),
                None => None,
            };
            let grads = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(grad, |gs| self.backward(xs, gs, w.as_deref(), want))
            })??;
            let p = Shape::from(self.d);
            let (ws, bs) = affine.map_or((&p, &p), |(w, b)| (w.shape(), b.shape()));
            grads.into_tensors(x.shape(), ws, bs)
        })
    }
}

impl CustomOp1 for LayerNormNode {
    fn name(&self) -> &'static str {
        "taper-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        float_dispatch!(s.dtype(), "taper-layer-norm", T => self.run::<T>((s, l), None))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(self.grads(x, None, grad)?.0)
    }
}

impl CustomOp3 for LayerNormNode {
    fn name(&self) -> &'static str {
        "taper-layer-norm"
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
        float_dispatch!(xs.dtype(), "taper-layer-norm", T => self.run::<T>((xs, xl), Some(((ws, wl), (bs, bl)))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<GradTensors> {
        self.grads(x, Some((w, b)), grad)
    }
}

/// LayerNorm of `x` over its last `d` elements per row as one node, with γ and β when given
/// (both, of `d` elements); `None` when Taper's f32/f64 CPU kernels do not apply.
pub(crate) fn layer_norm(
    x: &Tensor,
    d: usize,
    eps: f64,
    affine: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Option<Tensor>> {
    if !affine_kernel_applies(x, affine) || d == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let node = LayerNormNode { d, eps };
    Ok(Some(match affine {
        Some((w, b)) => x.apply_op3(&w.contiguous()?, &b.contiguous()?, node)?,
        None => x.apply_op1(node)?,
    }))
}
