//! `MaxPool2d` and `AvgPool2d` over (N, C, H, W), no padding, floor mode (PyTorch's defaults).
//!
//! On the CPU, f32 and f64 inputs take Taper's own kernels (`cpu/pool.rs`): one autograd
//! node each, max pooling remembering its argmax for a one-pass backward. Ties in a max
//! window send the whole gradient to the first maximum, as PyTorch does. Other dtypes and
//! devices, and everything inside [`taper_tensor::with_generic_kernels`], take candle's
//! generic ops below, where a tie splits the gradient between the tied inputs.
//!
//! On the generic path, when the stride equals the kernel (the common case), max pooling reshapes the input into
//! windows and reduces them, and average pooling uses candle's kernel. Candle cannot
//! differentiate its pooling kernels for other strides (and its max-pool backward is off by
//! the window size), so there the windows are gathered with `index_select`, which is
//! differentiable on every device, and reduced.

use candle_core::{DType, Result, Tensor};
use taper_tensor::Module;

use crate::cpu::pool::{pool2d, Reduce};
use crate::error::Error;

fn pool(
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    how: Reduce,
    name: &str,
) -> Result<Tensor> {
    let (kh, kw) = kernel;
    let layer = || format!("{name}(kernel {kernel:?}, stride {stride:?})");
    if kh == 0 || kw == 0 || stride.0 == 0 || stride.1 == 0 {
        return Err(Error::InvalidValue {
            field: "kernel and stride",
            value: format!("{kernel:?} and {stride:?}"),
            expected: "positive window sizes and strides",
        }
        .into_candle());
    }
    if x.rank() != 4 || x.dims()[2] < kh || x.dims()[3] < kw {
        let expected = format!("(N, C, H >= {kh}, W >= {kw})");
        return Err(Error::shape(layer(), expected, x.dims()).into_candle());
    }
    if let Some(y) = pool2d(x, kernel, stride, how)? {
        return Ok(y);
    }
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = ((h - kh) / stride.0 + 1, (w - kw) / stride.1 + 1);
    if kernel == stride {
        return match how {
            // Candle's max-pool backward scales the gradient by 1/(kh·kw) (0.11); a
            // reshape into windows and a max reduction differentiate correctly.
            Reduce::Max => x
                .narrow(2, 0, oh * kh)?
                .narrow(3, 0, ow * kw)?
                .reshape((n, c, oh, kh, ow, kw))?
                .max(5)?
                .max(3),
            // candle's avg-pool backward assumes the windows tile the input exactly, so
            // the rows and columns past the last window are cut first.
            Reduce::Mean => x
                .narrow(2, 0, oh * kh)?
                .narrow(3, 0, ow * kw)?
                .avg_pool2d_with_stride(kernel, stride),
        };
    }
    let index = |offset: usize, n: usize, step: usize| {
        let v: Vec<u32> = (0..n).map(|o| (offset + o * step) as u32).collect();
        Tensor::from_vec(v, n, x.device())
    };
    let mut windows = Vec::with_capacity(kh * kw);
    for i in 0..kh {
        let rows = x.index_select(&index(i, oh, stride.0)?, 2)?;
        for j in 0..kw {
            windows.push(rows.index_select(&index(j, ow, stride.1)?, 3)?);
        }
    }
    let stacked = Tensor::stack(&windows, 4)?;
    match how {
        Reduce::Max => stacked.max(4),
        Reduce::Mean => stacked.mean(4),
    }
}

/// A 2-d pooling layer: the same windows, reduced by `$reduce`.
macro_rules! pool_layer {
    ($name:ident, $reduce:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            /// Window size (kh, kw).
            pub kernel: (usize, usize),
            /// Step (sh, sw).
            pub stride: (usize, usize),
        }

        impl $name {
            /// Square windows of size `k` with stride `k` (PyTorch's default stride).
            pub fn new(k: usize) -> Self {
                Self {
                    kernel: (k, k),
                    stride: (k, k),
                }
            }

            /// Builder: the stride `s` in both dimensions.
            pub fn stride(mut self, s: usize) -> Self {
                self.stride = (s, s);
                self
            }
        }

        impl Module for $name {
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                pool(x, self.kernel, self.stride, $reduce, stringify!($name))
            }
        }
    };
}

pool_layer!(
    MaxPool2d,
    Reduce::Max,
    "`nn.MaxPool2d(kernel_size, stride=kernel_size)`: `MaxPool2d::new(k)`, `.stride(s)`."
);
pool_layer!(
    AvgPool2d,
    Reduce::Mean,
    "`nn.AvgPool2d(kernel_size, stride=kernel_size)`: `AvgPool2d::new(k)`, `.stride(s)`."
);

/// Whether a dtype is an integer type usable as indices.
pub(crate) fn is_index_dtype(dt: DType) -> bool {
    matches!(dt, DType::U8 | DType::U32 | DType::I64)
}
