//! `Lane`: the element-wise arithmetic every update rule is written in, once.
//!
//! A rule's math is a generic function over `L: Lane`. It runs as whole-tensor candle ops
//! (`L = Tensor`, the device-generic path for CPU and CUDA) and as scalar code inside the
//! fused CPU loop (`L = f32` or `f64`, infallible, inlined and vectorized). One formula,
//! two paths; the tests check that they agree.

use std::convert::Infallible;

use candle_core::Tensor;

/// Element-wise arithmetic on a lane: a scalar or a whole tensor.
pub trait Lane: Sized + Clone {
    /// The error type: `Infallible` for scalars, candle's for tensors.
    type Err;
    /// self + o.
    fn add(&self, o: &Self) -> Result<Self, Self::Err>;
    /// self − o.
    fn sub(&self, o: &Self) -> Result<Self, Self::Err>;
    /// self · o.
    fn mul(&self, o: &Self) -> Result<Self, Self::Err>;
    /// self / o.
    fn div(&self, o: &Self) -> Result<Self, Self::Err>;
    /// self·a + b, with scalar hyperparameters.
    fn affine(&self, a: f64, b: f64) -> Result<Self, Self::Err>;
    /// √self.
    fn sqrt(&self) -> Result<Self, Self::Err>;
    /// |self|.
    fn abs(&self) -> Result<Self, Self::Err>;
    /// −1, 0 or 1.
    fn sign(&self) -> Result<Self, Self::Err>;
    /// Element-wise maximum.
    fn maximum(&self, o: &Self) -> Result<Self, Self::Err>;

    /// self·a.
    #[inline(always)]
    fn scale(&self, a: f64) -> Result<Self, Self::Err> {
        self.affine(a, 0.0)
    }

    /// self².
    #[inline(always)]
    fn sqr(&self) -> Result<Self, Self::Err> {
        self.mul(self)
    }

    /// β·self + (1 − β)·x: an exponential moving average step.
    #[inline(always)]
    fn ema(&self, x: &Self, beta: f64) -> Result<Self, Self::Err> {
        self.scale(beta)?.add(&x.scale(1.0 - beta)?)
    }
}

macro_rules! scalar_lane {
    ($t:ty) => {
        impl Lane for $t {
            type Err = Infallible;
            #[inline(always)]
            fn add(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(self + o)
            }
            #[inline(always)]
            fn sub(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(self - o)
            }
            #[inline(always)]
            fn mul(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(self * o)
            }
            #[inline(always)]
            fn div(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(self / o)
            }
            #[inline(always)]
            fn affine(&self, a: f64, b: f64) -> Result<Self, Infallible> {
                Ok(self * a as $t + b as $t)
            }
            #[inline(always)]
            fn scale(&self, a: f64) -> Result<Self, Infallible> {
                Ok(self * a as $t)
            }
            #[inline(always)]
            fn sqrt(&self) -> Result<Self, Infallible> {
                Ok(<$t>::sqrt(*self))
            }
            #[inline(always)]
            fn abs(&self) -> Result<Self, Infallible> {
                Ok(<$t>::abs(*self))
            }
            #[inline(always)]
            fn sign(&self) -> Result<Self, Infallible> {
                // Like torch.sign: 0 at 0 (f32::signum would give ±1).
                Ok(if *self > 0.0 {
                    1.0
                } else if *self < 0.0 {
                    -1.0
                } else {
                    0.0
                })
            }
            #[inline(always)]
            fn maximum(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(if *self >= *o { *self } else { *o })
            }
        }
    };
}

scalar_lane!(f32);
scalar_lane!(f64);

impl Lane for Tensor {
    type Err = candle_core::Error;
    fn add(&self, o: &Self) -> candle_core::Result<Self> {
        Tensor::add(self, o)
    }
    fn sub(&self, o: &Self) -> candle_core::Result<Self> {
        Tensor::sub(self, o)
    }
    fn mul(&self, o: &Self) -> candle_core::Result<Self> {
        Tensor::mul(self, o)
    }
    fn div(&self, o: &Self) -> candle_core::Result<Self> {
        Tensor::div(self, o)
    }
    fn affine(&self, a: f64, b: f64) -> candle_core::Result<Self> {
        Tensor::affine(self, a, b)
    }
    fn sqrt(&self) -> candle_core::Result<Self> {
        Tensor::sqrt(self)
    }
    fn abs(&self) -> candle_core::Result<Self> {
        Tensor::abs(self)
    }
    fn sign(&self) -> candle_core::Result<Self> {
        Tensor::sign(self)
    }
    fn maximum(&self, o: &Self) -> candle_core::Result<Self> {
        Tensor::maximum(self, o)
    }
}

/// Eight (or `N`) scalars processed together: the fused CPU loop runs a rule on blocks, so
/// each operation is a fixed-size array loop that LLVM turns into SIMD instructions, and the
/// rule's branches are taken once per block rather than once per element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block<T, const N: usize>(pub [T; N]);

macro_rules! block_lane {
    ($t:ty) => {
        impl<const N: usize> Lane for Block<$t, N> {
            type Err = Infallible;
            #[inline(always)]
            fn add(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(Block(std::array::from_fn(|i| self.0[i] + o.0[i])))
            }
            #[inline(always)]
            fn sub(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(Block(std::array::from_fn(|i| self.0[i] - o.0[i])))
            }
            #[inline(always)]
            fn mul(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(Block(std::array::from_fn(|i| self.0[i] * o.0[i])))
            }
            #[inline(always)]
            fn div(&self, o: &Self) -> Result<Self, Infallible> {
                Ok(Block(std::array::from_fn(|i| self.0[i] / o.0[i])))
            }
            #[inline(always)]
            fn affine(&self, a: f64, b: f64) -> Result<Self, Infallible> {
                let (a, b) = (a as $t, b as $t);
                Ok(Block(std::array::from_fn(|i| self.0[i] * a + b)))
            }
            #[inline(always)]
            fn scale(&self, a: f64) -> Result<Self, Infallible> {
                // A plain product: `affine(a, 0)` would add 0.0, which the compiler must keep.
                let a = a as $t;
                Ok(Block(std::array::from_fn(|i| self.0[i] * a)))
            }
            #[inline(always)]
            fn sqrt(&self) -> Result<Self, Infallible> {
                Ok(Block(std::array::from_fn(|i| self.0[i].sqrt())))
            }
            #[inline(always)]
            fn abs(&self) -> Result<Self, Infallible> {
                Ok(Block(std::array::from_fn(|i| self.0[i].abs())))
            }
            #[inline(always)]
            fn sign(&self) -> Result<Self, Infallible> {
                Ok(Block(std::array::from_fn(|i| {
                    let x = self.0[i];
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        0.0
                    }
                })))
            }
            #[inline(always)]
            fn maximum(&self, o: &Self) -> Result<Self, Infallible> {
                // `a > b ? a : b` is exactly the SIMD max instruction; `>=` is not, and kept
                // AMSGrad's loop at half speed. The two differ only in the sign of a zero.
                Ok(Block(std::array::from_fn(|i| {
                    if self.0[i] > o.0[i] {
                        self.0[i]
                    } else {
                        o.0[i]
                    }
                })))
            }
        }
    };
}

block_lane!(f32);
block_lane!(f64);
