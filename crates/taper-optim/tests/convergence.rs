//! Property tests: every optimizer lowers the loss on random quadratic bowls and on the
//! Rosenbrock function, from random starting points.

mod common;

use taper_optim::*;
use taper_tensor::{manual_seed, rand_uniform, DType, Device, ParamStore, Tensor};

/// Runs `steps` of `rule` on `f` from `x0`, returning (initial loss, final loss).
fn descend<R: Rule>(
    rule: R,
    x0: &Tensor,
    steps: usize,
    f: &dyn Fn(&Tensor) -> Tensor,
) -> (f64, f64) {
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    let x = store
        .parameter("x", x0.shape(), |_, _, _| Ok(x0.copy()?))
        .unwrap();
    let mut opt = Optimizer::new(rule, &store).unwrap();
    let loss = |x: &Tensor| f(x).to_scalar::<f64>().unwrap();
    let initial = loss(&x);
    for _ in 0..steps {
        opt.backward_step(&f(&x)).unwrap();
    }
    (initial, loss(&x))
}

fn bowl(a: Tensor) -> impl Fn(&Tensor) -> Tensor {
    move |x: &Tensor| x.sqr().unwrap().mul(&a).unwrap().sum_all().unwrap()
}

fn rosenbrock(x: &Tensor) -> Tensor {
    let (a, b) = (x.narrow(0, 0, 1).unwrap(), x.narrow(0, 1, 1).unwrap());
    let t1 = a.affine(-1.0, 1.0).unwrap().sqr().unwrap();
    let t2 = b
        .sub(&a.sqr().unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .affine(100.0, 0.0)
        .unwrap();
    (t1 + t2).unwrap().sum_all().unwrap()
}

/// Learning rates that suit each family on these problems (the defaults of some,
/// e.g. Lion's 1e-4, are tuned for deep networks).
fn tuned<R: Rule>(rule: R, problem: &str) -> R {
    let lr = match (R::NAME, problem) {
        ("SGD" | "ASGD", "bowl") => 0.02,
        // RAdam's first steps are plain momentum SGD (η·m̂), so it needs SGD's rate here.
        ("SGD" | "ASGD" | "RAdam", "rosenbrock") => 1e-4,
        // LARS's step is η·φ·‖x‖ per unit direction, with φ = 1e-3.
        ("LARS", "bowl") => 5.0,
        ("LARS", _) => 1.0,
        ("Adadelta", _) => 1.0,
        ("Lion", "bowl") => 0.01,
        ("Lion", _) => 1e-3,
        ("Adagrad", _) => 0.1,
        (_, "bowl") => 0.05,
        _ => 0.01,
    };
    let mut r = rule;
    r.common_mut().lr = lr;
    r.common_mut().weight_decay = WeightDecay::None;
    r.common_mut().maximize = false;
    r
}

fn check<R: Rule>(name: &str, rule: R) {
    for seed in 0..4 {
        manual_seed(seed);
        let a = rand_uniform(8, 0.5, 10.0, DType::F64, &Device::Cpu).unwrap();
        let x0 = rand_uniform(8, -2.0, 2.0, DType::F64, &Device::Cpu).unwrap();
        let (l0, l1) = descend(tuned(rule.clone(), "bowl"), &x0, 300, &bowl(a));
        // Adadelta's effective step starts at √ε and grows slowly: it only has to descend.
        let target = if R::NAME == "Adadelta" { 0.99 } else { 0.5 };
        assert!(
            l1 < target * l0,
            "{name} seed {seed}: bowl loss {l0:.4} -> {l1:.4}"
        );
        let x0 = rand_uniform(2, -1.5, 1.5, DType::F64, &Device::Cpu).unwrap();
        let (l0, l1) = descend(tuned(rule.clone(), "rosenbrock"), &x0, 500, &rosenbrock);
        assert!(
            l1 < l0,
            "{name} seed {seed}: Rosenbrock loss {l0:.4} -> {l1:.4}"
        );
    }
}

#[test]
fn every_optimizer_descends_bowls_and_rosenbrock() {
    for_every_rule!(check);
}
