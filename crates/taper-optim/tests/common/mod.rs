//! Shared helpers for taper-optim's tests.

#![allow(dead_code)]

use taper_optim::{Optimizer, Path, Rule};
use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};

/// Norm-wise relative error of `a` against the reference `b`: max|a − b| / max|b|.
/// (Element-wise relative error is meaningless where a parameter passes through zero.)
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// A tensor's values as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A store with parameters `p1` (3, 4) and `p2` (5) of the given values and dtype.
pub fn two_params(p1: &[f64], p2: &[f64], dtype: DType) -> ParamStore {
    let store = ParamStore::new(&Device::Cpu, dtype);
    let t1 = Tensor::from_vec(p1.to_vec(), (3, 4), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let t2 = Tensor::from_vec(p2.to_vec(), 5, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    store.parameter("p1", (3, 4), |_, _, _| Ok(t1)).unwrap();
    store.parameter("p2", 5, |_, _, _| Ok(t2)).unwrap();
    store
}

/// Gradients for `p1` and `p2` from flat values.
pub fn grads(g1: &[f64], g2: &[f64], dtype: DType) -> Gradients {
    let mut g = Gradients::default();
    g.insert(
        "p1",
        Tensor::from_vec(g1.to_vec(), (3, 4), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    );
    g.insert(
        "p2",
        Tensor::from_vec(g2.to_vec(), 5, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    );
    g
}

/// An optimizer over `store` on the given path.
pub fn optimizer<R: Rule>(rule: R, store: &ParamStore, path: Path) -> Optimizer<R> {
    Optimizer::new(rule, store).unwrap().with_path(path)
}

/// Calls `$f(name, rule)` for every algorithm and option combination.
#[macro_export]
macro_rules! for_every_rule {
    ($f:expr) => {{
        use taper_optim::*;
        let c = |m, d| Momentum::Classic {
            momentum: m,
            dampening: d,
        };
        $f("sgd", Sgd::new(0.01));
        $f("sgd classic", Sgd::new(0.01).with_momentum(c(0.9, 0.0)));
        $f("sgd dampened", Sgd::new(0.01).with_momentum(c(0.9, 0.5)));
        $f(
            "sgd nesterov",
            Sgd::new(0.01).with_momentum(Momentum::Nesterov { momentum: 0.9 }),
        );
        $f(
            "sgd ema",
            Sgd::new(0.01).with_momentum(Momentum::Ema { beta: 0.9 }),
        );
        $f(
            "sgd l2 maximize",
            Sgd::new(0.01)
                .with_momentum(c(0.5, 0.0))
                .with_weight_decay(WeightDecay::L2(0.1))
                .with_maximize(true),
        );
        $f(
            "sgd decoupled",
            Sgd::new(0.01).with_weight_decay(WeightDecay::Decoupled(0.1)),
        );
        $f("adagrad", Adagrad::new(0.1));
        $f("adagrad documents", Adagrad::documents(0.1, 1e-8));
        $f(
            "adagrad full",
            Adagrad::new(0.1)
                .lr_decay(0.1)
                .initial_accumulator_value(0.1)
                .with_weight_decay(WeightDecay::L2(0.1)),
        );
        $f("rmsprop", RmsProp::new(0.01));
        $f("rmsprop documents", RmsProp::documents(0.01, 0.9, 1e-8));
        $f(
            "rmsprop centered momentum",
            RmsProp::new(0.01).centered(true).with_momentum(0.9),
        );
        $f("rmsprop centered", RmsProp::new(0.01).centered(true));
        $f(
            "rmsprop momentum l2",
            RmsProp::new(0.01)
                .with_momentum(0.9)
                .with_weight_decay(WeightDecay::L2(0.1)),
        );
        $f("adam", Adam::new(0.01));
        $f(
            "adam inside",
            Adam::new(0.01).eps_placement(EpsPlacement::InsideRoot),
        );
        $f(
            "adam amsgrad l2",
            Adam::new(0.01)
                .amsgrad(true)
                .with_weight_decay(WeightDecay::L2(0.1)),
        );
        $f("adamw", Adam::adamw(0.01));
        $f(
            "adamw amsgrad maximize",
            Adam::adamw(0.01).amsgrad(true).with_maximize(true),
        );
        $f("adamax", Adamax::new(0.01));
        $f(
            "adamax l2",
            Adamax::new(0.01).with_weight_decay(WeightDecay::L2(0.1)),
        );
        $f("nadam", NAdam::new(0.01));
        $f(
            "nadam decoupled",
            NAdam::new(0.01).with_weight_decay(WeightDecay::Decoupled(0.1)),
        );
        $f("radam", RAdam::new(0.01));
        $f(
            "radam decoupled",
            RAdam::new(0.01).with_weight_decay(WeightDecay::Decoupled(0.1)),
        );
        $f("adadelta", Adadelta::default());
        $f(
            "adadelta l2",
            Adadelta::new(0.5).with_weight_decay(WeightDecay::L2(0.1)),
        );
        $f("lion", Lion::new(0.001));
        $f(
            "lion decoupled maximize",
            Lion::new(0.001)
                .with_weight_decay(WeightDecay::Decoupled(0.1))
                .with_maximize(true),
        );
    }};
}
