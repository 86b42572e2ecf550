//! Matrix products for the CPU kernels: multithreaded ones for `Linear`, single-threaded
//! ones for kernels that already split their work across threads (`Conv2d`), in f32 and f64.
//!
//! candle multiplies through the `gemm` crate and lets it choose its own threading. For the
//! small products of a training step (a 64-row batch against a 784×256 weight) that scaled
//! 1.07× from one core to two on the benchmark machine. Here the output is cut into one
//! block per thread along its longer side, and each block is one single-threaded `gemm`
//! call, so the threads share no work and wait on nothing but the final join.

use gemm::Parallelism;
use rayon::prelude::*;

/// The element types the CPU kernels run on: f32 and f64.
pub(crate) trait Elem:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::AddAssign
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::fmt::Debug
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// −∞, the identity of max.
    const NEG_INFINITY: Self;
    /// Whether this is NaN.
    fn is_nan(self) -> bool;
    /// The value nearest to `v`.
    fn from_f64(v: f64) -> Self;
    /// This value in f64 (exact).
    fn to_f64(self) -> f64;
    /// eˣ in this type's precision (f32's `expf` is several times faster than f64's `exp`).
    fn exp(self) -> Self;
    /// `if take { a } else { b }` by bit masks: no branch, whatever the compiler would
    /// choose (a branch on an unpredictable comparison costs more than the arithmetic).
    fn select(take: bool, a: Self, b: Self) -> Self;
    /// Calls `f` with this thread's scratch buffer of `len` elements, kept between calls so
    /// that a kernel allocates nothing per step. Its contents are whatever the last user
    /// left: `f` must write before it reads. (A nested call gets a fresh buffer.)
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! elem {
    ($t:ty, $bits:ty, $scratch:ident) => {
        thread_local! {
            static $scratch: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
        }

        impl Elem for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn select(take: bool, a: Self, b: Self) -> Self {
                let mask = <$bits>::from(take).wrapping_neg();
                <$t>::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
            }
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                $scratch.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        if buf.len() < len {
                            buf.resize(len, 0.0);
                        }
                        f(&mut buf[..len])
                    }
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }
        }
    };
}
elem!(f32, u32, SCRATCH_F32);
elem!(f64, u64, SCRATCH_F64);

/// Multiply-adds below which a product stays on one thread (about 10 µs of work).
const MIN_WORK_PER_THREAD: usize = 1 << 17;

/// A read-only strided matrix: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T = f32> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major `rows × cols` matrix; `None` when `data` is too short.
    pub(crate) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Option<Self> {
        (data.len() >= rows * cols).then_some(View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        })
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows `r0..r0 + rows`.
    fn row_range(self, r0: usize, rows: usize) -> Self {
        View {
            data: &self.data[r0 * self.rs..],
            rows,
            ..self
        }
    }

    /// Columns `c0..c0 + cols`.
    fn col_range(self, c0: usize, cols: usize) -> Self {
        View {
            data: &self.data[c0 * self.cs..],
            cols,
            ..self
        }
    }

    /// Whether every element lies inside `data` (checked before handing pointers to gemm).
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// A raw output pointer that may cross threads: each thread writes a disjoint block.
#[derive(Clone, Copy)]
struct Out<T>(*mut T);
// SAFETY: the blocks handed to different threads never overlap (see `matmul_into`).
unsafe impl<T> Send for Out<T> {}
unsafe impl<T> Sync for Out<T> {}

