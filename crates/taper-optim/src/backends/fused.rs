//! The fused CPU path: one pass over memory that updates a parameter and its state in place.
//!
//! Candle gives mutable access to a tensor's storage only through in-place custom ops, one
//! tensor per op. [`with_slices`] nests one op per tensor (parameter, then each state
//! tensor) so the innermost code holds all of them as `&mut [T]`, with the gradient as `&[T]`.
//! The element loop then runs [`crate::rule::update`] on scalars: the same formula as the
//! tensor path, with no allocation and no intermediate tensors. Large tensors are split into
//! chunks updated on rayon's threads.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::engine::lane::{Block, Lane};

/// Elements per block of the vectorized loop.
const LANES: usize = 8;
use crate::engine::rule::{normed, update, Rule, TensorNorms};
use crate::{error::Error, error::Result};

/// One thread's share: parameter, gradient and state slices of the same range.
type Chunk<'a, T, const K: usize> = (&'a mut [T], &'a [T], [&'a mut [T]; K]);

/// Elements per chunk handed to one thread.
const CHUNK: usize = 1 << 15;

/// The float types the fused path handles.
pub(crate) trait FusedFloat:
    Lane<Err = std::convert::Infallible> + Copy + Send + Sync + Into<f64> + 'static
{
    /// [`LANES`] values of this type, processed together.
    type Block: Lane<Err = std::convert::Infallible> + Copy;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// [`LANES`] values as a block.
    fn load(x: &[Self; LANES]) -> Self::Block;
    /// Writes a block to [`LANES`] values.
    fn store(b: &Self::Block, out: &mut [Self; LANES]);
}

macro_rules! fused_float {
    ($t:ty, $variant:ident) => {
        impl FusedFloat for $t {
            type Block = Block<$t, LANES>;
            #[inline(always)]
            fn load(x: &[Self; LANES]) -> Self::Block {
                Block(*x)
            }
            #[inline(always)]
            fn store(b: &Self::Block, out: &mut [Self; LANES]) {
                *out = b.0;
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

fused_float!(f32, F32);
fused_float!(f64, F64);

/// The most per-parameter state tensors a rule may keep and still take the fused CPU path
/// (the loop carries its state slots in fixed arrays, one instantiation per count). Every
/// rule in this crate keeps at most 3 (Adam with AMSGrad, centered RMSprop with momentum);
/// a rule with more runs on the generic tensor path, and [`Optimizer::execution`] and its
/// `Debug` output say so.
///
/// [`Optimizer::execution`]: crate::Optimizer::execution
pub const MAX_FUSED_STATE: usize = 3;

/// Whether one fused kernel can take these tensors, on whatever device: the parameter is f32
/// or f64, and the gradient and every state tensor are on its device, of its dtype and
/// size, and all are contiguous. Shared by the CPU loop and the CUDA kernel.
pub(crate) fn one_kernel(p: &Tensor, g: &Tensor, state: &[Tensor]) -> bool {
    let dt = p.dtype();
    let n = p.elem_count();
    matches!(dt, DType::F32 | DType::F64)
        && p.is_contiguous()
        && std::iter::once(g).chain(state).all(|t| {
            t.device().same_device(p.device())
                && t.dtype() == dt
                && t.is_contiguous()
                && t.elem_count() == n
        })
}

/// Runs one fused update of `p` (and `state`) with gradient `g`. Call only when [`eligible`].
pub(crate) fn step<R: Rule>(
    rule: &R,
    s: &R::Step,
    p: &Tensor,
    g: &Tensor,
    state: &[Tensor],
) -> Result<()> {
    match p.dtype() {
        DType::F32 => run::<R, f32>(rule, s, p, g, state),
        DType::F64 => run::<R, f64>(rule, s, p, g, state),
        dt => Err(Error::Candle(candle_core::Error::Msg(format!(
            "fused step: unsupported dtype {dt:?}"
        )))),
    }
}

fn run<R: Rule, T: FusedFloat>(
    rule: &R,
    s: &R::Step,
    p: &Tensor,
    g: &Tensor,
    state: &[Tensor],
) -> Result<()> {
    let mut tensors = vec![p];
    tensors.extend(state);
    with_slices::<T>(&tensors, g, &mut |muts, g| {
        let (p, st) = muts
            .split_first_mut()
            .expect("the parameter is always first");
        match st {
            [] => chunked::<R, T, 0>(rule, s, p, g, []),
            [a] => chunked::<R, T, 1>(rule, s, p, g, [a]),
            [a, b] => chunked::<R, T, 2>(rule, s, p, g, [a, b]),
            [a, b, c] => chunked::<R, T, 3>(rule, s, p, g, [a, b, c]),
            _ => unreachable!("eligible() admits at most 3 state tensors"),
        }
    })
}

/// The norm pass of a rule that [`Rule::needs_norms`]: reads the parameter, gradient and
/// state once (writing nothing), computing [`Rule::normed`] per block on register copies of
/// the state, and returns ‖θ‖₂ and ‖u‖₂ accumulated in float64. Chunks run on rayon's
/// threads and their partial sums are added in chunk order, so the result does not depend
/// on the thread count. Call only when [`eligible`].
pub(crate) fn norms<R: Rule>(
    rule: &R,
    s: &R::Step,
    p: &Tensor,
    g: &Tensor,
    state: &[Tensor],
) -> Result<TensorNorms> {
    let sums = match p.dtype() {
        DType::F32 => norm_sums::<R, f32>(rule, s, p, g, state)?,
        DType::F64 => norm_sums::<R, f64>(rule, s, p, g, state)?,
        dt => {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "fused norms: unsupported dtype {dt:?}"
            ))))
        }
    };
    Ok(TensorNorms {
        param: sums[0].sqrt(),
        update: sums[1].sqrt(),
        len: p.elem_count(),
    })
}

