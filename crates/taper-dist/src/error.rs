//! The error type of taper-dist.

/// Everything that can go wrong setting up or running data-parallel training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from taper-tensor.
    #[error(transparent)]
    Tensor(#[from] taper_tensor::Error),

    /// An error from taper-optim.
    #[error(transparent)]
    Optim(#[from] taper_optim::Error),

    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The ranks do not hold the same model: names, kinds, shapes or dtypes differ.
    #[error(
        "the model differs across ranks: rank {rank}'s {what} differ from rank 0's \
         (first difference: {detail}); every rank must build the same model"
    )]
    Mismatch {
        /// What differs (`parameters and buffers`, `parameter values`).
        what: &'static str,
        /// The first rank that differs from rank 0.
        rank: usize,
        /// The first differing entry, in words.
        detail: String,
    },

    /// A setting or argument is out of range.
    #[error("invalid value for `{field}`: {value} ({expected})")]
    InvalidValue {
        /// The argument's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },

    /// Another rank failed a step that every rank must finish together, so this rank
    /// stopped too instead of waiting for it forever.
    #[error("rank {rank} failed during {op}; every rank stops")]
    PeerFailed {
        /// The operation.
        op: &'static str,
        /// The lowest failing rank.
        rank: usize,
    },

    /// A collective or a copy failed inside the transport (NCCL, CUDA).
    #[error("{op} failed: {reason}")]
    Transport {
        /// The operation.
        op: &'static str,
        /// What the library said.
        reason: String,
    },

    /// A step run on this rank alone failed (see [`Communicator::on_root`](crate::Communicator::on_root)).
    #[error("{op}: {source}")]
    Failed {
        /// The operation.
        op: &'static str,
        /// Its error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// MPI was already initialized in this process (there is one `Mpi` per process).
    #[error("MPI is already initialized in this process; create one `Mpi` and share it")]
    AlreadyInitialized,

    /// A launcher program such as `mpirun` was not found.
    #[error(
        "`{program}` was not found on the PATH ({searched}); install Open MPI \
         (`apt-get install openmpi-bin libopenmpi-dev`) or put its bin directory on the PATH"
    )]
    LauncherMissing {
        /// The program looked for.
        program: String,
        /// The directories searched.
        searched: String,
    },

    /// Launching or waiting for a program failed.
    #[error("{program}: {source}")]
    Launch {
        /// The program.
        program: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `Result` with taper-dist's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    expected: &'static str,
) -> Error {
    Error::InvalidValue {
        field,
        value: value.to_string(),
        expected,
    }
}
