//! The optimization algorithms, one file each: a config struct with documented defaults
//! and its [`Rule`](crate::Rule) implementation.

pub(crate) mod adadelta;
pub(crate) mod adafactor;
pub(crate) mod adagrad;
pub(crate) mod adam;
pub(crate) mod adamax;
pub(crate) mod asgd;
pub(crate) mod lamb;
pub(crate) mod lars;
pub(crate) mod lbfgs;
pub(crate) mod lion;
pub(crate) mod lookahead;
pub(crate) mod muon;
pub(crate) mod nadam;
pub(crate) mod radam;
pub(crate) mod rmsprop;
pub(crate) mod rprop;
pub(crate) mod sgd;
pub(crate) mod sparse_adam;
