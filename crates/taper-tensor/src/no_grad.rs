//! Evaluation without building a graph: Taper's `torch.no_grad()`.
//!
//! Candle records an op whenever an input is a variable. Taper's layers read their
//! parameters through [`tracked`], which hands out a detached view (no copy) while a
//! [`no_grad`] scope is active, so evaluation builds no graph and keeps no intermediates
//! alive. Code that uses candle-nn layers directly still records inside the scope; call
//! `.detach()` on its output to drop the graph.

use std::cell::Cell;

use crate::Tensor;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether operations on this thread currently record gradients (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Restores the previous gradient mode when dropped (also on early return or panic).
#[derive(Debug)]
#[must_use = "gradients are re-enabled as soon as the guard is dropped"]
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Disables gradient recording on this thread until the guard is dropped.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        Self { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` with gradient recording disabled, like `with torch.no_grad():`.
///
/// ```
/// use taper_tensor::{no_grad, tracked, Var, Device};
/// let w = Var::new(&[1f32, 2.], &Device::Cpu)?;
/// let y = no_grad(|| tracked(w.as_tensor()).sqr())?;
/// assert!(!y.track_op()); // no graph was built
/// let y = tracked(w.as_tensor()).sqr()?;
/// assert!(y.track_op());
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}

/// How a layer reads a parameter: the variable itself when gradients are enabled, a
/// detached view of it (sharing storage) inside [`no_grad`].
pub fn tracked(param: &Tensor) -> Tensor {
    if is_grad_enabled() {
        param.clone()
    } else {
        param.detach()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_nests_and_restores() {
        assert!(is_grad_enabled());
        no_grad(|| {
            assert!(!is_grad_enabled());
            no_grad(|| assert!(!is_grad_enabled()));
            assert!(!is_grad_enabled());
        });
        assert!(is_grad_enabled());
        let r = std::panic::catch_unwind(|| no_grad(|| panic!("boom")));
        assert!(r.is_err());
        assert!(is_grad_enabled());
    }
}
