//! Gradient buckets: the flat buffers that one all-reduce call moves.
//!
//! As in PyTorch's DDP (`bucket_cap_mb=25`), small gradients are packed into flat buffers of
//! up to a capacity, so that one collective call moves many tensors and pays the per-call
//! latency once. Buckets hold one dtype each, take the parameters in the store's order
//! (which every rank checks is the same at start-up), and a tensor larger than the capacity
//! gets a bucket of its own. The plan is a pure function of the names, shapes, dtypes and
//! capacity, so it is identical on every rank.

use candle_core::{DType, Storage, Tensor, WithDType};

use crate::error::invalid;
use crate::{Communicator, Result};

/// PyTorch DDP's default bucket capacity, 25 MiB.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// One parameter's place in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The parameter's index in the plan's parameter list.
    pub index: usize,
    /// The parameter's name.
    pub name: String,
    /// Its first element's offset in the bucket.
    pub offset: usize,
    /// Its shape.
    pub dims: Vec<usize>,
}

/// A flat buffer of one dtype holding several gradients end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The element type (f32 or f64).
    pub dtype: DType,
    /// The gradients it holds, in order.
    pub members: Vec<Member>,
    /// Elements in all.
    pub len: usize,
}

/// How a model's gradients are packed into buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    /// The buckets, in the order they are reduced.
    pub buckets: Vec<Bucket>,
}

impl BucketPlan {
    /// Packs `(name, shape, dtype)` entries, in order, into buckets of at most `cap_bytes`
    /// (a larger tensor gets its own). Only f32 and f64 parameters can be reduced.
    ///
    /// ```
    /// use taper_dist::BucketPlan;
    /// use candle_core::DType;
    /// let params = [("a", vec![256], DType::F32), ("b", vec![256], DType::F32), ("c", vec![2048], DType::F32)];
    /// let owned: Vec<(String, Vec<usize>, DType)> = params.iter().map(|(n, d, t)| (n.to_string(), d.clone(), *t)).collect();
    /// let plan = BucketPlan::new(&owned, 4096)?; // 1024 f32 per bucket
    /// let sizes: Vec<usize> = plan.buckets.iter().map(|b| b.len).collect();
    /// assert_eq!(sizes, [512, 2048]); // a and b share one call; c is larger than the cap
    /// # Ok::<(), taper_dist::Error>(())
    /// ```
    pub fn new(params: &[(String, Vec<usize>, DType)], cap_bytes: usize) -> Result<Self> {
        if cap_bytes == 0 {
            return Err(invalid("bucket_cap_bytes", 0, "at least one byte"));
        }
        let mut buckets: Vec<Bucket> = Vec::new();
        // The bucket being filled for each dtype.
        let mut open: Vec<(DType, usize)> = Vec::new();
        for (index, (name, dims, dtype)) in params.iter().enumerate() {
            if !matches!(dtype, DType::F32 | DType::F64) {
                return Err(invalid(
                    "parameter dtype",
                    format!("{name}: {dtype:?}"),
                    "f32 or f64 parameters (gradients are averaged in their own dtype)",
                ));
            }
            let n: usize = dims.iter().product();
            let cap = (cap_bytes / dtype.size_in_bytes()).max(1);
            let slot = open.iter().position(|(d, _)| d == dtype);
            let fits = slot.is_some_and(|s| {
                let b = &buckets[open[s].1];
                b.len + n <= cap
            });
            let bi = if fits {
                open[slot.expect("fits implies an open bucket")].1
            } else {
                buckets.push(Bucket {
                    dtype: *dtype,
                    members: Vec::new(),
                    len: 0,
                });
                let bi = buckets.len() - 1;
                match slot {
                    Some(s) => open[s].1 = bi,
                    None => open.push((*dtype, bi)),
                }
                bi
            };
            let b = &mut buckets[bi];
            b.members.push(Member {
                index,
                name: name.clone(),
                offset: b.len,
                dims: dims.clone(),
            });
            b.len += n;
        }
        Ok(Self { buckets })
    }

    /// Elements in all buckets together.
    pub fn elements(&self) -> usize {
        self.buckets.iter().map(|b| b.len).sum()
    }

    /// Bytes one all-reduce of every bucket moves in (and out of) each rank.
    pub fn bytes(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.len * b.dtype.size_in_bytes())
            .sum()
    }
}

/// The element types a communicator reduces: f32 and f64.
pub(crate) trait Elem: WithDType + Copy + Default {
    fn all_reduce<C: Communicator>(c: &C, buf: &mut [Self]) -> Result<()>;
    fn all_gather<C: Communicator>(
        c: &C,
        send: &[Self],
        counts: &[usize],
        recv: &mut [Self],
    ) -> Result<()>;
}

impl Elem for f32 {
    fn all_reduce<C: Communicator>(c: &C, buf: &mut [Self]) -> Result<()> {
        c.all_reduce_sum_f32(buf)
    }
    fn all_gather<C: Communicator>(
        c: &C,
        send: &[Self],
        counts: &[usize],
        recv: &mut [Self],
    ) -> Result<()> {
        c.all_gather_f32(send, counts, recv)
    }
}

impl Elem for f64 {
    fn all_reduce<C: Communicator>(c: &C, buf: &mut [Self]) -> Result<()> {
        c.all_reduce_sum_f64(buf)
    }
    fn all_gather<C: Communicator>(
        c: &C,
        send: &[Self],
        counts: &[usize],
        recv: &mut [Self],
    ) -> Result<()> {
        c.all_gather_f64(send, counts, recv)
    }
}

/// Copies `t`'s elements (converted to `T` if needed) into `out`, without an intermediate
/// allocation for contiguous CPU tensors of type `T`.
pub(crate) fn copy_out<T: Elem>(t: &Tensor, out: &mut [T]) -> Result<()> {
    if t.dtype() == T::DTYPE {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            let src = <T as WithDType>::cpu_storage_as_slice(cpu)?;
            out.copy_from_slice(&src[a..b]);
            return Ok(());
        }
    }
    let v = t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?;
    out.copy_from_slice(&v);
    Ok(())
}
