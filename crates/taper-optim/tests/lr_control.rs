//! The one learning-rate protocol: schedules, ReduceLROnPlateau and the gradient-norm ratio
//! driven through `LrControl` with a `Signal`, on a whole optimizer or one group, with
//! their state saved under the name each owns.

use taper_optim::*;
use taper_tensor::{DType, Device, Gradients, ParamStore, StateDict, Stateful, Tensor};

/// Two groups: `w` (lr 0.1) and `b` (lr 0.01), SGD with momentum 0.9.
fn two_groups() -> Optimizer<Sgd> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store
        .parameter("w", 3, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    store
        .parameter("b", 2, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    let classic = Momentum::Classic {
        momentum: 0.9,
        dampening: 0.0,
    };
    let mut opt = Optimizer::new(Sgd::new(0.1).momentum(classic), &store).unwrap();
    opt.add_group("bias", |n| n == "b", Sgd::new(0.01).momentum(classic))
        .unwrap();
    opt
}

fn lrs(opt: &Optimizer<Sgd>) -> Vec<f64> {
    opt.groups().iter().map(|g| g.rule.common.lr).collect()
}

fn grads(scale: f32) -> Gradients {
    let mut g = Gradients::default();
    g.insert("w", Tensor::new(&[scale; 3], &Device::Cpu).unwrap());
    g.insert("b", Tensor::new(&[scale; 2], &Device::Cpu).unwrap());
    g
}

#[test]
fn the_trait_step_and_the_shorthands_agree_for_every_kind_of_controller() {
    // Schedule: Signal::at(t) sets the rate of step t, as t shorthand steps do.
    let (mut a, mut b) = (two_groups(), two_groups());
    let mut sa = LrScheduler::new(StepLr::new(2).gamma(0.5), &mut a).unwrap();
    let mut sb = LrScheduler::new(StepLr::new(2).gamma(0.5), &mut b).unwrap();
    for t in 1..=5 {
        sa.step(&mut a).unwrap();
        LrControl::step_with(&mut sb, Signal::at(t), &mut b).unwrap();
        assert_eq!(lrs(&a), lrs(&b), "step {t}");
    }
    assert_eq!(lrs(&a), [0.1 * 0.25, 0.01 * 0.25]);
    assert_eq!((sa.steps(), sb.steps()), (5, 5));

    // Plateau: the same metrics give the same reductions.
    let config = PlateauConfig {
        patience: 1,
        ..PlateauConfig::default()
    };
    let (mut a, mut b) = (two_groups(), two_groups());
    let mut pa = ReduceLrOnPlateau::new(config).unwrap();
    let mut pb = ReduceLrOnPlateau::new(config).unwrap();
    for (t, m) in [1.0, 1.0, 1.0, 0.5, 0.5, 0.5].into_iter().enumerate() {
        pa.step(m, &mut a).unwrap();
        LrControl::step_with(&mut pb, Signal::at(t as u64 + 1).metric(m), &mut b).unwrap();
        assert_eq!(lrs(&a), lrs(&b));
    }
    assert_eq!(pa.reductions(), 2);
    assert!((lrs(&a)[0] - 0.001).abs() < 1e-15);

    // Gradient-norm ratio: the same gradients give the same rates.
    let (mut a, mut b) = (two_groups(), two_groups());
    let mut ga = GradNormRatio::new(0.1, 1e-12).unwrap();
    let mut gb = GradNormRatio::new(0.1, 1e-12).unwrap();
    for (t, s) in [1.0f32, 2.0, 0.5].into_iter().enumerate() {
        let g = grads(s);
        let lr = ga.step(&g, &mut a).unwrap();
        LrControl::step_with(&mut gb, Signal::at(t as u64 + 1).grads(&g), &mut b).unwrap();
        assert_eq!(lrs(&a), lrs(&b));
        assert_eq!(lrs(&a), [lr, lr]);
    }
    // η · (0.5²·5)/(2²·5)
    assert!((lrs(&a)[0] - 0.1 * 0.0625).abs() < 1e-12);
}

#[test]
fn a_list_of_boxed_controllers_drives_one_optimizer_and_saves_under_owned_names() {
    let mut opt = two_groups();
    let mut controls: Vec<Box<dyn LrControl>> = vec![
        Box::new(
            LrScheduler::for_groups(ExponentialLr::new(0.5), &mut opt, LrGroups::One(0)).unwrap(),
        ),
        Box::new(
            ReduceLrOnPlateau::new(PlateauConfig {
                patience: 0,
                ..PlateauConfig::default()
            })
            .unwrap()
            .groups(LrGroups::One(1)),
        ),
    ];
    for t in 1..=2 {
        for c in &mut controls {
            let s = match c.drive() {
                LrDrive::Time => Signal::at(t),
                LrDrive::Metric => Signal::at(t).metric(1.0),
                LrDrive::Gradients => unreachable!(),
            };
            c.step_with(s, &mut opt).unwrap();
        }
    }
    // Group 0 followed the schedule only; group 1 the plateau only (1.0 then no change:
    // one reduction by 0.1).
    let got = lrs(&opt);
    assert!((got[0] - 0.025).abs() < 1e-15, "{got:?}");
    assert!((got[1] - 0.001).abs() < 1e-15, "{got:?}");

    let names: Vec<String> = controls.iter().map(|c| c.state_name()).collect();
    assert_eq!(names, ["lr-ExponentialLR", "lr-ReduceLROnPlateau"]);
    let mut saved = StateDict::default();
    for c in &controls {
        c.save_state(&c.state_name(), &mut saved).unwrap();
    }
    assert_eq!(saved.scalar("lr-ExponentialLR", "step").unwrap(), 2.0);
    assert_eq!(
        saved.scalar("lr-ReduceLROnPlateau", "reductions").unwrap(),
        1.0
    );
    let mut fresh = ReduceLrOnPlateau::new(PlateauConfig::default()).unwrap();
    fresh.load_state("lr-ReduceLROnPlateau", &saved).unwrap();
    assert_eq!(fresh.reductions(), 1);
}

#[test]
fn a_missing_signal_or_a_failing_step_names_the_controller_and_changes_nothing() {
    let mut opt = two_groups();
    let mut plateau = ReduceLrOnPlateau::new(PlateauConfig::default()).unwrap();
    let err = LrControl::step_with(&mut plateau, Signal::at(1), &mut opt).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ReduceLROnPlateau: stepped without a metric (Signal::metric)"
    );
    let mut ratio = GradNormRatio::new(0.1, 1e-12).unwrap();
    ratio.step(&grads(1.0), &mut opt).unwrap();
    let mut before = StateDict::default();
    ratio.save_state("r", &mut before).unwrap();
    let lr_before = lrs(&opt);
    let err = LrControl::step_with(&mut ratio, Signal::at(2).metric(1.0), &mut opt).unwrap_err();
    assert!(matches!(
        err,
        Error::MissingSignal {
            controller: "GradNormRatio",
            ..
        }
    ));
    let mut after = StateDict::default();
    ratio.save_state("r", &mut after).unwrap();
    assert_eq!(before.scalars, after.scalars);
    assert_eq!(lrs(&opt), lr_before);

    // OneCycle past its end: the error names the schedule; rates and momentum unchanged.
    let mut cycle = LrScheduler::new(OneCycleLr::new(1.0, 10), &mut opt).unwrap();
    let (lr0, m0) = (lrs(&opt), opt.groups()[0].rule.momentum);
    let err = LrControl::step_with(&mut cycle, Signal::at(11), &mut opt).unwrap_err();
    assert!(err.to_string().starts_with("OneCycleLR"), "{err}");
    assert_eq!(lrs(&opt), lr0);
    assert_eq!(opt.groups()[0].rule.momentum, m0);
    assert_eq!(cycle.steps(), 0);

    // A group that does not exist.
    let err = ReduceLrOnPlateau::new(PlateauConfig::default())
        .unwrap()
        .groups(LrGroups::One(5))
        .step(1.0, &mut opt)
        .unwrap_err();
    assert!(
        err.to_string().contains("#5 (the optimizer has 2 groups)"),
        "{err}"
    );
}

