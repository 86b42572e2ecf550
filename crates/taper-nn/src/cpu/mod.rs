//! Taper's own CPU kernels: the fast paths behind the layers on the CPU training path.
//!
//! Each layer decides in its `forward` whether its input fits a kernel here (a CPU tensor of
//! a supported dtype, with gradients as the kernel expects) and otherwise takes candle's
//! generic ops, which run on every device and dtype. The kernels become single nodes of
//! candle's autograd graph (`CustomOp`s) with hand-written backward passes, so they never
//! compute a gradient for a constant input (the data batch) and never zero-fill an
//! accumulator. Tests compare every kernel with the generic path and with PyTorch, and
//! gradcheck them in f64. [`taper_tensor::with_generic_kernels`] turns them off.
//!
//! - `gemm`: multithreaded and single-threaded matrix products over strided views.
//! - `dense`: `Linear`, ReLU and cross-entropy as single nodes (f32).
//! - `conv`: `Conv2d` by im2col and gemm, forward and backward (f32 and f64).
//! - `conv_pool`: `Conv2d` then `MaxPool2d` (and ReLU) as one node, for `Sequential`
//!   (f32 and f64).
//! - `pool`: `MaxPool2d` with a remembered argmax and `AvgPool2d` (f32 and f64).
//! - `batch_norm`: `BatchNorm1d`/`BatchNorm2d`, two passes forward and two backward (f32
//!   and f64).
//! - `batch_norm_pool`: `BatchNorm2d` then `MaxPool2d` (and ReLU) as one node, for
//!   `Sequential` (f32 and f64).
//! - `layer_norm`: `LayerNorm` over the last dimensions, one pass per row each way (f32 and
//!   f64).
//! - `gelu`: exact GELU, one pass each way (f32 and f64).
//! - `dropout`: the seeded mask kept by the node, one pass each way (f32 and f64).
//! - `attention`: scaled dot-product attention with its softmax in place (f32 and f64).

/// Runs `$body` with the type alias `$t` set to f32 or f64, as the dtype `$dtype` says; for
/// any other dtype, an error naming the kernel `$op`. One dispatch for every kernel node.
macro_rules! float_dispatch {
    ($dtype:expr, $op:expr, $t:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $t = f64;
                $body
            }
            dt => candle_core::bail!("{}: expected f32 or f64, got {dt:?}", $op),
        }
    };
}

pub(crate) mod attention;
pub(crate) mod batch_norm;
pub(crate) mod batch_norm_pool;
pub(crate) mod conv;
pub(crate) mod conv_pool;
pub(crate) mod dense;
pub(crate) mod dropout;
pub(crate) mod gelu;
pub(crate) mod gemm;
pub(crate) mod layer_norm;
pub(crate) mod pool;

use candle_core::{CpuStorage, Device, Layout, Shape, Storage, Tensor, WithDType};

/// The gradients of a node's input, weight and bias, each computed only when asked for.
pub(crate) struct Grads<T> {
    /// d/dx.
    pub x: Option<Vec<T>>,
    /// d/dweight.
    pub w: Option<Vec<T>>,
    /// d/dbias.
    pub b: Option<Vec<T>>,
}

/// The tensors a three-input node's backward returns.
pub(crate) type GradTensors = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

impl<T: WithDType> Grads<T> {
    /// As CPU tensors of the inputs' shapes.
    pub(crate) fn into_tensors(
        self,
        x: &Shape,
        w: &Shape,
        b: &Shape,
    ) -> candle_core::Result<GradTensors> {
        let to = |v: Option<Vec<T>>, s: &Shape| v.map(|v| tensor_from(v, s.clone())).transpose();
        Ok((to(self.x, x)?, to(self.w, w)?, to(self.b, b)?))
    }
}

/// Whether the f32/f64 kernels take these tensors: Taper's kernels are on (not inside
/// [`taper_tensor::with_generic_kernels`]), and every tensor is on the CPU with the same
/// dtype, f32 or f64. The one test behind `Conv2d`, the pooling layers and `BatchNorm`.
pub(crate) fn float_kernel_applies(tensors: &[&Tensor]) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    let dt = first.dtype();
    taper_tensor::fast_kernels_enabled()
        && matches!(dt, candle_core::DType::F32 | candle_core::DType::F64)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == dt)
}

/// [`float_kernel_applies`] to `x` with its optional affine parameters (γ and β): the test
/// behind the BatchNorm and LayerNorm nodes.
pub(crate) fn affine_kernel_applies(x: &Tensor, params: Option<(&Tensor, &Tensor)>) -> bool {
    match params {
        Some((w, b)) => float_kernel_applies(&[x, w, b]),
        None => float_kernel_applies(&[x]),
    }
}

/// A contiguous CPU storage's `len` elements of type `T`; an error naming what was found
/// otherwise.
pub(crate) fn slice_of<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    len: usize,
) -> candle_core::Result<&'a [T]> {
    let v = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) if b - a == len && b <= v.len() => Ok(&v[a..b]),
        Some((a, b)) => candle_core::bail!(
            "taper CPU kernel: expected {len} elements, got a layout of {}",
            b - a
        ),
        None => candle_core::bail!("taper CPU kernel: expected a contiguous tensor"),
    }
}

/// Calls `f` with a CPU tensor's elements (made contiguous first when needed).
pub(crate) fn with_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(c) => Ok(f(slice_of(c, l, t.elem_count())?)),
        _ => candle_core::bail!("taper CPU kernel: expected a CPU tensor"),
    }
}

/// A CPU tensor over `v`.
pub(crate) fn tensor_from<T: WithDType>(
    v: Vec<T>,
    shape: impl Into<Shape>,
) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Returns a tensor's CPU storage (contiguous, from offset 0) as the op's output.
pub(crate) fn storage_of(t: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    let t = t.contiguous()?;
    let (st, layout) = t.storage_and_layout();
    match (&*st, layout.contiguous_offsets()) {
        (Storage::Cpu(c), Some((0, end))) if end == t.elem_count() => {
            Ok((c.clone(), t.shape().clone()))
        }
        (Storage::Cpu(_), _) => {
            let copy = t.copy()?;
            let (st, _) = copy.storage_and_layout();
            match &*st {
                Storage::Cpu(c) => Ok((c.clone(), t.shape().clone())),
                _ => candle_core::bail!("fused node: expected CPU storage"),
            }
        }
        _ => candle_core::bail!("fused node: CPU only"),
    }
}