fn norm_sums<R: Rule, T: FusedFloat>(
    rule: &R,
    s: &R::Step,
    p: &Tensor,
    g: &Tensor,
    state: &[Tensor],
) -> Result<[f64; 2]> {
    let mut tensors = vec![p];
    tensors.extend(state);
    let mut out = [0.0; 2];
    with_slices::<T>(&tensors, g, &mut |muts, g| {
        let (p, st) = muts
            .split_first_mut()
            .expect("the parameter is always first");
        let st: Vec<&[T]> = st.iter().map(|x| &**x).collect();
        out = match st[..] {
            [] => chunked_sums::<R, T, 0>(rule, s, p, g, []),
            [a] => chunked_sums::<R, T, 1>(rule, s, p, g, [a]),
            [a, b] => chunked_sums::<R, T, 2>(rule, s, p, g, [a, b]),
            [a, b, c] => chunked_sums::<R, T, 3>(rule, s, p, g, [a, b, c]),
            _ => unreachable!("eligible() admits at most 3 state tensors"),
        };
    })?;
    Ok(out)
}

fn chunked_sums<R: Rule, T: FusedFloat, const K: usize>(
    rule: &R,
    s: &R::Step,
    p: &[T],
    g: &[T],
    st: [&[T]; K],
) -> [f64; 2] {
    let parts: Vec<[f64; 2]> = (0..p.len().div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let r = c * CHUNK..((c + 1) * CHUNK).min(p.len());
            sums_body::<R, T, K>(
                rule,
                s,
                &p[r.clone()],
                &g[r.clone()],
                st.map(|x| &x[r.clone()]),
            )
        })
        .collect();
    parts
        .iter()
        .fold([0.0; 2], |a, b| [a[0] + b[0], a[1] + b[1]])
}

