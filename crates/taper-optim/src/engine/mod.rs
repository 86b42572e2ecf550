//! The engine: what an algorithm is ([`Rule`](rule::Rule)), the element type its math is
//! written over ([`Lane`](lane::Lane)), its named state slots ([`slot`]), the [`Optimizer`](optimizer::Optimizer) that runs a
//! rule over named parameters in groups, its sparse row updates ([`rows`]), and its state
//! as data.

pub(crate) mod any;
pub(crate) mod execution;
pub(crate) mod lane;
pub(crate) mod optimizer;
pub(crate) mod optimizer_set;
pub(crate) mod rows;
pub(crate) mod rule;
pub(crate) mod slot;
pub(crate) mod state;
