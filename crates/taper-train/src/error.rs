//! The error type of taper-train.

/// Everything that can go wrong in taper-train.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from taper-tensor.
    #[error(transparent)]
    Tensor(#[from] taper_tensor::Error),

    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error from taper-optim (optimizer state).
    #[error(transparent)]
    Optim(#[from] taper_optim::Error),

    /// An error from taper-data (a dataset or loader).
    #[error(transparent)]
    Data(#[from] taper_data::Error),

    /// The loss function given to `fit` failed.
    #[error("loss: {0}")]
    Loss(Box<dyn std::error::Error + Send + Sync>),

    /// A checkpoint could not be written, read or understood.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// A plot could not be drawn or written.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The image file.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// A log (a TensorBoard event file) could not be written.
    #[error("log {path}: {reason}")]
    Log {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// A setting is out of range.
    #[error("invalid value for `{field}`: {value} ({expected})")]
    InvalidValue {
        /// The setting's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// The result type of taper-train.
pub type Result<T> = std::result::Result<T, Error>;
