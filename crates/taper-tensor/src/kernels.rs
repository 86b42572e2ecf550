//! Switching Taper's own CPU kernels off, to compare them with candle's generic ops.
//!
//! On the CPU, `Linear`, `Conv2d`, the pooling layers, ReLU and cross-entropy run on
//! hand-written kernels (one autograd node each) when their inputs fit; everywhere else they
//! run on candle's generic ops. Both compute the same function. [`with_generic_kernels`]
//! forces the generic ops on this thread for a while, like PyTorch's
//! `torch.backends.mkldnn.flags(enabled=False)`: for checking a fast path against the
//! generic one, or for ruling a kernel out while debugging.

use std::cell::Cell;

thread_local! {
    static FAST_KERNELS: Cell<bool> = const { Cell::new(true) };
}

/// Whether layers on this thread may use Taper's own CPU kernels (true unless inside
/// [`with_generic_kernels`]).
pub fn fast_kernels_enabled() -> bool {
    FAST_KERNELS.with(Cell::get)
}

/// Restores the previous kernel choice when dropped.
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        FAST_KERNELS.with(|k| k.set(self.0));
    }
}

/// Runs `f` with Taper's own CPU kernels off on this thread: every layer takes candle's
/// generic ops. The previous choice comes back afterwards, also on panic.
///
/// ```
/// use taper_tensor::{fast_kernels_enabled, with_generic_kernels};
/// assert!(fast_kernels_enabled());
/// assert!(!with_generic_kernels(fast_kernels_enabled));
/// assert!(fast_kernels_enabled());
/// ```
pub fn with_generic_kernels<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(FAST_KERNELS.with(|k| k.replace(false)));
    f()
}
