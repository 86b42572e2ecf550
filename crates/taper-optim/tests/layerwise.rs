//! LAMB and LARS against their papers' formulas (in optax's form), written out here in
//! float64 over plain vectors: 25 steps on two tensors with replayed gradients, on both
//! execution paths, to 1e-10 relative. Also: the trust ratio's zero-norm rule, exclusion
//! by name through a parameter group, and LAMB's norm pass leaving the state untouched.

mod common;

use common::*;
use taper_optim::*;
use taper_tensor::DType;

const STEPS: usize = 25;

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// optax's `scale_by_trust_ratio`: φ‖θ‖/(‖u‖ + ε), or 1 where either norm is 0.
fn ratio(p: &[f64], u: &[f64], phi: f64, eps: f64) -> f64 {
    let (pn, un) = (norm(p), norm(u));
    if pn == 0.0 || un == 0.0 {
        1.0
    } else {
        phi * pn / (un + eps)
    }
}

/// One tensor's LAMB reference state.
struct LambRef {
    m: Vec<f64>,
    v: Vec<f64>,
}

/// LAMB (You et al. 2020, Algorithm 2, in optax's form) for one tensor at step t.
fn lamb_step(c: &Lamb, p: &mut [f64], g: &[f64], st: &mut LambRef, t: i32) {
    let (b1, b2) = (c.beta1, c.beta2);
    let mut u = vec![0.0; p.len()];
    for i in 0..p.len() {
        st.m[i] = b1 * st.m[i] + (1.0 - b1) * g[i];
        st.v[i] = b2 * st.v[i] + (1.0 - b2) * g[i] * g[i];
        let mh = st.m[i] / (1.0 - b1.powi(t));
        let vh = st.v[i] / (1.0 - b2.powi(t));
        u[i] = mh / ((vh + c.eps_root).sqrt() + c.eps) + c.weight_decay * p[i];
    }
    let r = if c.trust_ratio {
        ratio(p, &u, 1.0, 0.0)
    } else {
        1.0
    };
    for i in 0..p.len() {
        p[i] -= c.common.lr * r * u[i];
    }
}

/// LARS (You, Gitman & Ginsburg 2017, in optax's form) for one tensor.
fn lars_step(c: &Lars, p: &mut [f64], g: &[f64], m: &mut [f64]) {
    let u: Vec<f64> = (0..p.len()).map(|i| g[i] + c.weight_decay * p[i]).collect();
    let r = if c.trust_ratio {
        ratio(p, &u, c.trust_coefficient, c.eps)
    } else {
        1.0
    };
    for i in 0..p.len() {
        let q = c.common.lr * r * u[i];
        m[i] = q + c.momentum * m[i];
        p[i] -= if c.nesterov {
            q + c.momentum * m[i]
        } else {
            m[i]
        };
    }
}

/// Runs `opt_rule` (with `bias` as the `p2` group's rule, if given) through Taper on both
/// paths and `reference` in float64, comparing after every step.
fn compare<R: Rule>(
    name: &str,
    rule: R,
    bias: Option<R>,
    mut reference: impl FnMut(&mut [Vec<f64>; 2], &[Vec<f64>; 2], usize),
) {
    let (p1, p2) = formula_init();
    let mut want = [p1.clone(), p2.clone()];
    let mut wants = Vec::new();
    for step in 1..=STEPS {
        let g = [
            formula_grad(&want[0], step, 0.0),
            formula_grad(&want[1], step, 5.0),
        ];
        reference(&mut want, &g, step);
        wants.push(want.clone());
    }
    for path in [UpdatePath::Auto, UpdatePath::Generic] {
        let store = two_params(&p1, &p2, DType::F64);
        let mut opt = optimizer(rule.clone(), &store, path);
        if let Some(b) = &bias {
            opt.add_group("excluded", |n| n == "p2", b.clone()).unwrap();
        }
        for (step, want) in wants.iter().enumerate() {
            let cur = pair_values(&store);
            let g = grads(
                &formula_grad(&cur[0], step + 1, 0.0),
                &formula_grad(&cur[1], step + 1, 5.0),
                DType::F64,
            );
            opt.step(&g).unwrap();
            for (k, p) in ["p1", "p2"].into_iter().enumerate() {
                let got = values(store.var(p).unwrap().as_tensor());
                let err = rel_err(&got, &want[k]);
                assert!(
                    err < 1e-10,
                    "{name} ({path:?}) step {} {p}: relative error {err:.2e}",
                    step + 1
                );
            }
        }
    }
}