/// Σθ² and Σu² over one chunk, by blocks of [`LANES`] and then the remainder.
fn sums_body<R: Rule, T: FusedFloat, const K: usize>(
    rule: &R,
    s: &R::Step,
    p: &[T],
    g: &[T],
    st: [&[T]; K],
) -> [f64; 2] {
    let n = p.len().min(g.len());
    let full = n - n % LANES;
    let mut acc = [0.0f64; 2];
    let mut add = |pv: T, uv: T| {
        let (pv, uv): (f64, f64) = (pv.into(), uv.into());
        acc[0] += pv * pv;
        acc[1] += uv * uv;
    };
    for i in (0..full).step_by(LANES) {
        let mut v: [T::Block; K] = std::array::from_fn(|k| T::load(block(&st[k][i..])));
        let pb = T::load(block(&p[i..]));
        let Ok(u) = normed(rule, s, &pb, &T::load(block(&g[i..])), &mut v);
        let mut us = [p[i]; LANES];
        T::store(&u, &mut us);
        for (j, uv) in us.into_iter().enumerate() {
            add(p[i + j], uv);
        }
    }
    for i in full..n {
        let mut v: [T; K] = std::array::from_fn(|k| st[k][i]);
        let Ok(u) = normed(rule, s, &p[i], &g[i], &mut v);
        add(p[i], u);
    }
    acc
}

/// Σx² of a tensor, accumulated in float64: in one parallel pass over the storage for a
/// contiguous f32 or f64 CPU tensor (chunk sums added in chunk order, so the result does not
/// depend on the thread count), else with candle ops after a cast to f64.
pub(crate) fn sum_squares(t: &Tensor) -> Result<f64> {
    fn pass<T: FusedFloat>(x: &[T]) -> f64 {
        let parts: Vec<f64> = x
            .par_chunks(CHUNK)
            .map(|c| {
                c.iter()
                    .map(|&v| {
                        let v: f64 = v.into();
                        v * v
                    })
                    .sum()
            })
            .collect();
        parts.iter().sum()
    }
    if t.device().is_cpu() {
        let (guard, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*guard, layout.contiguous_offsets()) {
            if let Some(x) = f32::slice(cpu) {
                return Ok(pass(&x[a..b]));
            }
            if let Some(x) = f64::slice(cpu) {
                return Ok(pass(&x[a..b]));
            }
        }
    }
    Ok(t.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?)
}

fn chunked<R: Rule, T: FusedFloat, const K: usize>(
    rule: &R,
    s: &R::Step,
    p: &mut [T],
    g: &[T],
    st: [&mut &mut [T]; K],
) {
    if p.len() <= CHUNK {
        return kernel::<R, T, K>(rule, s, p, g, st.map(|x| &mut **x));
    }
    let mut its = st.map(|x| x.chunks_mut(CHUNK));
    let work: Vec<Chunk<'_, T, K>> = p
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .map(|(pc, gc)| {
            (
                pc,
                gc,
                std::array::from_fn(|k| its[k].next().expect("state chunks match the parameter's")),
            )
        })
        .collect();
    work.into_par_iter()
        .for_each(|(pc, gc, sc)| kernel::<R, T, K>(rule, s, pc, gc, sc));
}

/// The element loop, also compiled for AVX2 and chosen at run time on x86-64.
fn kernel<R: Rule, T: FusedFloat, const K: usize>(
    rule: &R,
    s: &R::Step,
    p: &mut [T],
    g: &[T],
    st: [&mut [T]; K],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { kernel_avx2::<R, T, K>(rule, s, p, g, st) };
    }
    kernel_body::<R, T, K>(rule, s, p, g, st)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2<R: Rule, T: FusedFloat, const K: usize>(
    rule: &R,
    s: &R::Step,
    p: &mut [T],
    g: &[T],
    st: [&mut [T]; K],
) {
    kernel_body::<R, T, K>(rule, s, p, g, st)
}

