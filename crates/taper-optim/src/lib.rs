//! # taper-optim
//!
//! Optimizers (the source documents' forms and torch.optim's), learning-rate schedules and
//! optimizer state save/load for Taper. (Being built: see the project's taper-optim issues.)

pub use taper_tensor;
