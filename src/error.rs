//! `taper::Error` and `taper::Result`: one error type that every Taper crate's error (and
//! candle's) converts into, so `?` works across crates in user code.

/// Any error a Taper function returns, by the crate it came from. Each variant's message is
/// the crate error's own; match on the variant to inspect it. The crate errors are boxed, so
/// `taper::Result<T>` stays two words plus `T` and user functions returning it pass clippy's
/// `result_large_err`.
///
/// ```
/// use taper::prelude::*;
///
/// // `?` on taper-tensor, taper-nn and taper-optim calls in one function.
/// fn build() -> Result<(Linear, Optimizer<Sgd>)> {
///     let store = ParamStore::new(&Device::Cpu, DType::F32);
///     let fc = Linear::new(4, 2, &store)?;
///     let w = store.var("weight")?;
///     let opt = Optimizer::new(Sgd::new(0.1), &store)?;
///     assert_eq!(w.dims(), &[2, 4]);
///     Ok((fc, opt))
/// }
/// build()?;
/// # Ok::<(), taper::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From taper-tensor (parameters, gradients, state, files, devices).
    #[error(transparent)]
    Tensor(Box<taper_tensor::Error>),
    /// From taper-nn (layers, losses, model files).
    #[error(transparent)]
    Nn(Box<taper_nn::Error>),
    /// From taper-optim (optimizers, schedules, optimizer state).
    #[error(transparent)]
    Optim(Box<taper_optim::Error>),
    /// From taper-data (datasets, loaders, files, downloads).
    #[error(transparent)]
    Data(Box<taper_data::Error>),
    /// From taper-train (fit, checkpoints, logs, plots).
    #[error(transparent)]
    Train(Box<taper_train::Error>),
    /// From taper-dist (communicators, DDP, ZeRO).
    #[error(transparent)]
    Dist(Box<taper_dist::Error>),
    /// From candle, inside an op (a layer's `forward`, tensor arithmetic).
    #[error(transparent)]
    Candle(Box<taper_tensor::candle::Error>),
}

/// `Result` with [`Error`] by default: `taper::Result<T>` in user code; a second parameter
/// names another error type, as `std::result::Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<taper_tensor::Error> for Error {
    fn from(e: taper_tensor::Error) -> Self {
        Error::Tensor(Box::new(e))
    }
}

impl From<taper_nn::Error> for Error {
    fn from(e: taper_nn::Error) -> Self {
        Error::Nn(Box::new(e))
    }
}

impl From<taper_optim::Error> for Error {
    fn from(e: taper_optim::Error) -> Self {
        Error::Optim(Box::new(e))
    }
}

impl From<taper_data::Error> for Error {
    fn from(e: taper_data::Error) -> Self {
        Error::Data(Box::new(e))
    }
}

impl From<taper_train::Error> for Error {
    fn from(e: taper_train::Error) -> Self {
        Error::Train(Box::new(e))
    }
}

impl From<taper_dist::Error> for Error {
    fn from(e: taper_dist::Error) -> Self {
        Error::Dist(Box::new(e))
    }
}

impl From<taper_tensor::candle::Error> for Error {
    fn from(e: taper_tensor::candle::Error) -> Self {
        Error::Candle(Box::new(e))
    }
}
