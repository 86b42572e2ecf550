//! Learning-rate control: schedules as pure functions of the step, the scheduler that
//! applies one to an optimizer, and the metric- and gradient-driven controllers, all
//! behind one protocol ([`control::LrControl`]).

pub(crate) mod compose;
pub(crate) mod control;
pub(crate) mod cosine;
pub(crate) mod cyclic;
pub(crate) mod grad_norm_rate;
pub(crate) mod multiplicative;
pub(crate) mod one_cycle;
pub(crate) mod plateau;
pub(crate) mod schedule;
pub(crate) mod scheduler;
