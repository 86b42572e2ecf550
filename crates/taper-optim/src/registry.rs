//! The registry: the one list of optimizer configurations that Taper ships, tests and
//! benchmarks, in a fixed order. The tests (path agreement, state round trips, kernel
//! source, fresh-process resume), the `mnist` example's `--optimizer` flag and the
//! optimizer-step benchmarks all walk it, so a configuration added here is tested,
//! offered and measured with no other list to edit.
//!
//! Each entry keeps its concrete rule type: a [`Visitor`] receives it through a generic
//! method, so code that walks the registry is compiled for each rule, as if written by
//! hand.
//!
//! ```
//! use taper_optim::{visit_optimizers, Entry, Rule, Visitor};
//!
//! /// Collects each key with the state tensors its rule keeps.
//! struct States(Vec<(&'static str, Vec<&'static str>)>);
//!
//! impl Visitor for States {
//!     fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
//!         self.0.push((entry.key, rule.state_names()));
//!     }
//! }
//!
//! let mut v = States(Vec::new());
//! visit_optimizers(&mut v);
//! assert_eq!(v.0[0], ("sgd", vec![]));
//! assert!(v.0.contains(&("amsgrad", vec!["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])));
//! ```

use crate::engine::rule::{EpsPlacement, Rule};
use crate::{
    algorithms::adadelta::Adadelta, algorithms::adafactor::Adafactor, algorithms::adagrad::Adagrad,
    algorithms::adam::Adam, algorithms::adamax::Adamax, algorithms::asgd::Asgd,
    algorithms::lamb::Lamb, algorithms::lars::Lars, algorithms::lion::Lion,
    algorithms::nadam::NAdam, algorithms::radam::RAdam, algorithms::rmsprop::RmsProp,
    algorithms::rprop::Rprop, algorithms::sgd::Momentum, algorithms::sgd::Sgd,
};

/// How a rule's learning rate scales with the problem, for code that sets one rate per
/// problem across many optimizers (the optimizer comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The step is η times the gradient (or its momentum): η must suit the curvature.
    /// RAdam is here: its first steps are un-rectified momentum SGD.
    Descent,
    /// The step is η times a normalized gradient: η is roughly the step size.
    Adaptive,
    /// The step is a sign times a step size (Lion, Rprop): η is the step per coordinate.
    Sign,
    /// The step is scaled per tensor by the parameter's norm (LAMB, LARS's trust ratios):
    /// η is the step relative to ‖θ‖ (times LARS's trust coefficient).
    Layerwise,
}

/// One registered configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    /// Its name on the command line and in test and benchmark output: kebab-case, unique.
    pub key: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// The torch.optim constructor it matches, where torch has one.
    pub torch: Option<&'static str>,
    /// How its learning rate scales.
    pub family: Family,
}

/// Receives each registered configuration with its concrete rule type.
pub trait Visitor {
    /// Called once per entry, in registry order. `rule` has the entry's options and a
    /// learning rate that trains Taper's MNIST MLP; change it with the configuration's `.lr(x)` builder (generic code: `rule.common_mut().lr = x`).
    fn visit<R: Rule>(&mut self, entry: &Entry, rule: R);
}

const fn entry(
    key: &'static str,
    help: &'static str,
    torch: Option<&'static str>,
    family: Family,
) -> Entry {
    Entry {
        key,
        help,
        torch,
        family,
    }
}

const LARS_LR: f64 = 10.0;
const LAMB_LR: f64 = 1e-2;

