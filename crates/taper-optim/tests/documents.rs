//! The source documents' optimizers, exactly as written, against float64 references
//! written out here, closed-loop on a nonlinear problem, on both execution paths.

mod common;

use common::*;
use taper_optim::*;
use taper_tensor::DType;

/// The gradient of f(p) = Σ a_i (p_i − 1)² + Σ sin(p_i), a_i = 1 + i/4.
fn grad(p: &[f64]) -> Vec<f64> {
    p.iter()
        .enumerate()
        .map(|(i, x)| 2.0 * (1.0 + i as f64 / 4.0) * (x - 1.0) + x.cos())
        .collect()
}

fn start() -> (Vec<f64>, Vec<f64>) {
    let p1: Vec<f64> = (0..12).map(|i| (i as f64 * 0.7).sin() * 2.0).collect();
    let p2: Vec<f64> = (0..5).map(|i| (i as f64 * 1.3).cos() - 0.5).collect();
    (p1, p2)
}

/// A reference update: (parameter, gradient, state, step t) → new parameter.
type Reference<'a> = dyn Fn(f64, f64, &mut [f64; 2], i32) -> f64 + 'a;

fn compare<R: Rule>(what: &str, rule: R, reference: &Reference<'_>) {
    const STEPS: usize = 30;
    let (p1, p2) = start();
    // The reference, in plain f64 scalar code.
    let mut want = [p1.clone(), p2.clone()];
    let mut state = [vec![[0.0; 2]; 12], vec![[0.0; 2]; 5]];
    let mut trajectory = Vec::new();
    for t in 1..=STEPS {
        for (p, st) in want.iter_mut().zip(state.iter_mut()) {
            let g = grad(p);
            for i in 0..p.len() {
                p[i] = reference(p[i], g[i], &mut st[i], t as i32);
            }
        }
        trajectory.push(want.clone());
    }
    for path in [UpdatePath::Auto, UpdatePath::Generic] {
        let store = two_params(&p1, &p2, DType::F64);
        let mut opt = optimizer(rule.clone(), &store, path);
        for (t, want) in trajectory.iter().enumerate() {
            let cur1 = values(store.var("p1").unwrap().as_tensor());
            let cur2 = values(store.var("p2").unwrap().as_tensor());
            opt.step(&grads(&grad(&cur1), &grad(&cur2), DType::F64))
                .unwrap();
            for (k, name) in ["p1", "p2"].iter().enumerate() {
                let got = values(store.var(name).unwrap().as_tensor());
                let err = rel_err(&got, &want[k]);
                assert!(
                    err < 1e-12,
                    "{what} ({path:?}) step {} {name}: relative error {err:.2e}",
                    t + 1
                );
            }
        }
    }
}

#[test]
fn gradient_descent() {
    let lr = 0.05;
    compare("GD", Sgd::new(lr), &move |p, g, _, _| p - lr * g);
}

#[test]
fn momentum_as_an_exponential_average() {
    let (lr, beta) = (0.05, 0.9);
    compare(
        "EMA momentum",
        Sgd::new(lr).momentum(Momentum::Ema { beta }),
        &move |p, g, s, _| {
            s[0] = beta * s[0] + (1.0 - beta) * g;
            p - lr * s[0]
        },
    );
}

#[test]
fn adagrad_with_eps_inside_the_root() {
    let (lr, eps) = (0.3, 1e-8);
    compare(
        "AdaGrad",
        Adagrad::documents(lr, eps),
        &move |p, g, s, _| {
            s[0] += g * g;
            p - lr / (s[0] + eps).sqrt() * g
        },
    );
}

#[test]
fn rmsprop_with_eps_inside_the_root() {
    let (lr, beta, eps) = (0.01, 0.9, 1e-8);
    compare(
        "RMSProp",
        RmsProp::documents(lr, beta, eps),
        &move |p, g, s, _| {
            s[0] = beta * s[0] + (1.0 - beta) * g * g;
            p - lr / (s[0] + eps).sqrt() * g
        },
    );
}

fn adam_reference(
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    inside: bool,
) -> impl Fn(f64, f64, &mut [f64; 2], i32) -> f64 {
    move |p, g, s, t| {
        s[0] = b1 * s[0] + (1.0 - b1) * g;
        s[1] = b2 * s[1] + (1.0 - b2) * g * g;
        let m_hat = s[0] / (1.0 - b1.powi(t));
        let v_hat = s[1] / (1.0 - b2.powi(t));
        if inside {
            p - lr * m_hat / (v_hat + eps).sqrt()
        } else {
            p - lr * m_hat / (v_hat.sqrt() + eps)
        }
    }
}

#[test]
fn adam_in_both_eps_placements() {
    let (lr, eps) = (0.05, 1e-3); // a large ε makes the two forms clearly different
    let a = Adam::new(lr).eps(eps);
    compare(
        "Adam m̂/(√v̂+ε)",
        a,
        &adam_reference(lr, 0.9, 0.999, eps, false),
    );
    let b = Adam::new(lr)
        .eps(eps)
        .eps_placement(EpsPlacement::InsideRoot);
    compare(
        "Adam m̂/√(v̂+ε)",
        b,
        &adam_reference(lr, 0.9, 0.999, eps, true),
    );
}

#[test]
fn lion_against_the_paper() {
    let (lr, b1, b2, wd) = (0.01, 0.9, 0.99, 0.1);
    compare(
        "Lion",
        Lion::new(lr).weight_decay(WeightDecay::Decoupled(wd)),
        &move |p, g, s, _| {
            let c = b1 * s[0] + (1.0 - b1) * g;
            let sign = if c > 0.0 {
                1.0
            } else if c < 0.0 {
                -1.0
            } else {
                0.0
            };
            s[0] = b2 * s[0] + (1.0 - b2) * g;
            p * (1.0 - lr * wd) - lr * sign
        },
    );
}

#[test]
fn pytorch_momentum_differs_from_the_documents_on_the_first_step() {
    let (p1, p2) = start();
    let store = two_params(&p1, &p2, DType::F64);
    let torch = Sgd::new(0.1).momentum(Momentum::Classic {
        momentum: 0.9,
        dampening: 0.9,
    });
    let docs = Sgd::new(0.1).momentum(Momentum::Ema { beta: 0.9 });
    let g = grads(&[1.0; 12], &[1.0; 5], DType::F64);
    let mut a = optimizer(torch, &store, UpdatePath::Auto);
    a.step(&g).unwrap();
    // PyTorch: b₁ = g, so the first step is lr·g = 0.1; the documents: v₁ = 0.1·g, step 0.01.
    assert!((values(store.var("p2").unwrap().as_tensor())[0] - (p2[0] - 0.1)).abs() < 1e-15);
    let store = two_params(&p1, &p2, DType::F64);
    let mut b = optimizer(docs, &store, UpdatePath::Auto);
    b.step(&g).unwrap();
    assert!((values(store.var("p2").unwrap().as_tensor())[0] - (p2[0] - 0.01)).abs() < 1e-15);
}
