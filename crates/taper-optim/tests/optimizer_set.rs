//! `OptimizerSet`: several optimizers over disjoint parameters, stepped, clipped, scheduled
//! and saved as one.

use taper_optim::*;
use taper_tensor::{DType, Device, Gradients, Norm, ParamStore, StateDict, Stateful, Tensor};

/// `a` (4) and `b` (2), and gradients of ones scaled per parameter.
fn setup() -> (ParamStore, Gradients) {
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    for (name, n) in [("a", 4), ("b", 2)] {
        store
            .parameter(name, n, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))
            .unwrap();
    }
    let mut g = Gradients::default();
    g.insert(
        "a",
        Tensor::new(&[3.0f64, 0.0, 4.0, 0.0], &Device::Cpu).unwrap(),
    );
    g.insert("b", Tensor::new(&[6.0f64, 8.0], &Device::Cpu).unwrap());
    (store, g)
}

fn params(store: &ParamStore, name: &str) -> Vec<(String, taper_tensor::Var)> {
    store
        .trainable()
        .into_iter()
        .filter(|(n, _)| n == name)
        .collect()
}

fn values(store: &ParamStore, name: &str) -> Vec<f64> {
    store.var(name).unwrap().as_tensor().to_vec1().unwrap()
}

#[test]
fn a_members_clip_sees_its_own_gradients_and_the_sets_sees_all() {
    let clip = Clip::Norm {
        max_norm: 1.0,
        norm: Norm::L2,
    };
    // Member scope: `a`'s norm is 5, `b`'s 10; each clipped to 1 by its own norm.
    let (store, g) = setup();
    let mut set = OptimizerSet::new()
        .add(
            "a",
            Optimizer::from_vars(Sgd::new(1.0), params(&store, "a"))
                .unwrap()
                .clip(clip)
                .unwrap(),
        )
        .unwrap()
        .add(
            "b",
            Optimizer::from_vars(Sgd::new(1.0), params(&store, "b"))
                .unwrap()
                .clip(clip)
                .unwrap(),
        )
        .unwrap();
    set.step(&g).unwrap();
    // clip_grad_norm_'s factor max_norm / (norm + 1e-6).
    let close = |got: Vec<f64>, g: &[f64], norm: f64| {
        for (x, gi) in got.iter().zip(g) {
            assert!((x + gi / (norm + 1e-6)).abs() < 1e-12, "{got:?}");
        }
    };
    close(values(&store, "a"), &[3.0, 0.0, 4.0, 0.0], 5.0);
    close(values(&store, "b"), &[6.0, 8.0], 10.0);
    // Set scope: the total norm is √125; everything is scaled together, as
    // clip_grad_norm_(model.parameters()) does.
    let (store, g) = setup();
    let mut set = OptimizerSet::new()
        .add(
            "a",
            Optimizer::from_vars(Sgd::new(1.0), params(&store, "a")).unwrap(),
        )
        .unwrap()
        .add(
            "b",
            Optimizer::from_vars(Sgd::new(1.0), params(&store, "b")).unwrap(),
        )
        .unwrap()
        .clip(clip)
        .unwrap();
    let report = set.step(&g).unwrap();
    let total = 125f64.sqrt();
    assert_eq!(report.grad_norm, Some(total));
    let f = 1.0 / (total + 1e-6);
    for (got, g) in values(&store, "a").iter().zip([3.0, 0.0, 4.0, 0.0]) {
        assert!((got + g * f).abs() < 1e-12, "{got}");
    }
    assert_eq!(report.updated, 2);
    assert_eq!(set.steps(), 1);
}

#[test]
fn members_are_checked_when_added() {
    let (store, _) = setup();
    let sgd = |n: &str| Optimizer::from_vars(Sgd::new(0.1), params(&store, n)).unwrap();
    let set = OptimizerSet::new().add("x", sgd("a")).unwrap();
    for (name, e) in [
        ("x", "a new, non-empty name"),
        ("y.z", "without dots"),
        ("steps", "not `steps`"),
    ] {
        let err = OptimizerSet::new()
            .add("x", sgd("b"))
            .unwrap()
            .add(name, sgd("a"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(e), "{name}: {err}");
    }
    let e = set.add("y", sgd("a")).unwrap_err().to_string();
    assert!(e.contains("`y` and `x` both update `a`"), "{e}");
    let lbfgs = LbfgsOptimizer::from_vars(Lbfgs::new(1.0), params(&store, "b")).unwrap();
    let e = OptimizerSet::new().add("q", lbfgs).unwrap_err().to_string();
    assert!(e.contains("re-evaluates the loss"), "{e}");
}

#[test]
fn schedules_drive_one_member_or_all_and_state_saves_under_member_names() {
    let (store, g) = setup();
    let make = || {
        OptimizerSet::new()
            .add(
                "adam",
                Optimizer::from_vars(Adam::new(0.1), params(&store, "a")).unwrap(),
            )
            .unwrap()
            .add(
                "sgd",
                Optimizer::from_vars(Sgd::new(0.01).momentum(0.9), params(&store, "b")).unwrap(),
            )
            .unwrap()
    };
    let mut set = make();
    let groups = set.groups_of("sgd").unwrap();
    assert_eq!(groups, LrGroups::Range { start: 1, end: 2 });
    let mut sched = LrScheduler::for_groups(StepLr::new(1).gamma(0.5), &mut set, groups).unwrap();
    set.step(&g).unwrap();
    sched.step(&mut set).unwrap();
    assert_eq!(set.member("adam").unwrap().lr(), 0.1);
    assert_eq!(set.member("sgd").unwrap().lr(), 0.005);
    // All members: every group.
    let mut all = LrScheduler::new(StepLr::new(1).gamma(0.5), &mut set).unwrap();
    all.step(&mut set).unwrap();
    assert_eq!(
        (set.group_lr(0), set.group_lr(1)),
        (Some(0.05), Some(0.0025))
    );

    let mut sd = StateDict::default();
    set.save_state("opt", &mut sd).unwrap();
    assert!(sd.tensors.contains_key("opt.adam.a.exp_avg"));
    assert!(sd.tensors.contains_key("opt.sgd.b.momentum_buffer"));
    assert_eq!(sd.scalars["opt.steps"], 1.0);
    let mut other = make();
    other.load_state("opt", &sd).unwrap();
    assert_eq!(other.steps(), 1);
    assert_eq!(other.member("sgd").unwrap().lr(), 0.0025);
    // An entry of a member this set does not have is refused, and nothing changes.
    let mut stray = sd.clone();
    stray.set_scalar("opt", "muon.steps", 1.0);
    let mut fresh = make();
    let e = fresh.load_state("opt", &stray).unwrap_err().to_string();
    assert!(e.contains("opt.muon.steps"), "{e}");
    assert_eq!(fresh.steps(), 0);
    // The whole-state form, tagged with the members' algorithms.
    let st = set.state_dict().unwrap();
    assert_eq!(st.optimizer, "OptimizerSet(adam: Adam, sgd: SGD)");
    make().load_state_dict(&st).unwrap();
}
