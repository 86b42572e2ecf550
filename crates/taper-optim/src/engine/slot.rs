//! Named optimizer state: a rule declares its per-parameter state as an enum of slots (with
//! [`slots!`](crate::slots)) and reads it by slot, never by a bare index.
//!
//! ```
//! use taper_optim::{slots, Slots, StateSlot};
//!
//! slots! {
//!     /// Adam's per-parameter state, as torch.optim names it.
//!     pub enum MySlot {
//!         /// First moment m.
//!         ExpAvg = "exp_avg",
//!         /// Second moment v.
//!         ExpAvgSq = "exp_avg_sq",
//!     }
//! }
//!
//! let mut lanes = [1.0f64, 2.0];
//! let mut state = Slots::<f64, MySlot>::new(&mut lanes);
//! state[MySlot::ExpAvgSq] += 1.0;
//! assert_eq!(state[MySlot::ExpAvgSq], 3.0);
//! assert_eq!(MySlot::ExpAvg.name(), "exp_avg");
//! ```
//!
//! The slot's name (used in saved state as `{param}.{name}`) and its place in storage come
//! from one declaration, and [`Slots`] accepts only its own rule's slot type, so reading
//! another rule's slot, or a name that disagrees with its position, does not compile.
//! The optimizer checks once, when it is built, that a rule's present slots
//! ([`Rule::slots`](crate::Rule::slots)) sit where their positions say
//! ([`check_layout`]).
//!
//! [`Slots`] indexes a slice whose length is a compile-time constant on the fused path,
//! so a slot's position folds to a constant and the state stays in registers: the same
//! machine code as indexing by number.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use crate::{error::Error, error::Result};

/// One named slot of per-parameter state (a tensor, or a scalar for scalar state).
///
/// Implemented by the enums [`slots!`](crate::slots) declares. A slot's storage position
/// is its declared position; a rule whose optional slots are not a suffix of the declared
/// order implements this by hand and overrides [`StateSlot::position`] (RMSprop's
/// `momentum_buffer` is always the last present slot).
pub trait StateSlot: Copy + Eq + Debug + Send + Sync + 'static {
    /// Every slot, in declared order.
    const ALL: &'static [Self];

    /// The name in saved state (`{param}.{name}`), as torch.optim names it.
    fn name(self) -> &'static str;

    /// Where this slot is stored when `len` slots are present.
    fn position(self, len: usize) -> usize;
}

/// The slot type of a rule without (scalar) state: it has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {}

impl StateSlot for NoSlot {
    const ALL: &'static [Self] = &[];

    fn name(self) -> &'static str {
        match self {}
    }

    fn position(self, _: usize) -> usize {
        match self {}
    }
}

/// A rule's per-parameter state over lane type `L`, read and written by slot.
pub struct Slots<'a, L, S> {
    lanes: &'a mut [L],
    _slot: PhantomData<fn() -> S>,
}

impl<'a, L, S: StateSlot> Slots<'a, L, S> {
    /// The state held in `lanes`, in the rule's storage order.
    #[inline(always)]
    pub fn new(lanes: &'a mut [L]) -> Self {
        Self {
            lanes,
            _slot: PhantomData,
        }
    }

    /// How many slots are present.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether no slot is present.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }
}

impl<L, S: StateSlot> Index<S> for Slots<'_, L, S> {
    type Output = L;

    #[inline(always)]
    fn index(&self, slot: S) -> &L {
        &self.lanes[slot.position(self.lanes.len())]
    }
}

impl<L, S: StateSlot> IndexMut<S> for Slots<'_, L, S> {
    #[inline(always)]
    fn index_mut(&mut self, slot: S) -> &mut L {
        let len = self.lanes.len();
        &mut self.lanes[slot.position(len)]
    }
}

/// Checks that each present slot of `rule` is stored where its position says (so none is
/// listed twice): the one check that ties a rule's [`Rule::slots`](crate::Rule::slots)
/// list to the positions its code reads.
pub(crate) fn check_layout<S: StateSlot>(rule: &'static str, present: &[S]) -> Result<()> {
    for (i, s) in present.iter().enumerate() {
        let at = s.position(present.len());
        if at != i {
            return Err(Error::StateLayout {
                optimizer: rule,
                slot: s.name(),
                listed: i,
                stored: at,
            });
        }
    }
    Ok(())
}

/// Declares a rule's state slots: an enum whose variants are the slots, each with the name
/// it is saved under, stored in declared order.
///
/// ```
/// taper_optim::slots! {
///     /// Lion's per-parameter state.
///     pub enum LionLikeSlot {
///         /// The momentum m.
///         ExpAvg = "exp_avg",
///     }
/// }
/// ```
#[macro_export]
macro_rules! slots {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $crate::StateSlot for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            #[inline(always)]
            fn position(self, _len: usize) -> usize {
                self as usize
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{algorithms::adam::AdamSlot, algorithms::rmsprop::RmsPropSlot};

    #[test]
    fn layouts_in_storage_order_pass_and_mix_ups_are_named() {
        use RmsPropSlot::*;
        for ok in [
            &[SquareAvg][..],
            &[SquareAvg, GradAvg],
            &[SquareAvg, MomentumBuffer],
            &[SquareAvg, GradAvg, MomentumBuffer],
        ] {
            check_layout("RMSprop", ok).unwrap();
        }
        let err = check_layout("RMSprop", &[SquareAvg, MomentumBuffer, GradAvg]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RMSprop: state slot `momentum_buffer` is listed at position 1 but stored at 2 \
             (list each present slot once, in storage order)"
        );
        let twice = check_layout("Adam", &[AdamSlot::ExpAvg, AdamSlot::ExpAvg]).unwrap_err();
        assert!(matches!(
            twice,
            Error::StateLayout {
                slot: "exp_avg",
                listed: 1,
                stored: 0,
                ..
            }
        ));
        check_layout::<NoSlot>("SGD", &[]).unwrap();
    }

    #[test]
    fn slots_read_and_write_by_name() {
        let mut lanes = [1.0, 2.0, 3.0];
        let mut st = Slots::<f64, RmsPropSlot>::new(&mut lanes);
        st[RmsPropSlot::MomentumBuffer] *= 10.0;
        assert_eq!(st[RmsPropSlot::SquareAvg], 1.0);
        assert_eq!(st.len(), 3);
        assert_eq!(lanes, [1.0, 2.0, 30.0]);
        let mut two = [1.0, 2.0];
        let st = Slots::<f64, RmsPropSlot>::new(&mut two);
        assert_eq!(st[RmsPropSlot::MomentumBuffer], 2.0, "last of two");
    }
}