fn lamb_reference(
    c: Lamb,
    bias: Option<Lamb>,
) -> impl FnMut(&mut [Vec<f64>; 2], &[Vec<f64>; 2], usize) {
    let mut st: Vec<LambRef> = [12, 5]
        .iter()
        .map(|&n| LambRef {
            m: vec![0.0; n],
            v: vec![0.0; n],
        })
        .collect();
    move |p, g, t| {
        for k in 0..2 {
            let cfg = if k == 1 { bias.unwrap_or(c) } else { c };
            lamb_step(&cfg, &mut p[k], &g[k], &mut st[k], t as i32);
        }
    }
}

fn lars_reference(
    c: Lars,
    bias: Option<Lars>,
) -> impl FnMut(&mut [Vec<f64>; 2], &[Vec<f64>; 2], usize) {
    let mut m = [vec![0.0; 12], vec![0.0; 5]];
    move |p, g, _| {
        for k in 0..2 {
            let cfg = if k == 1 { bias.unwrap_or(c) } else { c };
            lars_step(&cfg, &mut p[k], &g[k], &mut m[k]);
        }
    }
}

#[test]
fn lamb_matches_its_formula() {
    for (name, c) in [
        ("lamb", Lamb::new(0.05)),
        (
            "lamb_decay",
            Lamb::new(0.05).weight_decay(0.1).betas(0.8, 0.99),
        ),
        ("lamb_eps_root", Lamb::new(0.02).eps(1e-8).eps_root(1e-6)),
        (
            "lamb_no_trust",
            Lamb::new(0.02).weight_decay(0.01).trust_ratio(false),
        ),
    ] {
        compare(name, c, None, lamb_reference(c, None));
    }
    let c = Lamb::new(0.05).weight_decay(0.1);
    compare(
        "lamb_excluded",
        c,
        Some(c.excluded()),
        lamb_reference(c, Some(c.excluded())),
    );
}

#[test]
fn lars_matches_its_formula() {
    for (name, c) in [
        ("lars", Lars::new(5.0)),
        ("lars_decay", Lars::new(5.0).weight_decay(0.01).eps(1e-6)),
        (
            "lars_nesterov",
            Lars::new(3.0)
                .nesterov(true)
                .momentum(0.8)
                .trust_coefficient(0.01),
        ),
        ("lars_no_trust", Lars::new(0.01).trust_ratio(false)),
    ] {
        compare(name, c, None, lars_reference(c, None));
    }
    let c = Lars::new(5.0).weight_decay(0.01);
    compare(
        "lars_excluded",
        c,
        Some(c.excluded()),
        lars_reference(c, Some(c.excluded())),
    );
}

#[test]
fn a_zero_parameter_takes_the_plain_step() {
    // ‖θ‖ = 0 (e.g. a bias initialised to zero): the ratio is 1, as in optax, not 0.
    for path in [UpdatePath::Auto, UpdatePath::Generic] {
        let store = two_params(&[0.0; 12], &[0.0; 5], DType::F64);
        let mut opt = optimizer(Lars::new(0.1).momentum(0.0), &store, path);
        let g: Vec<f64> = (0..12).map(|i| i as f64 - 5.0).collect();
        opt.step(&grads(&g, &[1.0; 5], DType::F64)).unwrap();
        let got = values(store.var("p1").unwrap().as_tensor());
        let want: Vec<f64> = g.iter().map(|x| -0.1 * x).collect();
        assert!(rel_err(&got, &want) < 1e-12, "{path:?}: {got:?}");
    }
}

#[test]
fn the_norm_pass_changes_no_state() {
    // One LAMB step: the moments must be those of one update, not two (the read-only norm
    // pass computes them in registers and drops them).
    for path in [UpdatePath::Auto, UpdatePath::Generic] {
        let (p1, p2) = formula_init();
        let store = two_params(&p1, &p2, DType::F64);
        let mut opt = optimizer(Lamb::new(0.01), &store, path);
        let g1 = formula_grad(&p1, 1, 0.0);
        opt.step(&grads(&g1, &formula_grad(&p2, 1, 5.0), DType::F64))
            .unwrap();
        let m = values(&opt.state("p1").unwrap().tensors[0]);
        let want: Vec<f64> = g1.iter().map(|x| 0.1 * x).collect();
        assert!(rel_err(&m, &want) < 1e-14, "{path:?}");
    }
}
