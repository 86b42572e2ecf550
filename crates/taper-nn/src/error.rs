//! The error type of taper-nn.

/// Everything that can go wrong when building or running a taper-nn layer or loss.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from taper-tensor (parameter registration, seeding, ...).
    #[error(transparent)]
    Tensor(#[from] taper_tensor::Error),

    /// An error raised by candle inside an op.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An input does not have the shape the layer or loss expects.
    #[error("{layer}: expected input of shape {expected}, got {actual:?}")]
    Shape {
        /// The layer or loss, with its configuration (e.g. `Linear(784 -> 256)`).
        layer: String,
        /// The expected shape, in words (e.g. `(*, 784)`).
        expected: String,
        /// The actual dimensions.
        actual: Vec<usize>,
    },

    /// An input has the right shape but the wrong element type.
    #[error("{layer}: expected {expected}, got {actual} of shape {dims:?}")]
    DType {
        /// The layer or loss.
        layer: String,
        /// What was expected, in words (e.g. `integer class targets (u8, u32 or i64)`).
        expected: String,
        /// The dtype given.
        actual: String,
        /// The input's dimensions.
        dims: Vec<usize>,
    },

    /// A model file could not be written, read or understood.
    #[error("model file {path}: {reason}")]
    Model {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// An ONNX model could not be written or read: `at` names the layer (its path in the
    /// model), the graph node and operator, or the file; `reason` says what was expected.
    #[error("ONNX {at}: {reason}")]
    Onnx {
        /// The layer, node or file.
        at: String,
        /// What is wrong.
        reason: String,
    },

    /// A constructor or loss argument is out of range.
    #[error("invalid value for `{field}`: {value} ({expected})")]
    InvalidValue {
        /// The argument's name, as PyTorch names it.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// The result type of taper-nn.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A shape error for `layer`.
    pub fn shape(layer: impl Into<String>, expected: impl Into<String>, actual: &[usize]) -> Self {
        Error::Shape {
            layer: layer.into(),
            expected: expected.into(),
            actual: actual.to_vec(),
        }
    }

    /// Converts to a candle error, for use inside `Module::forward` (which returns candle's
    /// `Result`). A wrapped candle error is unwrapped; others keep their message.
    pub fn into_candle(self) -> candle_core::Error {
        match self {
            Error::Candle(e) | Error::Tensor(taper_tensor::Error::Candle(e)) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// Checks a value with a predicate, else an [`Error::InvalidValue`] naming `field`.
pub(crate) fn check(
    field: &'static str,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            field,
            value: value.to_string(),
            expected,
        })
    }
}
