//! L-BFGS against torch.optim.LBFGS (`fixtures/torch_lbfgs.py` → `fixtures/torch_lbfgs.json`)
//! on a fixed objective driven by its closure: parameters after every step to 1e-5, the
//! returned loss, and the evaluation and iteration counts exactly, with the fixed step and
//! the strong-Wolfe line search; the state resumes bit for bit and bad states are refused.

mod common;

use common::*;
use serde_json::Value;
use taper_optim::*;
use taper_tensor::{DType, Device, ParamStore, Tensor};

/// The fixture's objective: Σ(p1 − 0.5)²·W1 + Σ sin(3·p2) + 0.1·Σp1·Σp2 (times `sign`).
fn objective(store: &ParamStore, w1: &Tensor, sign: f64) -> impl FnMut() -> Result<Tensor> {
    let (store, w1) = (store.clone(), w1.clone());
    move || {
        let p1 = store.var("p1")?.as_tensor().clone();
        let p2 = store.var("p2")?.as_tensor().clone();
        let a = (p1.affine(1.0, -0.5)?.sqr()? * &w1)?.sum_all()?;
        let b = p2.affine(3.0, 0.0)?.sin()?.sum_all()?;
        let c = (p1.sum_all()? * p2.sum_all()?)?.affine(0.1, 0.0)?;
        Ok(((a + b)? + c)?.affine(sign, 0.0)?)
    }
}

fn setup(fx: &Value, dtype: DType) -> (ParamStore, Tensor) {
    let store = two_params(
        &floats(&fx["init"]["p1"]),
        &floats(&fx["init"]["p2"]),
        dtype,
    );
    let w1 = Tensor::from_vec(floats(&fx["w1"]), (3, 4), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    (store, w1)
}

/// Replays case `name` (float64, or float32 for `*_f32` cases). A float32 case is compared
/// while PyTorch's loss still falls by more than 1e-6 relative per step: past that, both
/// sit at the minimum and their stopping tests compare last-bit differences of the loss.
fn check(fx: &Value, name: &str, config: Lbfgs) {
    let f32 = name.ends_with("_f32");
    let (store, w1) = setup(fx, if f32 { DType::F32 } else { DType::F64 });
    let sign = if config.maximize { -1.0 } else { 1.0 };
    let mut opt = LbfgsOptimizer::new(config, &store).unwrap();
    let mut f = objective(&store, &w1, sign);
    for (step, want) in fx["cases"][name].as_array().unwrap().iter().enumerate() {
        if f32 && step > 0 {
            let prev = fx["cases"][name][step - 1]["loss"].as_f64().unwrap();
            let now = want["loss"].as_f64().unwrap();
            if prev - now <= 1e-6 * now.abs() {
                assert!(step >= 8, "{name}: converged after {step} steps only");
                break;
            }
        }
        let loss = opt.step_with(&mut f).unwrap();
        let at = format!("{name} step {}", step + 1);
        let wl = want["loss"].as_f64().unwrap();
        assert!(
            (loss - wl).abs() <= 1e-5 * (1.0 + wl.abs()),
            "{at}: loss {loss} vs {wl}"
        );
        for p in ["p1", "p2"] {
            let got = values(store.var(p).unwrap().as_tensor());
            let err = rel_err(&got, &floats(&want[p]));
            assert!(err < 1e-5, "{at} {p}: relative error {err:.2e}");
        }
        assert_eq!(
            opt.n_iter(),
            want["n_iter"].as_u64().unwrap(),
            "{at}: n_iter"
        );
        assert_eq!(
            opt.func_evals(),
            want["func_evals"].as_u64().unwrap(),
            "{at}: func_evals"
        );
    }
}

#[test]
fn lbfgs_matches_torch() {
    let fx = fixture("torch_lbfgs.json");
    check(&fx, "default", Lbfgs::new(1.0));
    check(&fx, "short", Lbfgs::new(0.5).max_iter(3).history_size(4));
    let wolfe = Lbfgs::new(1.0).line_search(LineSearch::StrongWolfe);
    check(&fx, "wolfe", wolfe.max_iter(4).history_size(5));
    check(&fx, "wolfe_default", wolfe);
    check(
        &fx,
        "wolfe_tight",
        Lbfgs::new(0.8)
            .line_search(LineSearch::StrongWolfe)
            .max_iter(6)
            .max_eval(7)
            .tolerance_grad(1e-5)
            .tolerance_change(1e-7)
            .history_size(3),
    );
    check(&fx, "maximize", Lbfgs::new(1.0).max_iter(3).maximize(true));
    check(
        &fx,
        "short_f32",
        Lbfgs::new(0.5).max_iter(3).history_size(4),
    );
}

#[test]
fn a_resumed_lbfgs_continues_bit_for_bit_and_bad_states_change_nothing() {
    let fx = fixture("torch_lbfgs.json");
    let config = Lbfgs::new(1.0)
        .line_search(LineSearch::StrongWolfe)
        .max_iter(3)
        .history_size(4);
    let (full, w1) = setup(&fx, DType::F32);
    let mut a = LbfgsOptimizer::new(config, &full).unwrap();
    let mut fa = objective(&full, &w1, 1.0);
    for _ in 0..6 {
        a.step_with(&mut fa).unwrap();
    }

    let (first, _) = setup(&fx, DType::F32);
    let mut b = LbfgsOptimizer::new(config, &first).unwrap();
    let mut fb = objective(&first, &w1, 1.0);
    for _ in 0..3 {
        b.step_with(&mut fb).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("taper-lbfgs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lbfgs.safetensors");
    let saved = b.state_dict().unwrap();
    assert_eq!(
        saved.scalars["history"], 4.0,
        "the history is full after 9 iterations"
    );
    saved.save(&file).unwrap();
    let p = [
        values(first.var("p1").unwrap().as_tensor()),
        values(first.var("p2").unwrap().as_tensor()),
    ];
    let resumed = two_params(&p[0], &p[1], DType::F32);
    let mut c = LbfgsOptimizer::new(config, &resumed).unwrap();
    c.load_state_dict(&OptimizerState::load(&file).unwrap())
        .unwrap();
    let mut fc = objective(&resumed, &w1, 1.0);
    for _ in 0..3 {
        c.step_with(&mut fc).unwrap();
    }
    for n in ["p1", "p2"] {
        assert_eq!(
            values(resumed.var(n).unwrap().as_tensor()),
            values(full.var(n).unwrap().as_tensor()),
            "{n}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Refused states leave the optimizer as it was.
    let good = b.state_dict().unwrap();
    let mut nan = good.clone();
    nan.scalars.insert("ro.1".into(), f64::NAN);
    let mut short = good.clone();
    short.tensors.insert(
        "d".into(),
        Tensor::zeros(16, DType::F64, &Device::Cpu).unwrap(),
    );
    let mut long = good.clone();
    long.scalars.insert("history".into(), 9.0);
    let mut extra = good.clone();
    extra.scalars.insert("momentum".into(), 0.9);
    let mut name = good.clone();
    name.optimizer = "SGD".into();
    for (what, st, needle) in [
        ("NaN scalar", nan, "ro.1"),
        ("wrong length", short, "`d`"),
        ("history too long", long, "history"),
        ("unknown entry", extra, "unknown"),
        ("another optimizer", name, "SGD"),
    ] {
        let err = b.load_state_dict(&st).unwrap_err().to_string();
        assert!(err.contains(needle), "{what}: {err}");
        assert_eq!(b.state_dict().unwrap().scalars, good.scalars, "{what}");
    }
    assert!(LbfgsOptimizer::new(Lbfgs::new(1.0).history_size(0), &first).is_err());
}
