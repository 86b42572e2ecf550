//! `Mpi`: the [`Communicator`] over MPI (Open MPI from Debian, through rsmpi), for CPU
//! processes on one machine or many, launched with `mpirun`.
//!
//! MPI is initialized with `MPI_THREAD_FUNNELED`: only the thread that created the `Mpi`
//! calls MPI, while candle's and Taper's worker threads compute. MPI is finalized when the
//! `Mpi` is dropped.
//!
//! What a failure looks like: when a rank returns an error that the others can see (a
//! mismatched model, a failed checkpoint), every rank gets it through
//! [`Communicator::agree`]. When a rank dies instead (a panic, a kill, `exit` without
//! finalizing), Open MPI's `mpirun` notices that the process ended, kills the remaining
//! ranks — including those blocked in a collective — and exits non-zero with a message
//! naming the rank ("mpirun has exited due to process rank 1 … exited without calling
//! finalize" or "… exited on signal 9"). A rank that wants to stop the job on an error the
//! others cannot see calls [`Communicator::abort`].

use std::cell::RefCell;

use mpi::datatype::{Equivalence, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::{Communicator as _, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use mpi::Count;

use crate::communicator::{check_counts, check_root};
use crate::error::invalid;
use crate::{Communicator, Error, Result};

/// Elements per MPI call: MPI counts are 32-bit, so longer buffers go in chunks.
const CHUNK: usize = 1 << 30;

/// The MPI world of this job.
///
/// ```no_run
/// use taper_dist::{Communicator, Mpi};
/// let comm = Mpi::init()?; // under `mpirun -np 2`, ranks 0 and 1
/// let mut x = [comm.rank() as f32];
/// comm.all_reduce_sum_f32(&mut x)?;
/// assert_eq!(x[0], 1.0);
/// # Ok::<(), taper_dist::Error>(())
/// ```
pub struct Mpi {
    world: SimpleCommunicator,
    scratch32: RefCell<Vec<f32>>,
    scratch64: RefCell<Vec<f64>>,
    // Dropped last: finalizes MPI.
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank())
            .field("world_size", &self.world_size())
            .finish()
    }
}

impl Mpi {
    /// Initializes MPI and joins its world. Started without `mpirun`, the program is a world
    /// of one (MPI's singleton mode). A second call in the same process is
    /// [`Error::AlreadyInitialized`].
    pub fn init() -> Result<Self> {
        let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or(Error::AlreadyInitialized)?;
        Ok(Self {
            world: universe.world(),
            scratch32: RefCell::default(),
            scratch64: RefCell::default(),
            _universe: universe,
        })
    }

    /// The version string of the MPI library (e.g. `Open MPI v4.1.4, …`).
    pub fn library_version() -> String {
        mpi::environment::library_version().unwrap_or_else(|_| "unknown MPI".into())
    }

    /// The name of the machine this rank runs on.
    pub fn processor_name() -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "unknown".into())
    }

    fn reduce<T: Equivalence + Copy + Default>(&self, scratch: &RefCell<Vec<T>>, buf: &mut [T]) {
        let mut s = scratch.borrow_mut();
        for chunk in buf.chunks_mut(CHUNK) {
            s.clear();
            s.extend_from_slice(chunk);
            self.world
                .all_reduce_into(&s[..], chunk, mpi::collective::SystemOperation::sum());
        }
    }

    fn bcast<T: Equivalence>(&self, buf: &mut [T], root: usize) -> Result<()> {
        check_root(root, self.world_size())?;
        let root = self.world.process_at_rank(root as mpi::Rank);
        for chunk in buf.chunks_mut(CHUNK) {
            root.broadcast_into(chunk);
        }
        Ok(())
    }

    fn gather<T: Equivalence>(&self, send: &[T], counts: &[usize], recv: &mut [T]) -> Result<()> {
        check_counts(
            counts,
            self.world_size(),
            self.rank(),
            send.len(),
            recv.len(),
        )?;
        if recv.len() > i32::MAX as usize {
            return Err(invalid(
                "recv",
                recv.len(),
                "at most 2^31 - 1 elements per all-gather (MPI counts are 32-bit)",
            ));
        }
        let counts: Vec<Count> = counts.iter().map(|&c| c as Count).collect();
        let displs: Vec<Count> = counts
            .iter()
            .scan(0, |at, &c| {
                let d = *at;
                *at += c;
                Some(d)
            })
            .collect();
        let mut part = PartitionMut::new(recv, counts, displs);
        self.world.all_gather_varcount_into(send, &mut part);
        Ok(())
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn world_size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.reduce(&self.scratch32, buf);
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.reduce(&self.scratch64, buf);
        Ok(())
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.bcast(buf, root)
    }
    fn broadcast_f64(&self, buf: &mut [f64], root: usize) -> Result<()> {
        self.bcast(buf, root)
    }
    fn broadcast_u8(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.bcast(buf, root)
    }
    fn all_gather_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) -> Result<()> {
        self.gather(send, counts, recv)
    }
    fn all_gather_f64(&self, send: &[f64], counts: &[usize], recv: &mut [f64]) -> Result<()> {
        self.gather(send, counts, recv)
    }
    fn all_gather_u8(&self, send: &[u8], counts: &[usize], recv: &mut [u8]) -> Result<()> {
        self.gather(send, counts, recv)
    }
    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
