//! `SingleProcess`: the world of one rank. It moves nothing; it lets code written for
//! data-parallel training (DDP, ZeRO-1, rank-0 checkpoints) run and be tested anywhere.

use crate::communicator::{check_counts, check_root};
use crate::{Communicator, Result};

/// A world of one process: every collective is the identity.
///
/// ```
/// use taper_dist::{Communicator, SingleProcess};
/// let comm = SingleProcess;
/// let mut g = [1.0f32, 2.0];
/// comm.all_reduce_sum_f32(&mut g)?;
/// assert_eq!((comm.rank(), comm.world_size(), g), (0, 1, [1.0, 2.0]));
/// # Ok::<(), taper_dist::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

fn gather<T: Copy>(send: &[T], counts: &[usize], recv: &mut [T]) -> Result<()> {
    check_counts(counts, 1, 0, send.len(), recv.len())?;
    recv.copy_from_slice(send);
    Ok(())
}

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn broadcast_f64(&self, _buf: &mut [f64], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn broadcast_u8(&self, _buf: &mut [u8], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()> {
        gather(send, counts, recv)
    }
    fn all_gather_f64(&self, send: &[f64], counts: &[usize], recv: &mut [f64]) -> Result<()> {
        gather(send, counts, recv)
    }
    fn all_gather_u8(&self, send: &[u8], counts: &[usize], recv: &mut [u8]) -> Result<()> {
        gather(send, counts, recv)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