/// Runs the rule on blocks of [`LANES`] elements (fixed-size array code that LLVM
/// vectorizes, with the rule's branches taken once per block), then on the remainder.
#[inline(always)]
fn kernel_body<R: Rule, T: FusedFloat, const K: usize>(
    rule: &R,
    s: &R::Step,
    p: &mut [T],
    g: &[T],
    st: [&mut [T]; K],
) {
    let n = p.len().min(g.len());
    let (p, g) = (&mut p[..n], &g[..n]);
    let st = st.map(|x| &mut x[..n]);
    let full = n - n % LANES;
    // Whole blocks: fixed-size array views, so each load and store is one vector move and
    // the only bounds checks left are one per state tensor per block.
    let blocks = p[..full]
        .chunks_exact_mut(LANES)
        .zip(g[..full].chunks_exact(LANES));
    for (b, (pc, gc)) in blocks.enumerate() {
        let i = b * LANES;
        let (pc, gc): (&mut [T; LANES], &[T; LANES]) = (
            pc.try_into().expect("chunks_exact gives LANES"),
            gc.try_into().expect("chunks_exact gives LANES"),
        );
        let mut v: [T::Block; K] = std::array::from_fn(|k| T::load(block(&st[k][i..])));
        let Ok(new) = update(rule, s, &T::load(pc), &T::load(gc), &mut v);
        T::store(&new, pc);
        for (k, x) in v.iter().enumerate() {
            T::store(x, block_mut(&mut st[k][i..]));
        }
    }
    for i in full..n {
        let mut v: [T; K] = std::array::from_fn(|k| st[k][i]);
        let Ok(new) = update(rule, s, &p[i], &g[i], &mut v);
        p[i] = new;
        for (k, x) in v.into_iter().enumerate() {
            st[k][i] = x;
        }
    }
}

/// The first [`LANES`] values of `x` (callers guarantee there are that many).
#[inline(always)]
fn block<T>(x: &[T]) -> &[T; LANES] {
    x[..LANES].try_into().expect("slice has LANES values")
}

/// The first [`LANES`] values of `x`, mutably.
#[inline(always)]
fn block_mut<T>(x: &mut [T]) -> &mut [T; LANES] {
    (&mut x[..LANES])
        .try_into()
        .expect("slice has LANES values")
}

type SliceFn<'f, T> = dyn FnMut(&mut [&mut [T]], &[T]) + 'f;

/// Calls `f` with mutable slices of every tensor in `muts` and a read slice of `read`.
fn with_slices<T: FusedFloat>(
    muts: &[&Tensor],
    read: &Tensor,
    f: &mut SliceFn<'_, T>,
) -> Result<()> {
    let first = Nest {
        acc: RefCell::new(Some(Vec::new())),
        rest: &muts[1..],
        read,
        f: RefCell::new(f),
    };
    Ok(muts[0].inplace_op1(&first)?)
}

/// One level of nesting: takes the slices gathered so far, adds this tensor's, and either
/// recurses into the next tensor or, at the end, reads the gradient and calls `f`.
struct Nest<'a, 'b, 'f, T> {
    acc: RefCell<Option<Vec<&'a mut [T]>>>,
    rest: &'b [&'b Tensor],
    read: &'b Tensor,
    f: RefCell<&'b mut SliceFn<'f, T>>,
}

fn contiguous<'s, T>(s: &'s mut [T], l: &Layout) -> candle_core::Result<&'s mut [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut s[a..b]),
        None => candle_core::bail!("fused step: tensor is not contiguous"),
    }
}

impl<T: FusedFloat> InplaceOp1 for Nest<'_, '_, '_, T> {
    fn name(&self) -> &'static str {
        "taper-fused-optimizer-step"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some(slice) = T::slice_mut(storage) else {
            candle_core::bail!("fused step: dtype changed under the optimizer")
        };
        let slice = contiguous(slice, layout)?;
        let Some(acc) = self.acc.borrow_mut().take() else {
            candle_core::bail!("fused step: storage visited twice")
        };
        let mut acc: Vec<&mut [T]> = acc;
        acc.push(slice);
        let mut f = self.f.borrow_mut();
        match self.rest.split_first() {
            Some((next, rest)) => {
                let nest = Nest {
                    acc: RefCell::new(Some(acc)),
                    rest,
                    read: self.read,
                    f: RefCell::new(&mut **f),
                };
                next.inplace_op1(&nest)
            }
            None => {
                let (guard, l) = self.read.storage_and_layout();
                let Storage::Cpu(cpu) = &*guard else {
                    candle_core::bail!("fused step: gradient is not on the CPU")
                };
                let (Some(g), Some((a, b))) = (T::slice(cpu), l.contiguous_offsets()) else {
                    candle_core::bail!("fused step: gradient dtype or layout does not fit")
                };
                (*f)(&mut acc, &g[a..b]);
                Ok(())
            }
        }
    }
}
