//! `torch.optim.swa_utils`: weight averaging ([`averaged_model::AveragedModel`], SWA and
//! EMA) and its learning rate ([`swalr::SwaLr`]).

pub(crate) mod averaged_model;
pub(crate) mod swalr;
