//! The error type of taper-data.

use std::path::PathBuf;

/// Everything that can go wrong loading, batching or transforming data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from taper-tensor.
    #[error(transparent)]
    Tensor(#[from] taper_tensor::Error),

    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A file's content is not what its format promises.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },

    /// A dataset could not be found where it was looked for.
    #[error("{what} not found: {tried}")]
    NotFound {
        /// The dataset.
        what: String,
        /// Where it was looked for, and how to get it.
        tried: String,
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

    /// A download failed or its checksum did not match.
    #[error("download of {url}: {reason}")]
    Download {
        /// The address.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// The result type of taper-data.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(field: &'static str, value: impl ToString, expected: &'static str) -> Error {
    Error::InvalidValue {
        field,
        value: value.to_string(),
        expected,
    }
}
