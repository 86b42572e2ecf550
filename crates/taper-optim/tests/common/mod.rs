//! Shared helpers for taper-optim's tests.

#![allow(dead_code)]

use taper_optim::{Optimizer, Rule, UpdatePath};
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
pub fn optimizer<R: Rule>(rule: R, store: &ParamStore, path: UpdatePath) -> Optimizer<R> {
    Optimizer::new(rule, store).unwrap().update_path(path)
}

/// Calls `$f(name, rule)` for every registered optimizer (`visit_optimizers`), each
/// also with coupled L2 decay and with decoupled decay while maximizing (where its own
/// decay allows), then for option combinations the registry does not show.
#[macro_export]
macro_rules! for_every_rule {
    ($f:expr) => {{
        use taper_optim::*;
        struct Each;
        impl Visitor for Each {
            fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
                $f(entry.key, rule.clone());
                let wd = rule.common().weight_decay;
                // Generic code sets the shared options through `common_mut` (the
                // builders are each configuration's own inherent methods).
                let with = |f: &dyn Fn(&mut SharedOptions)| {
                    let mut r = rule.clone();
                    f(r.common_mut());
                    r
                };
                if wd == WeightDecay::None {
                    $f(
                        &format!("{} l2", entry.key),
                        with(&|c| c.weight_decay = WeightDecay::L2(0.1)),
                    );
                }
                if matches!(wd, WeightDecay::None | WeightDecay::Decoupled(_)) {
                    $f(
                        &format!("{} decoupled maximize", entry.key),
                        with(&|c| {
                            c.weight_decay = WeightDecay::Decoupled(0.1);
                            c.maximize = true;
                        }),
                    );
                }
            }
        }
        visit_optimizers(&mut Each);
        // Options beyond the registry's configurations.
        $f(
            "sgd dampened",
            Sgd::new(0.01).momentum(Momentum::Classic {
                momentum: 0.9,
                dampening: 0.5,
            }),
        );
        $f(
            "adagrad lr_decay initial_accumulator_value",
            Adagrad::new(0.1)
                .lr_decay(0.1)
                .initial_accumulator_value(0.1),
        );
        $f("rmsprop centered", RmsProp::new(0.01).centered(true));
        $f("rmsprop momentum", RmsProp::new(0.01).momentum(0.9));
        $f("adamw amsgrad", Adam::adamw(0.01).amsgrad(true));
    }};
}

/// A JSON fixture from `tests/fixtures/` (each is written by the Python script beside it).
pub fn fixture(file: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A JSON array of numbers.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Starting values for `p1` (12) and `p2` (5) of the formula-reference tests.
pub fn formula_init() -> (Vec<f64>, Vec<f64>) {
    let p1 = (0..12).map(|i| (i as f64 * 0.7).sin() + 0.3).collect();
    let p2 = (0..5).map(|i| (i as f64 * 1.3).cos() * 0.5).collect();
    (p1, p2)
}

/// A gradient that depends on the parameter (so trajectories diverge if any step is off).
pub fn formula_grad(p: &[f64], step: usize, salt: f64) -> Vec<f64> {
    p.iter()
        .enumerate()
        .map(|(i, x)| 0.8 * x + ((i as f64 + salt) * 0.9 + step as f64 * 0.4).sin())
        .collect()
}

/// The current values of `p1` and `p2`.
pub fn pair_values(store: &ParamStore) -> [Vec<f64>; 2] {
    [
        values(store.var("p1").unwrap().as_tensor()),
        values(store.var("p2").unwrap().as_tensor()),
    ]
}
