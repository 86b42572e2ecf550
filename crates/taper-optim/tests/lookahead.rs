//! Lookahead against the paper's algorithm written out in float64 (around SGD with momentum
//! and around Adam, whose state carries across syncs), on both execution paths; a resumed
//! run continues bit for bit; bad states and settings are refused and change nothing.

mod common;

use common::*;
use taper_optim::*;
use taper_tensor::{DType, ParamStore};

const STEPS: usize = 20;

fn step_grads(p: &[Vec<f64>; 2], step: usize) -> taper_tensor::Gradients {
    grads(
        &formula_grad(&p[0], step, 0.0),
        &formula_grad(&p[1], step, 5.0),
        DType::F64,
    )
}

/// The paper's Algorithm 1 over an inner update `inner(θ, g, state, t)`.
fn reference(
    k: usize,
    alpha: f64,
    mut inner: impl FnMut(&mut [f64], &[f64], usize, usize),
) -> Vec<[Vec<f64>; 2]> {
    let (p1, p2) = formula_init();
    let mut theta = [p1, p2];
    let mut phi = theta.clone();
    let mut out = Vec::new();
    for t in 1..=STEPS {
        let g = [
            formula_grad(&theta[0], t, 0.0),
            formula_grad(&theta[1], t, 5.0),
        ];
        for j in 0..2 {
            inner(&mut theta[j], &g[j], j, t);
        }
        if t % k == 0 {
            for j in 0..2 {
                for i in 0..theta[j].len() {
                    phi[j][i] += alpha * (theta[j][i] - phi[j][i]);
                    theta[j][i] = phi[j][i];
                }
            }
        }
        out.push(theta.clone());
    }
    out
}

fn compare<R: Rule>(name: &str, rule: R, k: u64, alpha: f64, want: &[[Vec<f64>; 2]]) {
    for path in [UpdatePath::Auto, UpdatePath::Generic] {
        let (p1, p2) = formula_init();
        let store = two_params(&p1, &p2, DType::F64);
        let mut opt = Lookahead::new(optimizer(rule.clone(), &store, path), k, alpha).unwrap();
        for (t, want) in want.iter().enumerate() {
            opt.step(&step_grads(&pair_values(&store), t + 1)).unwrap();
            let got = pair_values(&store);
            for j in 0..2 {
                let err = rel_err(&got[j], &want[j]);
                assert!(err < 1e-12, "{name} ({path:?}) step {}: {err:.2e}", t + 1);
            }
        }
    }
}

#[test]
fn lookahead_matches_the_paper_around_sgd_and_adam() {
    let mut m = [vec![0.0; 12], vec![0.0; 5]];
    let want = reference(3, 0.5, |p, g, j, _| {
        for i in 0..p.len() {
            m[j][i] = 0.9 * m[j][i] + g[i];
            p[i] -= 0.05 * m[j][i];
        }
    });
    let sgd = Sgd::new(0.05).momentum(0.9);
    compare("sgd_momentum", sgd, 3, 0.5, &want);

    let (mut m, mut v) = ([vec![0.0; 12], vec![0.0; 5]], [vec![0.0; 12], vec![0.0; 5]]);
    let want = reference(5, 0.8, |p, g, j, t| {
        for i in 0..p.len() {
            m[j][i] = 0.9 * m[j][i] + 0.1 * g[i];
            v[j][i] = 0.999 * v[j][i] + 0.001 * g[i] * g[i];
            let mh = m[j][i] / (1.0 - 0.9f64.powi(t as i32));
            let vh = v[j][i] / (1.0 - 0.999f64.powi(t as i32));
            p[i] -= 0.02 * mh / (vh.sqrt() + 1e-8);
        }
    });
    compare("adam", Adam::new(0.02), 5, 0.8, &want);
}

#[test]
fn a_resumed_lookahead_continues_bit_for_bit() {
    let (p1, p2) = formula_init();
    let run = |store: &ParamStore| {
        Lookahead::new(Optimizer::new(Adam::new(0.02), store).unwrap(), 4, 0.5).unwrap()
    };
    let full = two_params(&p1, &p2, DType::F64);
    let mut a = run(&full);
    for t in 1..=15 {
        a.step(&step_grads(&pair_values(&full), t)).unwrap();
    }

    let first = two_params(&p1, &p2, DType::F64);
    let mut b = run(&first);
    for t in 1..=7 {
        b.step(&step_grads(&pair_values(&first), t)).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("taper-lookahead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("opt.safetensors");
    b.state_dict().unwrap().save(&file).unwrap();
    // A fresh process: the model from the checkpoint's weights, the optimizer from its file.
    let at7 = pair_values(&first);
    let resumed = two_params(&at7[0], &at7[1], DType::F64);
    let mut c = run(&resumed);
    c.load_state_dict(&OptimizerState::load(&file).unwrap())
        .unwrap();
    assert_eq!(c.steps(), 7);
    for t in 8..=15 {
        c.step(&step_grads(&pair_values(&resumed), t)).unwrap();
    }
    assert_eq!(pair_values(&resumed), pair_values(&full));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_states_and_settings_are_refused_and_change_nothing() {
    let (p1, p2) = formula_init();
    let store = two_params(&p1, &p2, DType::F64);
    let mut opt = Lookahead::new(Optimizer::new(Sgd::new(0.1), &store).unwrap(), 2, 0.5).unwrap();
    opt.step(&step_grads(&pair_values(&store), 1)).unwrap();
    let good = opt.state_dict().unwrap();
    assert_eq!(good.optimizer, "Lookahead(SGD)");
    let before = (
        opt.slow_weights()[0].1.to_vec2::<f64>().unwrap(),
        opt.steps(),
    );

    let mut nan = good.clone();
    let t = nan.tensors["p1.slow"].clone();
    nan.tensors
        .insert("p1.slow".into(), (t * f64::NAN).unwrap());
    let mut missing = good.clone();
    missing.tensors.remove("p2.slow");
    let mut counter = good.clone();
    counter.scalars.insert("lookahead.steps".into(), -1.0);
    let mut name = good.clone();
    name.optimizer = "SGD".into();
    let mut inner_bad = good.clone();
    inner_bad.scalars.insert("p1.step".into(), 0.5);
    for (what, st, needle) in [
        ("NaN slow weight", nan, "p1.slow"),
        ("missing slow weight", missing, "p2.slow"),
        ("negative counter", counter, "lookahead.steps"),
        ("plain optimizer's state", name, "Lookahead(SGD)"),
        ("bad inner step count", inner_bad, "p1.step"),
    ] {
        let err = opt.load_state_dict(&st).unwrap_err().to_string();
        assert!(err.contains(needle), "{what}: {err}");
        let now = (
            opt.slow_weights()[0].1.to_vec2::<f64>().unwrap(),
            opt.steps(),
        );
        assert_eq!(now, before, "{what}");
    }
    let inner = || Optimizer::new(Sgd::new(0.1), &store).unwrap();
    assert!(Lookahead::new(inner(), 0, 0.5)
        .unwrap_err()
        .to_string()
        .contains("sync_period"));
    assert!(Lookahead::new(inner(), 5, 1.5)
        .unwrap_err()
        .to_string()
        .contains("slow_step_size"));
}
