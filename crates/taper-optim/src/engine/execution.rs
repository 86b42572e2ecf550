//! Which implementation runs a parameter's update: decided in one place, [`decide`], which
//! the step uses and [`Optimizer::execution`](crate::Optimizer::execution) reports.
//!
//! The user chooses an [`UpdatePath`] (automatic, or always the generic candle ops); for
//! each parameter and step, [`decide`] turns that choice, the rule and the tensors into an
//! [`Execution`]: the fused in-place CPU loop, the fused CUDA kernel, or candle tensor ops
//! with the reason ([`TensorOpsReason`]).

use std::fmt;

use candle_core::{DType, DeviceLocation, Tensor};

use crate::backends::fused::{one_kernel, MAX_FUSED_STATE};
use crate::engine::rule::Rule;

/// Which update paths an optimizer may take (builder `Optimizer::update_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdatePath {
    /// The fused path where it applies (the in-place CPU loop; the CUDA kernel with feature
    /// `cuda`), else candle tensor ops. The default.
    #[default]
    Auto,
    /// Always candle tensor ops: every device and dtype, the reference the fused paths are
    /// tested against.
    Generic,
}

/// How one parameter's update runs: the decision the step makes and
/// [`Optimizer::execution`](crate::Optimizer::execution) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// The fused in-place CPU loop, carrying this many state tensors.
    FusedCpu {
        /// The rule's state tensors for this parameter.
        state_tensors: usize,
    },
    /// The rule's generated kernel, compiled by NVRTC and launched in place on the GPU
    /// (feature `cuda`). A rule needing more than
    /// [`MAX_KERNEL_CONSTANTS`](crate::MAX_KERNEL_CONSTANTS) per-step constants would fall
    /// back to tensor ops; no registered rule does.
    FusedCuda {
        /// The rule's state tensors for this parameter.
        state_tensors: usize,
    },
    /// candle tensor ops, for the reason given.
    TensorOps(TensorOpsReason),
}

/// Why a parameter's update takes candle tensor ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorOpsReason {
    /// The rule steps this parameter as a whole tensor (reductions along axes, matrix
    /// products: Adafactor, Muon).
    WholeTensor {
        /// The algorithm.
        rule: &'static str,
    },
    /// [`UpdatePath::Generic`] was chosen.
    GenericChosen,
    /// The parameter's dtype has no fused path (only f32 and f64 have).
    DType(DType),
    /// The parameter's device has no fused path (CUDA without feature `cuda`, Metal).
    Device(DeviceLocation),
    /// The rule keeps more state tensors than the fused CPU loop carries.
    TooMuchState {
        /// The algorithm.
        rule: &'static str,
        /// Its state tensors for this parameter.
        kept: usize,
    },
    /// The gradient or a state tensor is not contiguous, or not of the parameter's dtype,
    /// device or size (or the parameter itself is not contiguous).
    Layout,
}

impl Execution {
    /// Whether a fused path (CPU loop or CUDA kernel) runs the update.
    pub fn is_fused(&self) -> bool {
        !matches!(self, Execution::TensorOps(_))
    }
}

impl fmt::Display for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Execution::FusedCpu { state_tensors } => {
                write!(f, "fused CPU loop ({state_tensors} state tensors)")
            }
            Execution::FusedCuda { state_tensors } => {
                write!(
                    f,
                    "fused CUDA kernel, NVRTC ({state_tensors} state tensors)"
                )
            }
            Execution::TensorOps(why) => match why {
                TensorOpsReason::WholeTensor { rule } => {
                    write!(f, "tensor ops: {rule} steps whole tensors")
                }
                TensorOpsReason::GenericChosen => {
                    write!(f, "tensor ops (UpdatePath::Generic was chosen)")
                }
                TensorOpsReason::DType(dt) => {
                    write!(f, "tensor ops: {dt:?} parameters have no fused path")
                }
                TensorOpsReason::Device(loc) => write!(f, "tensor ops: {loc:?} has no fused path"),
                TensorOpsReason::TooMuchState { rule, kept } => write!(
                    f,
                    "tensor ops: {rule} keeps {kept} state tensors, more than the fused loop's \
                     MAX_FUSED_STATE = {MAX_FUSED_STATE}"
                ),
                TensorOpsReason::Layout => write!(
                    f,
                    "tensor ops: the gradient or state is not contiguous, or not of the \
                     parameter's dtype, device or size"
                ),
            },
        }
    }
}

/// The one decision of how `rule` updates parameter `p` under `choice`.
///
/// `g` and `state` are this step's gradient and the parameter's state tensors; `None`
/// stands for what a step would bring when nothing else is known (a gradient like the
/// parameter; fresh state, as many tensors as [`Rule::slots_for`] lists), which is how
/// [`Optimizer::execution`](crate::Optimizer::execution) reports the path before a step.
pub(crate) fn decide<R: Rule>(
    rule: &R,
    choice: UpdatePath,
    p: &Tensor,
    g: Option<&Tensor>,
    state: Option<&[Tensor]>,
) -> Execution {
    use TensorOpsReason::*;
    let ops = Execution::TensorOps;
    if rule.whole_tensor(p.dims()) {
        return ops(WholeTensor { rule: R::NAME });
    }
    if choice == UpdatePath::Generic {
        return ops(GenericChosen);
    }
    if !matches!(p.dtype(), candle_core::DType::F32 | candle_core::DType::F64) {
        return ops(DType(p.dtype()));
    }
    let state_tensors = state.map_or_else(|| rule.slots_for(p.dims()).len(), <[Tensor]>::len);
    let fused = if p.device().is_cpu() {
        if state_tensors > MAX_FUSED_STATE {
            return ops(TooMuchState {
                rule: R::NAME,
                kept: state_tensors,
            });
        }
        Execution::FusedCpu { state_tensors }
    } else if cfg!(feature = "cuda") && p.device().is_cuda() {
        Execution::FusedCuda { state_tensors }
    } else {
        return ops(Device(p.device().location()));
    };
    if !one_kernel(p, g.unwrap_or(p), state.unwrap_or(&[])) {
        return ops(Layout);
    }
    fused
}
