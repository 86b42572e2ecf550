//! Gradients: collection by name, norms and clipping against PyTorch's
//! `clip_grad_norm_`/`clip_grad_value_` (fixture from `fixtures/clip_grad_norm.py`) and
//! against hand-computed float64 values, scaling, accumulation and the non-finite check.

use serde_json::Value;
use taper_tensor::{DType, Device, Error, Gradients, NonFinite, Norm, ParamStore, Result, Tensor};

fn t(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn vec1(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

#[test]
fn compute_keys_by_name_reports_missing_and_skips_frozen() -> Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let a = store.parameter("a", 2, |_, _, d| Ok(Tensor::new(&[1f32, 2.], d)?))?;
    let b = store.parameter("b", 2, |_, _, d| Ok(Tensor::new(&[3f32, 4.], d)?))?;
    store.parameter("unused", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
    store.freeze("b")?;
    // loss = Σ a² · b  ⇒  ∂/∂a = 2ab = [6, 16]
    let loss = a.sqr()?.mul(&b)?.sum_all()?;
    let g = Gradients::compute(&loss, &store)?;
    assert_eq!(g.names(), ["a"]);
    assert_eq!(vec1(g.get("a").unwrap()), [6.0, 16.0]);
    assert!(g.get("b").is_none(), "frozen parameters get no entry");
    assert_eq!(g.missing(), ["unused"]);
    Ok(())
}

fn sample() -> Gradients {
    let mut g = Gradients::default();
    g.insert("w", t(&[3.0, -4.0]));
    g.insert("b", t(&[12.0]));
    g
}

#[test]
fn norms_match_hand_computed_values() -> Result<()> {
    let g = sample();
    assert_eq!(g.norm(Norm::L2)?, 13.0); // √(9+16+144)
    assert_eq!(g.norm(Norm::Inf)?, 12.0);
    assert!(close(g.norm(Norm::P(1.0))?, 19.0, 1e-12));
    let p3 = (27f64 + 64.0 + 1728.0).powf(1.0 / 3.0);
    assert!(close(g.norm(Norm::P(3.0))?, p3, 1e-12));
    assert_eq!(Gradients::default().norm(Norm::L2)?, 0.0);
    Ok(())
}

#[test]
fn clip_norm_uses_the_pytorch_coefficient() -> Result<()> {
    let mut g = sample();
    let total = g.clip_norm(6.5, Norm::L2, NonFinite::Allow)?;
    assert_eq!(total, 13.0);
    let coef = 6.5 / (13.0 + 1e-6);
    assert!(vec1(g.get("w").unwrap())
        .iter()
        .zip([3.0, -4.0])
        .all(|(a, b)| close(*a, b * coef, 1e-6)));
    assert!(close(g.norm(Norm::L2)?, 6.5, 1e-6));
    // Under the limit nothing changes.
    let mut g = sample();
    assert_eq!(g.clip_norm(100.0, Norm::Inf, NonFinite::Allow)?, 12.0);
    assert_eq!(vec1(g.get("b").unwrap()), [12.0]);
    Ok(())
}

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/clip_grad_norm.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_grads(fx: &Value) -> Gradients {
    let mut g = Gradients::default();
    for (name, shape) in fx["shapes"].as_object().unwrap() {
        let dims: Vec<usize> = shape
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let v: Vec<f32> = fx["grads"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        g.insert(name, Tensor::from_vec(v, dims, &Device::Cpu).unwrap());
    }
    g
}

fn assert_matches(g: &Gradients, expected: &Value) {
    for (name, want) in expected.as_object().unwrap() {
        let got = vec1(g.get(name).unwrap());
        for (a, b) in got.iter().zip(want.as_array().unwrap()) {
            let b = b.as_f64().unwrap();
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name}: {a} vs torch {b}"
            );
        }
    }
}

#[test]
fn clip_norm_and_clip_value_match_torch() -> Result<()> {
    let fx = fixture();
    for case in fx["norm_cases"].as_array().unwrap() {
        let norm = match &case["norm_type"] {
            Value::String(s) if s == "inf" => Norm::Inf,
            v if v.as_f64() == Some(2.0) => Norm::L2,
            v => Norm::P(v.as_f64().unwrap()),
        };
        let mut g = fixture_grads(&fx);
        let total = g.clip_norm(case["max_norm"].as_f64().unwrap(), norm, NonFinite::Error)?;
        let want = case["total_norm"].as_f64().unwrap();
        assert!(
            close(total, want, 1e-6),
            "{norm}: total {total} vs torch {want}"
        );
        assert_matches(&g, &case["clipped"]);
    }
    let mut g = fixture_grads(&fx);
    g.clip_value(fx["clip_value"].as_f64().unwrap())?;
    assert_matches(&g, &fx["value_clipped"]);
    Ok(())
}

#[test]
fn non_finite_gradients_are_named() -> Result<()> {
    let mut g = sample();
    g.insert("bad", t(&[1.0, f32::NAN]));
    g.insert("worse", t(&[f32::NEG_INFINITY]));
    assert_eq!(g.non_finite()?, ["bad", "worse"]);
    let e = g.check_finite().unwrap_err();
    assert!(matches!(e, Error::NonFiniteGradient { .. }));
    assert!(e.to_string().contains("bad, worse"), "{e}");
    let before = vec1(g.get("w").unwrap());
    let e = g.clip_norm(1.0, Norm::L2, NonFinite::Error).unwrap_err();
    assert!(matches!(e, Error::NonFiniteNorm { .. }), "{e}");
    assert_eq!(
        vec1(g.get("w").unwrap()),
        before,
        "an error leaves gradients untouched"
    );
    sample().check_finite()?;
    // Huge but finite values are finite.
    let mut big = Gradients::default();
    big.insert("x", t(&[3e38, 3e38]));
    big.check_finite()?;
    Ok(())
}

#[test]
fn scale_and_accumulate() -> Result<()> {
    let mut acc = sample();
    let mut other = Gradients::default();
    other.insert("w", t(&[1.0, 1.0]));
    other.insert("extra", t(&[5.0]));
    acc.accumulate(&other)?;
    acc.scale(0.5)?;
    assert_eq!(vec1(acc.get("w").unwrap()), [2.0, -1.5]);
    assert_eq!(vec1(acc.get("b").unwrap()), [6.0]);
    assert_eq!(vec1(acc.get("extra").unwrap()), [2.5]);
    assert_eq!(acc.names(), ["w", "b", "extra"]);
    let mut wrong = Gradients::default();
    wrong.insert("w", t(&[1.0, 2.0, 3.0]));
    let e = acc.accumulate(&wrong).unwrap_err();
    assert!(
        e.to_string().contains("`w`") && e.to_string().contains("[2]"),
        "{e}"
    );
    Ok(())
}

#[test]
fn bad_clip_arguments_are_errors() {
    let mut g = sample();
    for e in [
        g.clip_norm(-1.0, Norm::L2, NonFinite::Allow).unwrap_err(),
        g.clip_norm(1.0, Norm::P(0.5), NonFinite::Allow)
            .unwrap_err(),
        g.clip_value(f64::NAN).unwrap_err(),
    ] {
        assert!(matches!(e, Error::InvalidValue { .. }), "{e}");
    }
}

#[test]
fn accumulating_micro_batches_equals_the_full_batch() -> anyhow::Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    let w = store.parameter("w", (1, 3), |_, _, d| {
        Ok(Tensor::new(&[[0.5f64, -1.0, 2.0]], d)?)
    })?;
    let x = Tensor::new(
        &[[1f64, 2., 3.], [0., 1., -1.], [2., 2., 2.], [1., 0., 0.]],
        &Device::Cpu,
    )?;
    let loss = |x: &Tensor| x.matmul(&w.t()?)?.sqr()?.sum_all();
    let full = Gradients::compute(&loss(&x)?, &store)?;
    let mut acc = Gradients::compute(&loss(&x.narrow(0, 0, 2)?)?, &store)?;
    acc.accumulate(&Gradients::compute(&loss(&x.narrow(0, 2, 2)?)?, &store)?)?;
    let (a, b) = (vec1(acc.get("w").unwrap()), vec1(full.get("w").unwrap()));
    assert!(
        a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12),
        "{a:?} vs {b:?}"
    );
    Ok(())
}
