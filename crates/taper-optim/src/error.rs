//! The error type of taper-optim.

/// Everything that can go wrong building, stepping, saving or loading an optimizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from taper-tensor.
    #[error(transparent)]
    Tensor(#[from] taper_tensor::Error),

    /// An error raised by candle inside an op.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A hyperparameter is out of range; raised when an optimizer or schedule is built or
    /// changed.
    #[error("{owner}: invalid value for `{field}`: {value} ({expected})")]
    InvalidHyperparameter {
        /// Whose hyperparameter it is: the optimizer, schedule or controller, as PyTorch
        /// names it (`Adam`, `StepLR`, `ReduceLROnPlateau`).
        owner: &'static str,
        /// The hyperparameter's name, as torch.optim names it.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },

    /// A schedule was stepped past its end (OneCycleLR's `total_steps`).
    #[error("{schedule}: tried to step {step} times; `total_steps` is {total_steps}")]
    ScheduleFinished {
        /// The schedule.
        schedule: &'static str,
        /// The step asked for.
        step: u64,
        /// The schedule's length.
        total_steps: u64,
    },

    /// A learning-rate controller was stepped without what it needs (a metric, gradients).
    #[error("{controller}: stepped without {needs}")]
    MissingSignal {
        /// The controller (`ReduceLROnPlateau`, `GradNormRatio`).
        controller: &'static str,
        /// What it needs.
        needs: &'static str,
    },

    /// A gradient's shape differs from its parameter's.
    #[error("gradient of `{name}` has shape {actual:?}, but the parameter has shape {expected:?}")]
    GradientShape {
        /// The parameter.
        name: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        actual: Vec<usize>,
    },

    /// An optimizer that re-evaluates the loss inside a step (L-BFGS) was stepped from
    /// gradients alone.
    #[error(
        "{optimizer} re-evaluates the loss inside a step: step it with a closure \
         (`step_closure` / `step_with`), not from gradients"
    )]
    NeedsClosure {
        /// The algorithm.
        optimizer: &'static str,
    },

    /// An error from outside taper-optim that an optimizer step met (a sharded optimizer's
    /// collective in taper-dist).
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),

    /// A parameter group selected no parameters.
    #[error("parameter group `{group}` matches no trainable parameter")]
    EmptyGroup {
        /// A description of the group's selector.
        group: String,
    },

    /// An optimizer was built over no trainable parameter.
    #[error("{optimizer}: got an empty parameter list (no trainable parameter to optimize)")]
    NoParameters {
        /// The algorithm.
        optimizer: &'static str,
    },

    /// A rule lists a state slot where its position does not put it (a rule-author bug,
    /// reported when the optimizer is built).
    #[error(
        "{optimizer}: state slot `{slot}` is listed at position {listed} but stored at {stored} \
         (list each present slot once, in storage order)"
    )]
    StateLayout {
        /// The algorithm.
        optimizer: &'static str,
        /// The slot's name.
        slot: &'static str,
        /// Its index in `Rule::slots`.
        listed: usize,
        /// Where `StateSlot::position` stores it.
        stored: usize,
    },

    /// A rule cannot update a parameter of this shape (Muon takes only matrices).
    #[error("{optimizer}: cannot update `{name}` of shape {dims:?}: {expected}")]
    UnsupportedParameter {
        /// The algorithm.
        optimizer: &'static str,
        /// The parameter.
        name: String,
        /// Its shape.
        dims: Vec<usize>,
        /// What the algorithm takes, and what to use instead.
        expected: &'static str,
    },

    /// Saved optimizer state does not fit this optimizer's parameters.
    #[error("optimizer state does not fit: {0}")]
    StateMismatch(String),

    /// NVRTC refused a generated kernel.
    #[error("generated CUDA kernel for {ty} does not compile: {reason}")]
    KernelCompile {
        /// The element type (`float`, `double`).
        ty: String,
        /// NVRTC's log.
        reason: String,
    },

    /// A state file could not be read or written.
    #[error("optimizer state file `{path}`: {reason}")]
    StateFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The result type of taper-optim.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks a hyperparameter, else [`Error::InvalidHyperparameter`].
pub(crate) fn check(
    owner: &'static str,
    field: &'static str,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidHyperparameter {
            owner,
            field,
            value: value.to_string(),
            expected,
        })
    }
}

/// Checks the Adam family's (β₁, β₂), each in [0, 1).
pub(crate) fn check_betas(name: &'static str, b1: f64, b2: f64) -> Result<()> {
    check(
        name,
        "beta1",
        b1,
        (0.0..1.0).contains(&b1),
        "beta1 in [0, 1)",
    )?;
    check(
        name,
        "beta2",
        b2,
        (0.0..1.0).contains(&b2),
        "beta2 in [0, 1)",
    )
}

/// Checks a finite ε > 0.
pub(crate) fn check_eps(name: &'static str, eps: f64) -> Result<()> {
    check(
        name,
        "eps",
        eps,
        eps > 0.0 && eps.is_finite(),
        "a finite eps > 0",
    )
}