/// Calls `v.visit` for every registered configuration, in registry order.
///
/// To add an element-wise optimizer: its file in `algorithms/`, a `pub use` in `lib.rs`,
/// one `v.visit` line here, and its torch fixture.
pub fn visit_optimizers(v: &mut impl Visitor) {
    use Family::*;
    let classic = Momentum::Classic {
        momentum: 0.9,
        dampening: 0.0,
    };
    v.visit(
        &entry(
            "sgd",
            "gradient descent (batch, stochastic or mini-batch by the loader)",
            Some("SGD(lr)"),
            Descent,
        ),
        Sgd::new(0.1),
    );
    v.visit(
        &entry(
            "momentum",
            "heavy-ball momentum 0.9",
            Some("SGD(lr, momentum=0.9)"),
            Descent,
        ),
        Sgd::new(0.05).momentum(classic),
    );
    v.visit(
        &entry(
            "nesterov",
            "Nesterov momentum 0.9",
            Some("SGD(lr, momentum=0.9, nesterov=True)"),
            Descent,
        ),
        Sgd::new(0.05).momentum(Momentum::Nesterov { momentum: 0.9 }),
    );
    v.visit(
        &entry(
            "ema-momentum",
            "the documents' momentum: v <- 0.9 v + 0.1 g",
            None,
            Descent,
        ),
        Sgd::new(0.3).momentum(Momentum::Ema { beta: 0.9 }),
    );
    v.visit(
        &entry(
            "asgd",
            "ASGD: SGD with a running average of the iterates (kept as state `ax`)",
            Some("ASGD(lr)"),
            Descent,
        ),
        Asgd::new(0.1),
    );
    v.visit(
        &entry(
            "lars",
            "LARS (optax): momentum SGD scaled per tensor by a trust ratio",
            None,
            Layerwise,
        ),
        Lars::new(LARS_LR),
    );
    v.visit(
        &entry(
            "adagrad",
            "AdaGrad, eps outside the root",
            Some("Adagrad(lr)"),
            Adaptive,
        ),
        Adagrad::new(0.01),
    );
    v.visit(
        &entry(
            "adagrad-documents",
            "the documents' AdaGrad: eps inside the root",
            None,
            Adaptive,
        ),
        Adagrad::documents(0.01, 1e-8),
    );
    v.visit(
        &entry(
            "rmsprop",
            "RMSprop, alpha 0.99",
            Some("RMSprop(lr)"),
            Adaptive,
        ),
        RmsProp::new(1e-3),
    );
    v.visit(
        &entry(
            "rmsprop-documents",
            "the documents' RMSProp: beta 0.9, eps inside the root",
            None,
            Adaptive,
        ),
        RmsProp::documents(1e-3, 0.9, 1e-8),
    );
    v.visit(
        &entry(
            "rmsprop-centered",
            "centered RMSprop with momentum 0.9",
            Some("RMSprop(lr, momentum=0.9, centered=True)"),
            Adaptive,
        ),
        RmsProp::new(1e-3).centered(true).momentum(0.9),
    );
    v.visit(
        &entry("adam", "Adam", Some("Adam(lr)"), Adaptive),
        Adam::new(2e-3),
    );
    v.visit(
        &entry(
            "adam-documents",
            "the documents' second Adam: m/sqrt(v + eps)",
            None,
            Adaptive,
        ),
        Adam::new(2e-3).eps_placement(EpsPlacement::InsideRoot),
    );
    v.visit(
        &entry(
            "amsgrad",
            "Adam with AMSGrad",
            Some("Adam(lr, amsgrad=True)"),
            Adaptive,
        ),
        Adam::new(2e-3).amsgrad(true),
    );
    v.visit(
        &entry(
            "adamw",
            "AdamW, decoupled weight decay 0.01",
            Some("AdamW(lr)"),
            Adaptive,
        ),
        Adam::adamw(1e-3),
    );
    v.visit(
        &entry(
            "lamb",
            "LAMB (optax): Adam scaled per tensor by a trust ratio",
            None,
            Layerwise,
        ),
        Lamb::new(LAMB_LR),
    );
    v.visit(
        &entry(
            "adafactor",
            "Adafactor: factored second moments, steps relative to each tensor's RMS",
            Some("Adafactor(lr)"),
            Layerwise,
        ),
        Adafactor::new(1e-2),
    );
    v.visit(
        &entry("adamax", "Adamax", Some("Adamax(lr)"), Adaptive),
        Adamax::new(2e-3),
    );
    v.visit(
        &entry("nadam", "NAdam", Some("NAdam(lr)"), Adaptive),
        NAdam::new(2e-3),
    );
    v.visit(
        &entry("radam", "RAdam", Some("RAdam(lr)"), Descent),
        RAdam::new(1e-3),
    );
    v.visit(
        &entry(
            "adadelta",
            "Adadelta, rho 0.9",
            Some("Adadelta(lr=1.0)"),
            Adaptive,
        ),
        Adadelta::new(1.0),
    );
    v.visit(
        &entry(
            "rprop",
            "Rprop: per-element step sizes from gradient signs (full-batch)",
            Some("Rprop(lr)"),
            Sign,
        ),
        Rprop::new(1e-3),
    );
    v.visit(
        &entry(
            "lion",
            "Lion (sign of an interpolated momentum)",
            None,
            Sign,
        ),
        Lion::new(1e-4),
    );
}

/// Every registered entry, in registry order.
pub fn optimizer_entries() -> Vec<Entry> {
    struct Collect(Vec<Entry>);
    impl Visitor for Collect {
        fn visit<R: Rule>(&mut self, entry: &Entry, _: R) {
            self.0.push(*entry);
        }
    }
    let mut c = Collect(Vec::new());
    visit_optimizers(&mut c);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_unique_kebab_case_and_every_configuration_is_valid() {
        struct Check(HashSet<&'static str>);
        impl Visitor for Check {
            fn visit<R: Rule>(&mut self, e: &Entry, rule: R) {
                assert!(self.0.insert(e.key), "duplicate key {}", e.key);
                assert!(
                    e.key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "{}",
                    e.key
                );
                rule.common().validate(R::NAME).unwrap();
                rule.validate().unwrap();
                crate::engine::slot::check_layout(R::NAME, rule.slots()).unwrap();
                assert!(
                    rule.slots().len() <= crate::backends::fused::MAX_FUSED_STATE,
                    "{}",
                    e.key
                );
            }
        }
        let mut c = Check(HashSet::new());
        visit_optimizers(&mut c);
        assert_eq!(c.0.len(), optimizer_entries().len());
        assert!(c.0.len() >= 18);
    }
}