impl<T> Out<T> {
    /// The pointer. A method, so closures capture the whole `Out` (which is `Send`) rather
    /// than its raw-pointer field (which is not).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Whether `a·b` is defined and both views lie inside their data.
fn fits<T>(a: &View<'_, T>, b: &View<'_, T>) -> bool {
    b.rows == a.cols && a.in_bounds() && b.in_bounds()
}

/// `dst = a·b`, or `dst += a·b` when `accumulate`, on the calling thread only; `dst` is
/// row-major `a.rows × b.cols`. For kernels that split their work across threads
/// themselves. Returns `false` (and leaves `dst` alone) when the shapes do not fit.
pub(crate) fn matmul_serial<T: Elem>(
    dst: &mut [T],
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
) -> bool {
    product_into(dst, a, b, accumulate, false)
}

/// `dst = a·b`, or `dst += a·b` when `accumulate`, on all threads; `dst` is row-major
/// `a.rows × b.cols`.
///
/// Returns `false` (and leaves `dst` alone) when the shapes do not fit; the caller then
/// takes candle's path.
pub(crate) fn matmul_into<T: Elem>(
    dst: &mut [T],
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
) -> bool {
    product_into(dst, a, b, accumulate, true)
}

/// [`matmul_into`] (`parallel`) or [`matmul_serial`].
fn product_into<T: Elem>(
    dst: &mut [T],
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
    parallel: bool,
) -> bool {
    if !fits(&a, &b) || dst.len() != a.rows * b.cols {
        return false;
    }
    if a.cols == 0 || a.rows == 0 || b.cols == 0 {
        if !accumulate {
            dst.fill(T::ZERO);
        }
        return true;
    }
    // SAFETY: `dst` is exclusively borrowed and holds exactly the m×n output; the views
    // were checked by `fits`.
    unsafe {
        if parallel {
            product(dst.as_mut_ptr(), a, b, accumulate)
        } else {
            block(dst.as_mut_ptr(), b.cols, a.rows, b.cols, a, b, accumulate)
        }
    }
    true
}

/// `a·b` as a new row-major vector, written once (no zero-fill first); `None` when the
/// shapes do not fit.
pub(crate) fn matmul<T: Elem>(a: View<'_, T>, b: View<'_, T>) -> Option<Vec<T>> {
    if !fits(&a, &b) {
        return None;
    }
    let len = a.rows * b.cols;
    if a.cols == 0 {
        return Some(vec![T::ZERO; len]);
    }
    let mut out = Vec::<T>::with_capacity(len);
    // SAFETY: the spare capacity holds `len` floats; with `accumulate == false` and k > 0,
    // gemm writes every element of the output before anything reads it, so all `len`
    // elements are initialized when `set_len` runs.
    unsafe {
        product(out.spare_capacity_mut().as_mut_ptr().cast(), a, b, false);
        out.set_len(len);
    }
    Some(out)
}

/// The product on all threads: one block per thread along the output's longer side.
///
/// # Safety
/// `dst` must be valid for `a.rows × b.cols` row-major writes (and reads when
/// `accumulate`), with `fits(a, b)` and `a.cols > 0`.
unsafe fn product<T: Elem>(dst: *mut T, a: View<'_, T>, b: View<'_, T>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    let parts = rayon::current_num_threads()
        .min(m * n * k / MIN_WORK_PER_THREAD)
        .max(1);
    let out = Out(dst);
    let (along_rows, len) = if m >= n { (true, m) } else { (false, n) };
    let step = len.div_ceil(parts);
    (0..len.div_ceil(step)).into_par_iter().for_each(|i| {
        let (s, l) = (i * step, step.min(len - i * step));
        let out = out.get();
        // SAFETY: block i covers rows (or columns) s..s+l of the m×n output only, so the
        // blocks are disjoint; sub-views stay inside the checked views; the caller keeps
        // `dst` alive until this loop returns.
        unsafe {
            if along_rows {
                block(out.add(s * n), n, l, n, a.row_range(s, l), b, accumulate)
            } else {
                block(out.add(s), n, m, l, a, b.col_range(s, l), accumulate)
            }
        }
    });
}

/// One single-threaded product into a block of a row-major output with row stride `rs`.
///
/// # Safety
/// `dst` must be valid for writes of the `m × n` block with row stride `rs`, and no other
/// thread may touch that block meanwhile.
unsafe fn block<T: Elem>(
    dst: *mut T,
    rs: usize,
    m: usize,
    n: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    acc: bool,
) {
    // SAFETY: the caller guarantees `dst`; `a` and `b` are in-bounds views of live slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            a.cols,
            dst,
            1,
            rs as isize,
            acc,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View<'_>, b: View<'_>) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    out[i * b.cols + j] +=
                        a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn blocks_match_a_float64_product_for_every_split_and_transpose() {
        // Shapes on both sides of the threading threshold, split along rows and columns.
        for &(m, k, n) in &[
            (3, 5, 4),
            (64, 784, 256),
            (256, 64, 784),
            (64, 256, 10),
            (1, 7, 1),
        ] {
            let av: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let bv: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let a = View::row_major(&av, m, k).unwrap();
            // b stored transposed: n×k row-major, viewed as k×n.
            let bt = View::row_major(&bv, n, k).unwrap().t();
            for (b, name) in [(View::row_major(&bv, k, n).unwrap(), "b"), (bt, "bᵀ")] {
                let want = naive(a, b);
                let mut got = vec![f32::NAN; m * n];
                assert!(matmul_into(&mut got, a, b, false));
                let fresh = matmul(a, b).unwrap();
                let mut serial = vec![f32::NAN; m * n];
                assert!(matmul_serial(&mut serial, a, b, false));
                let mut acc = vec![1.0f32; m * n];
                assert!(matmul_into(&mut acc, a, b, true));
                for i in 0..m * n {
                    let tol = 1e-4 * (1.0 + want[i].abs());
                    assert!(
                        (got[i] as f64 - want[i]).abs() < tol,
                        "{m}x{k}x{n} {name} [{i}]"
                    );
                    assert_eq!(fresh[i], got[i], "matmul and matmul_into agree [{i}]");
                    assert!((serial[i] as f64 - want[i]).abs() < tol, "serial [{i}]");
                    assert!(
                        (acc[i] as f64 - want[i] - 1.0).abs() < tol,
                        "accumulate [{i}]"
                    );
                }
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let v = vec![0.0f32; 6];
        let a = View::row_major(&v, 2, 3).unwrap();
        let mut dst = vec![0.0f32; 4];
        assert!(!matmul_into(&mut dst, a, a, false));
        assert!(!matmul_serial(&mut dst, a, a, true));
        assert!(matmul(a, a).is_none());
        assert!(View::row_major(&v, 4, 2).is_none());
    }
}
