//! The error type of taper-tensor: one enum for every fallible public function of the crate.

/// Everything that can go wrong in taper-tensor.
///
/// Each variant names the parameter, tensor or value at fault and what was expected,
/// so a message is actionable without a backtrace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error raised by candle itself (shape mismatch inside an op, dtype error, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// No parameter or buffer of this name (or under this prefix) exists.
    #[error("no parameter or buffer named `{name}`{hint}")]
    UnknownName {
        /// The name or prefix that was looked up.
        name: String,
        /// Extra context, e.g. the closest known names; may be empty.
        hint: String,
    },

    /// A name is malformed (empty, or with an empty dotted segment such as `a..b`).
    #[error("invalid parameter name `{name}`: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A tensor does not have the shape that was expected for it.
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The expected dimensions.
        expected: Vec<usize>,
        /// The actual dimensions.
        actual: Vec<usize>,
    },

    /// A layer asked for a parameter or buffer another layer already took: two layers built
    /// on the same store view, which would share their weights silently.
    #[error(
        "`{name}` (shape {shape:?}) already belongs to a layer: two layers built on the same \
         store view would share their weights. Give each layer its own prefix with \
         `store.sub(\"name\")` (`Sequential::append_with` does this for its children); to \
         share the weight on purpose, take it with `store.shared(\"{name}\")`"
    )]
    AlreadyTaken {
        /// The full name.
        name: String,
        /// The shape of the existing entry.
        shape: Vec<usize>,
    },

    /// A name is registered twice with incompatible roles (a parameter and a buffer).
    #[error("`{name}` is already registered as a {existing}")]
    Conflict {
        /// The name registered twice.
        name: String,
        /// What it already is (`parameter` or `buffer`).
        existing: &'static str,
    },

    /// One or more gradients contain NaN or infinite values.
    #[error("non-finite gradient (NaN or inf) in: {}", names.join(", "))]
    NonFiniteGradient {
        /// The parameters whose gradients are not finite, in store order.
        names: Vec<String>,
    },

    /// The total gradient norm is NaN or infinite (raised by `clip_norm` with `NonFinite::Error`).
    #[error("the total {norm} norm of the gradients is {total}, which is not finite")]
    NonFiniteNorm {
        /// The norm type (`L2`, `inf`, ...).
        norm: String,
        /// The offending total.
        total: f64,
    },

    /// A hyperparameter or argument is out of range.
    #[error("invalid value for `{field}`: {value} ({expected})")]
    InvalidValue {
        /// The argument's name.
        field: &'static str,
        /// The value given, formatted.
        value: String,
        /// What was expected.
        expected: &'static str,
    },

    /// A device string could not be parsed.
    #[error("invalid device `{spec}`: expected `cpu`, `cuda` or `cuda:N` (N a GPU ordinal)")]
    InvalidDevice {
        /// The string given.
        spec: String,
    },

    /// CUDA was asked for but this build of Taper has no CUDA support.
    #[error(
        "device `{spec}` needs CUDA, but Taper was built without it; \
         rebuild with `--features cuda` (and a CUDA toolkit installed)"
    )]
    CudaNotCompiled {
        /// The device string that asked for CUDA.
        spec: String,
    },

    /// A CUDA build could not open the GPU asked for: no GPU, no driver, or an ordinal past
    /// the last GPU.
    #[error(
        "device `{spec}`: no CUDA GPU could be opened ({reason}); check `nvidia-smi` and \
         CUDA_VISIBLE_DEVICES, or use `cpu`"
    )]
    CudaUnavailable {
        /// The device string that asked for CUDA.
        spec: String,
        /// The driver's answer (e.g. `CUDA_ERROR_NO_DEVICE`).
        reason: String,
    },

    /// A file could not be read, written or understood.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// Loaded weights do not fit the model (strict loading).
    #[error("weights do not fit the model: {0}")]
    LoadMismatch(crate::serialize::LoadReport),

    /// A saved state holds a missing or invalid entry.
    #[error("state `{key}` {reason}")]
    State {
        /// The entry, `{prefix}.{field}`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Gradient check failed: analytic and numeric gradients disagree.
    #[error("gradcheck failed: {0}")]
    GradcheckFailed(String),
}

/// The result type of taper-tensor.
pub type Result<T> = std::result::Result<T, Error>;
