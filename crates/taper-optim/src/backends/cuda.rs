//! The fused CUDA path: a rule's generated kernel launched on candle's CUDA storage, in place.
//!
//! Each step builds the rule's [`KernelSource`] (host work only: the source text and this
//! step's constants), gets its PTX from the process-wide NVRTC cache (compiled once per
//! distinct source, see `backends/nvrtc.rs`), loads it once per device through candle's
//! custom-module cache, and launches one thread per element on candle's stream. The
//! parameter and its state tensors are written where they are, and the constants travel by
//! value in the launch's argument buffer, so a step allocates nothing on the device.
//!
//! As on the CPU, candle opens a tensor's storage mutably only inside an in-place custom op,
//! one tensor per op; [`Nest`] nests one op per tensor (parameter, then each state tensor)
//! so the innermost level holds a mutable view of each, plus a read view of the gradient.
//!
//! Rules whose step needs a reduction over the whole tensor first (LAMB's and LARS's trust
//! ratios, [`Rule::needs_norms`]) take their norm pass as candle tensor ops on the GPU,
//! reduced in float64, and then this kernel, whose trust ratio is one more constant. Rules
//! that step whole tensors with candle ops ([`Rule::whole_tensor`]: Adafactor, Muon) do not
//! come here.

use std::cell::RefCell;

use candle_core::cuda::cudarc::driver::{
    CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage};
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};

use crate::backends::kernel_source::{KernelSource, MAX_KERNEL_CONSTANTS};
use crate::backends::nvrtc;
use crate::engine::rule::Rule;
use crate::error::Result;

/// Threads per block.
const BLOCK: u32 = 256;

/// Runs one fused update of `p` and `state` with gradient `g` on the GPU. Returns `false`,
/// having changed nothing, when this step's update needs more than
/// [`MAX_KERNEL_CONSTANTS`] constants (the caller then uses tensor ops). Call only when
/// [`Execution::FusedCuda`](crate::Execution::FusedCuda) ([`decide`](crate::engine::execution::decide)).
pub(crate) fn step<R: Rule>(
    rule: &R,
    s: &R::Step,
    p: &Tensor,
    g: &Tensor,
    state: &[Tensor],
) -> Result<bool> {
    let k = KernelSource::of(rule, s);
    if k.constants.len() > MAX_KERNEL_CONSTANTS {
        return Ok(false);
    }
    match p.dtype() {
        DType::F32 => run::<f32>(&k, "float", |c| c as f32, p, g, state)?,
        DType::F64 => run::<f64>(&k, "double", |c| c, p, g, state)?,
        dt => {
            return Err(crate::error::Error::Candle(candle_core::Error::Msg(
                format!("fused CUDA step: unsupported dtype {dt:?}"),
            )))
        }
    }
    Ok(true)
}

/// The element types the kernel takes.
trait KernelFloat: CudaDType + DeviceRepr + Copy + Default + 'static {}
impl KernelFloat for f32 {}
impl KernelFloat for f64 {}

fn run<T: KernelFloat>(
    k: &KernelSource,
    ty: &str,
    cast: fn(f64) -> T,
    p: &Tensor,
    g: &Tensor,
    state: &[Tensor],
) -> Result<()> {
    let kernel = nvrtc::compiled(&k.cuda(ty), ty, None)?;
    let mut consts = [T::default(); MAX_KERNEL_CONSTANTS];
    for (c, &v) in consts.iter_mut().zip(&k.constants) {
        *c = cast(v);
    }
    let n = p.elem_count();
    let launch = |dev: &CudaDevice,
                  views: &mut [CudaViewMut<'_, T>],
                  grad: &CudaView<'_, T>|
     -> candle_core::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let func = dev.get_or_load_custom_func("taper_step", &kernel.module, &kernel.ptx)?;
        let mut args = func.builder();
        let (param, states) = views
            .split_first_mut()
            .expect("the parameter is always first");
        args.arg(param);
        args.arg(grad);
        for st in states {
            args.arg(st);
        }
        let n64 = n as u64;
        args.arg(&consts);
        args.arg(&n64);
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(BLOCK as usize) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches `KernelSource::cuda`'s signature (parameter,
        // gradient, one pointer per state tensor, the constants struct by value, the
        // element count); every view holds `n` elements, checked by the execution decision, and the
        // kernel touches indices below `n` only.
        unsafe { args.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        Ok(())
    };
    let mut tensors = vec![p];
    tensors.extend(state);
    let first = Nest {
        acc: RefCell::new(Some(Vec::new())),
        rest: &tensors[1..],
        read: g,
        launch: &launch,
    };
    Ok(tensors[0].inplace_op1(&first)?)
}

/// The innermost call: the device, a mutable view of every written tensor (parameter
/// first), and the gradient's view.
type LaunchFn<'f, T> = dyn Fn(&CudaDevice, &mut [CudaViewMut<'_, T>], &CudaView<'_, T>) -> candle_core::Result<()>
    + 'f;

/// One level of nesting: takes the views gathered so far, adds this tensor's, and either
/// recurses into the next tensor or, at the end, views the gradient and launches.
struct Nest<'a, 'b, 'f, T> {
    acc: RefCell<Option<Vec<CudaViewMut<'a, T>>>>,
    rest: &'b [&'b Tensor],
    read: &'b Tensor,
    launch: &'b LaunchFn<'f, T>,
}

/// The contiguous range a layout covers.
fn range(l: &Layout) -> candle_core::Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => candle_core::bail!("fused CUDA step: tensor is not contiguous"),
    }
}

impl<T: KernelFloat> InplaceOp1 for Nest<'_, '_, '_, T> {
    fn name(&self) -> &'static str {
        "taper-fused-cuda-optimizer-step"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("fused CUDA step: a tensor is on the CPU")
    }

    fn cuda_fwd(&self, storage: &mut CudaStorage, layout: &Layout) -> candle_core::Result<()> {
        let r = range(layout)?;
        let dev = storage.device.clone();
        let view = storage.as_cuda_slice_mut::<T>()?.slice_mut(r);
        let Some(acc) = self.acc.borrow_mut().take() else {
            candle_core::bail!("fused CUDA step: storage visited twice")
        };
        let mut acc: Vec<CudaViewMut<'_, T>> = acc;
        acc.push(view);
        match self.rest.split_first() {
            Some((next, rest)) => next.inplace_op1(&Nest {
                acc: RefCell::new(Some(acc)),
                rest,
                read: self.read,
                launch: self.launch,
            }),
            None => {
                let (guard, l) = self.read.storage_and_layout();
                let Storage::Cuda(grad) = &*guard else {
                    candle_core::bail!("fused CUDA step: the gradient is not on the GPU")
                };
                let grad = grad.as_cuda_slice::<T>()?.slice(range(l)?);
                (self.launch)(&dev, &mut acc, &grad)
            }
        }
    }
}
