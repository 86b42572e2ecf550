//! Optimizer state: named tensors and scalars, saved mid-run and loaded into a fresh
//! optimizer, continues bit-identically; state that does not fit is an error naming it.

mod common;

use taper_optim::*;
use taper_tensor::{manual_seed, randn, DType, Device, Gradients, ParamStore, Tensor};

fn store() -> ParamStore {
    manual_seed(7);
    let s = ParamStore::new(&Device::Cpu, DType::F32);
    s.parameter("0.weight", (4, 3), |sh, dt, d| randn(sh, 0.0, 1.0, dt, d))
        .unwrap();
    s.parameter("0.bias", 4, |sh, dt, d| randn(sh, 0.0, 1.0, dt, d))
        .unwrap();
    s
}

/// A deterministic gradient sequence that depends on the current parameters.
fn grads_at(s: &ParamStore, step: usize) -> Gradients {
    let mut g = Gradients::default();
    for (name, v) in s.trainable() {
        let t = v.as_tensor();
        g.insert(
            &name,
            (t.sin().unwrap() + (step as f64 * 0.3).cos()).unwrap(),
        );
    }
    g
}

fn bits(s: &ParamStore) -> Vec<Vec<u32>> {
    s.state_dict()
        .iter()
        .map(|(_, t)| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

fn resume_is_exact<R: Rule>(name: &str, rule: R) {
    let mut half = rule.clone();
    half.common_mut().lr *= 0.5;
    const N: usize = 12;
    let dir = std::env::temp_dir().join(format!(
        "taper-optim-state-{}-{}",
        std::process::id(),
        name.replace(' ', "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("optim.safetensors");
    // Straight through.
    let a = store();
    let mut opt = Optimizer::new(rule.clone(), &a).unwrap();
    opt.add_group("biases", |n| n.ends_with("bias"), half.clone())
        .unwrap();
    for t in 0..N {
        opt.step(&grads_at(&a, t)).unwrap();
    }
    // Half, save, load into fresh objects, the other half.
    let b = store();
    let mut first = Optimizer::new(rule.clone(), &b).unwrap();
    first
        .add_group("biases", |n| n.ends_with("bias"), half.clone())
        .unwrap();
    for t in 0..N / 2 {
        first.step(&grads_at(&b, t)).unwrap();
    }
    first.save(&file).unwrap();
    let weights: Vec<(String, Tensor)> = b
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, t.copy().unwrap()))
        .collect();
    drop(first);
    let c = ParamStore::new(&Device::Cpu, DType::F32);
    for (n, t) in &weights {
        c.parameter(n, t.shape(), |_, _, _| Ok(t.clone())).unwrap();
    }
    let mut second = Optimizer::new(rule.clone(), &c).unwrap();
    second
        .add_group("biases", |n| n.ends_with("bias"), rule.clone())
        .unwrap(); // lr restored from the file
    second.load(&file).unwrap();
    assert_eq!(second.steps(), (N / 2) as u64);
    assert_eq!(
        second.groups()[1].rule.common().lr,
        rule.common().lr * 0.5,
        "{name}: group lr restored"
    );
    for t in N / 2..N {
        second.step(&grads_at(&c, t)).unwrap();
    }
    assert_eq!(
        bits(&a),
        bits(&c),
        "{name}: resumed run differs from the uninterrupted one"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn save_and_load_mid_run_continues_identically_for_every_rule() {
    for_every_rule!(resume_is_exact);
}

#[test]
fn state_is_named_by_parameter_and_field() {
    let s = store();
    let mut opt = Optimizer::new(Adam::new(0.01).amsgrad(true), &s).unwrap();
    opt.step(&grads_at(&s, 0)).unwrap();
    let st = opt.state_dict().unwrap();
    let names: Vec<&str> = st.tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "0.bias.exp_avg",
            "0.bias.exp_avg_sq",
            "0.bias.max_exp_avg_sq",
            "0.weight.exp_avg",
            "0.weight.exp_avg_sq",
            "0.weight.max_exp_avg_sq"
        ]
    );
    assert_eq!(st.scalars["0.weight.step"], 1.0);
    assert_eq!(st.scalars["steps"], 1.0);
    assert_eq!(st.scalars["group.0.lr"], 0.01);
    let mut nadam = Optimizer::new(NAdam::new(0.01), &s).unwrap();
    nadam.step(&grads_at(&s, 0)).unwrap();
    let mu = nadam.state_dict().unwrap().scalars["0.bias.mu_product"];
    assert!((mu - 0.9 * (1.0 - 0.5 * 0.96f64.powf(0.004))).abs() < 1e-15);
}

#[test]
fn state_that_does_not_fit_is_rejected_by_name() {
    let s = store();
    let mut opt = Optimizer::new(Adam::new(0.01), &s).unwrap();
    opt.step(&grads_at(&s, 0)).unwrap();
    let good = opt.state_dict().unwrap();

    let mut missing = good.clone();
    missing.tensors.remove("0.weight.exp_avg_sq");
    let e = opt.load_state_dict(&missing).unwrap_err().to_string();
    assert!(e.contains("missing tensor `0.weight.exp_avg_sq`"), "{e}");

    let mut shape = good.clone();
    shape.tensors.insert(
        "0.bias.exp_avg".into(),
        Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = opt.load_state_dict(&shape).unwrap_err().to_string();
    assert!(
        e.contains("`0.bias.exp_avg` has shape [5]") && e.contains("[4]"),
        "{e}"
    );

    let mut extra = good.clone();
    extra.scalars.insert("1.weight.step".into(), 1.0);
    extra.tensors.insert(
        "1.weight.exp_avg".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = opt.load_state_dict(&extra).unwrap_err().to_string();
    assert!(
        e.contains("1.weight.exp_avg") && e.contains("1.weight.step"),
        "{e}"
    );

    let mut sgd = Optimizer::new(Sgd::new(0.1), &s).unwrap();
    let e = sgd.load_state_dict(&good).unwrap_err().to_string();
    assert!(
        e.contains("state is for Adam, this optimizer is SGD"),
        "{e}"
    );

    // Nothing changed after the failed loads.
    assert_eq!(opt.state("0.weight").unwrap().step, 1);
    opt.load_state_dict(&good).unwrap();

    // Files: not safetensors, or not a Taper state.
    let dir = std::env::temp_dir().join(format!("taper-optim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a safetensors file").unwrap();
    let e = opt.load(&junk).unwrap_err().to_string();
    assert!(
        e.contains("junk.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );
    let foreign = dir.join("foreign.safetensors");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("w".to_string(), t)]),
        &foreign,
    )
    .unwrap();
    let e = opt.load(&foreign).unwrap_err().to_string();
    assert!(e.contains("not a Taper optimizer state"), "{e}");
    let e = opt
        .load(dir.join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Counters, scalars and group hyperparameters read from a state are validated, each error
/// names the entry, and a rejected state changes nothing, not even the learning rate.
#[test]
fn counters_scalars_and_group_settings_are_validated_and_a_failure_changes_nothing() {
    let s = store();
    let mut opt = Optimizer::new(NAdam::new(0.01), &s).unwrap();
    opt.step(&grads_at(&s, 0)).unwrap();
    opt.step(&grads_at(&s, 1)).unwrap();
    let good = opt.state_dict().unwrap();
    let before = bits(&s);
    let cases: Vec<(&str, f64, &str)> = vec![
        ("steps", 18446744073709551616.0, "steps"),
        ("steps", -1.0, "steps"),
        ("steps", 2.5, "steps"),
        ("steps", f64::NAN, "steps"),
        ("0.weight.step", 1e300, "0.weight.step"),
        ("0.weight.step", 3.0, "exceeds"),
        ("0.weight.mu_product", f64::INFINITY, "0.weight.mu_product"),
        ("0.weight.mu_product", f64::NAN, "0.weight.mu_product"),
        ("group.0.lr", -1.0, "lr"),
        ("group.0.lr", f64::NAN, "lr"),
        ("group.0.momentum", 1.5, "beta1"),
        ("group.0.weight_decay", 0.5, "no weight decay"),
    ];
    for (key, v, expect) in cases {
        let mut bad = good.clone();
        bad.scalars.insert(key.into(), v);
        let e = opt.load_state_dict(&bad).unwrap_err().to_string();
        assert!(e.contains(expect), "{key} = {v}: {e}");
        assert!(opt.check_state_dict(&bad).is_err());
        assert_eq!(opt.steps(), 2, "{key} = {v}");
        assert_eq!(opt.lr(), 0.01, "{key} = {v}");
        assert_eq!(opt.state("0.weight").unwrap().step, 2);
    }
    // An integer tensor where a moment should be is not converted into garbage.
    let mut ints = good.clone();
    ints.tensors.insert(
        "0.bias.exp_avg".into(),
        Tensor::zeros(4, DType::I64, &Device::Cpu).unwrap(),
    );
    let e = opt.load_state_dict(&ints).unwrap_err().to_string();
    assert!(e.contains("0.bias.exp_avg") && e.contains("I64"), "{e}");
    // The intact state still loads, and training continues.
    opt.load_state_dict(&good).unwrap();
    opt.step(&grads_at(&s, 2)).unwrap();
    assert_ne!(bits(&s), before);
}

/// The groups' current learning rate, momentum (β₁) and weight decay are part of the state,
/// so a schedule that cycled them (OneCycle) resumes exactly.
#[test]
fn group_hyperparameters_travel_with_the_state() {
    let s = store();
    let mut a = Optimizer::new(Adam::new(0.01).weight_decay(WeightDecay::L2(1e-3)), &s).unwrap();
    a.update_group(0, |r| {
        r.common_mut().lr = 0.003;
        r.set_momentum_coefficient(0.85);
        r.common_mut().weight_decay = WeightDecay::L2(2e-3);
    })
    .unwrap();
    let st = a.state_dict().unwrap();
    assert_eq!(st.scalars["group.0.lr"], 0.003);
    assert_eq!(st.scalars["group.0.momentum"], 0.85);
    assert_eq!(st.scalars["group.0.weight_decay"], 2e-3);
    let mut b = Optimizer::new(Adam::new(0.01).weight_decay(WeightDecay::L2(1e-3)), &s).unwrap();
    b.load_state_dict(&st).unwrap();
    let r = &b.groups()[0].rule;
    assert_eq!(
        (r.common().lr, r.momentum_coefficient()),
        (0.003, Some(0.85))
    );
    assert_eq!(r.common().weight_decay, WeightDecay::L2(2e-3));
}

#[test]
fn an_optimizer_over_nothing_is_an_error() {
    let empty = ParamStore::new(&Device::Cpu, DType::F32);
    let e = Optimizer::new(Sgd::new(0.1), &empty)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty parameter list"), "{e}");
}

/// Counters at the edge of exactness: a step count of 2⁵³ used to load, then save as 2⁵³
/// after one more step (a step lost) and as 2⁵³ + 4 two steps later. One bound on both
/// sides now: a count loads only if the next step still saves exactly.
#[test]
fn step_counts_at_two_to_the_53_lose_no_step() {
    let s = store();
    let mut opt = Optimizer::new(Sgd::new(0.1), &s).unwrap();
    opt.step(&grads_at(&s, 0)).unwrap();
    let good = opt.state_dict().unwrap();
    let max = taper_tensor::MAX_COUNTER as f64;
    let with_steps = |steps: f64| {
        let mut st = good.clone();
        st.scalars.insert("steps".into(), steps);
        for (k, v) in st.scalars.iter_mut() {
            if k.ends_with(".step") {
                *v = steps;
            }
        }
        st
    };
    // 2^53 is refused on load, naming the counter...
    let e = opt
        .load_state_dict(&with_steps(max))
        .unwrap_err()
        .to_string();
    assert!(e.contains("steps") && e.contains("2^53 - 1"), "{e}");
    // ...2^53 − 1 loads, steps once, and saves 2^53 exactly...
    opt.load_state_dict(&with_steps(max - 1.0)).unwrap();
    opt.step(&grads_at(&s, 1)).unwrap();
    let saved = opt.state_dict().unwrap();
    assert_eq!(saved.scalars["steps"], max);
    assert_eq!(saved.scalars["0.weight.step"], max);
    // ...and one step more cannot be saved exactly: an error, not a rounded count.
    opt.step(&grads_at(&s, 2)).unwrap();
    let e = opt.state_dict().unwrap_err().to_string();
    assert!(e.contains("step") && e.contains("2^53"), "{e}");
}

/// The path is decided once, from the tensors the step sees: an f64 gradient for an f32
/// parameter takes tensor ops, and the report says so because it asks the same decision.
#[test]
fn execution_is_the_decision_the_step_makes() {
    let s = store();
    let opt = Optimizer::new(Adam::new(1e-3), &s).unwrap();
    assert!(opt.execution()[0].ends_with("fused CPU loop (2 state tensors)"));
    let mut g64 = Gradients::default();
    for (name, var) in s.trainable() {
        g64.insert(
            &name,
            var.ones_like().unwrap().to_dtype(DType::F64).unwrap(),
        );
    }
    let said = opt.execution_with(&g64);
    assert!(said[0].contains("tensor ops: the gradient"), "{said:?}");
    // And the step takes that path: the same update as the generic path gives, bit for
    // bit (it is the generic path).
    let other = store();
    let mut generic = Optimizer::new(Adam::new(1e-3), &other)
        .unwrap()
        .update_path(UpdatePath::Generic);
    let mut opt = opt;
    opt.step(&g64).unwrap();
    generic.step(&g64).unwrap();
    let values = |st: &ParamStore| -> Vec<Vec<f32>> {
        st.trainable()
            .iter()
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    assert_eq!(values(&s), values(&other));
}