#[test]
fn controllers_drive_an_optimizer_chosen_at_run_time() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store
        .parameter("w", 3, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    let mut opt: Box<dyn AnyOptimizer> = Box::new(Optimizer::new(Adam::new(0.1), &store).unwrap());
    let mut sched = LrScheduler::new(CosineAnnealingLr::new(4), &mut *opt).unwrap();
    for t in 1..=4 {
        LrControl::step_with(&mut sched, Signal::at(t), &mut *opt).unwrap();
    }
    assert!(opt.lr().abs() < 1e-12);
}

/// PyTorch's OneCycleLR and CyclicLR write the momentum into the group: plain SGD and
/// RMSprop gain momentum (Taper kept SGD plain: p = 0.8888 where PyTorch has 0.7952 after
/// two OneCycle steps), and an optimizer with neither momentum nor β₁ is refused.
#[test]
fn cycling_momentum_matches_pytorch_value_or_error() {
    let fx: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_cycle_momentum.json"
    )))
    .unwrap();
    fn run<R: Rule>(rule: R, attach: impl Fn(&mut Optimizer<R>) -> Box<dyn LrControl>) -> Vec<f64> {
        let store = ParamStore::new(&Device::Cpu, DType::F64);
        let p = store
            .parameter("p", 1, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
            .unwrap();
        let mut opt = Optimizer::new(rule, &store).unwrap();
        let mut sched = attach(&mut opt);
        (1..=5)
            .map(|t| {
                let loss = p.sqr().unwrap().sum_all().unwrap();
                opt.step(&Gradients::compute(&loss, &store).unwrap())
                    .unwrap();
                sched.step_with(Signal::at(t), &mut opt).unwrap();
                p.to_vec1::<f64>().unwrap()[0]
            })
            .collect()
    }
    let cases: [(&str, Vec<f64>); 3] = [
        (
            "onecycle_sgd",
            run(Sgd::new(0.1), |o| {
                Box::new(LrScheduler::new(OneCycleLr::new(0.1, 10), o).unwrap())
            }),
        ),
        (
            "onecycle_rmsprop",
            run(RmsProp::new(0.01), |o| {
                Box::new(LrScheduler::new(OneCycleLr::new(0.01, 10), o).unwrap())
            }),
        ),
        (
            "cyclic_sgd",
            run(Sgd::new(0.1), |o| {
                let c = CyclicLr::new(0.01, 0.1).step_size_up(4);
                Box::new(LrScheduler::new(c, o).unwrap())
            }),
        ),
    ];
    for (name, got) in cases {
        let want: Vec<f64> = fx["params"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (t, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-12,
                "{name} step {}: {g} vs PyTorch {w}",
                t + 1
            );
        }
    }
    // Adagrad has neither: refused, with PyTorch's reason, unless cycling is off.
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    store
        .parameter("p", 1, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    let mut opt = Optimizer::new(Adagrad::new(0.1), &store).unwrap();
    let torch_says = fx["errors"]["onecycle_adagrad"].as_str().unwrap();
    assert!(torch_says.contains("must support momentum or beta1"));
    for e in [
        LrScheduler::new(OneCycleLr::new(0.1, 10), &mut opt).unwrap_err(),
        LrScheduler::new(CyclicLr::new(0.01, 0.1), &mut opt).unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains("cycle_momentum") && e.contains("momentum or beta1"),
            "{e}"
        );
    }
    assert_eq!(opt.lr(), 0.1, "a refused scheduler changes nothing");
    LrScheduler::new(OneCycleLr::new(0.1, 10).cycle_momentum(false), &mut opt).unwrap();
    LrScheduler::new(CyclicLr::new(0.01, 0.1).cycle_momentum(false), &mut opt).unwrap();
}
