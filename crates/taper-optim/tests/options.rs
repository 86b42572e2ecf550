//! Construction-time validation, parameter groups, non-finite gradients, missing
//! gradients, and candle-nn interop.

use taper_optim::*;
use taper_tensor::{candle_nn, DType, Device, Gradients, Module, ParamStore, Tensor};

fn store() -> ParamStore {
    let s = ParamStore::new(&Device::Cpu, DType::F32);
    s.parameter("fc.weight", (2, 2), |_, _, d| {
        Ok(Tensor::new(&[[1f32, 2.], [3., 4.]], d)?)
    })
    .unwrap();
    s.parameter("fc.bias", 2, |_, _, d| Ok(Tensor::new(&[1f32, 1.], d)?))
        .unwrap();
    s
}

fn ones(s: &ParamStore) -> Gradients {
    let mut g = Gradients::default();
    for (n, v) in s.trainable() {
        g.insert(&n, v.ones_like().unwrap());
    }
    g
}

fn message<R: Rule>(rule: R) -> String {
    Optimizer::new(rule, &store()).unwrap_err().to_string()
}

#[test]
fn invalid_hyperparameters_name_the_field() {
    let cases = [
        (message(Sgd::new(-0.1)), "SGD: invalid value for `lr`: -0.1"),
        (message(Sgd::new(f64::NAN)), "`lr`: NaN"),
        (
            message(Sgd::new(0.1).momentum(Momentum::Nesterov { momentum: 0.0 })),
            "Nesterov momentum requires",
        ),
        (
            message(Sgd::new(0.1).momentum(Momentum::Classic {
                momentum: 0.9,
                dampening: 1.5,
            })),
            "`dampening`",
        ),
        (
            message(Sgd::new(0.1).momentum(Momentum::Ema { beta: 1.0 })),
            "`beta`",
        ),
        (
            message(Adam::new(1e-3).betas(1.0, 0.999)),
            "Adam: invalid value for `beta1`: 1",
        ),
        (message(Adam::new(1e-3).betas(0.9, -0.1)), "`beta2`: -0.1"),
        (message(Adam::new(1e-3).eps(0.0)), "`eps`: 0"),
        (
            message(Adam::new(1e-3).weight_decay(WeightDecay::Decoupled(-1.0))),
            "`weight_decay`: -1",
        ),
        (message(Adagrad::new(0.1).lr_decay(-1.0)), "`lr_decay`"),
        (
            message(RmsProp::new(0.1).alpha(1.0)),
            "RMSprop: invalid value for `alpha`",
        ),
        (message(RmsProp::new(0.1).momentum(-0.5)), "`momentum`"),
        (message(Adadelta::default().rho(1.5)), "`rho`"),
        (
            message(NAdam::new(0.1).momentum_decay(-1.0)),
            "`momentum_decay`",
        ),
        (
            message(Lion::new(0.1).betas(0.9, 1.0)),
            "Lion: invalid value for `beta2`",
        ),
        (
            message(RAdam::new(0.1).betas(-0.1, 0.9)),
            "RAdam: invalid value for `beta1`",
        ),
        (
            message(Adamax::new(0.1).betas(0.9, 2.0)),
            "Adamax: invalid value for `beta2`",
        ),
    ];
    for (got, want) in cases {
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }
    // Run-time changes are validated too, and a bad change is rolled back.
    let mut opt = Optimizer::new(Adam::new(0.01), &store()).unwrap();
    assert!(opt.set_lr(-1.0).is_err());
    assert_eq!(opt.lr(), 0.01);
    assert!(opt
        .update_group(0, |r| r.beta1 = 1.0)
        .unwrap_err()
        .to_string()
        .contains("`beta1`"));
    assert_eq!(opt.groups()[0].rule.beta1, 0.9);
}

#[test]
fn parameter_groups_have_their_own_hyperparameters() {
    let s = store();
    let mut opt = Optimizer::new(Sgd::new(0.1).weight_decay(WeightDecay::L2(0.5)), &s).unwrap();
    assert_eq!(
        opt.add_group("no_decay", |n| n.ends_with("bias"), Sgd::new(0.01))
            .unwrap(),
        1
    );
    assert_eq!(opt.groups()[1].names().collect::<Vec<_>>(), ["fc.bias"]);
    opt.step(&ones(&s)).unwrap();
    // weight: w − 0.1·(1 + 0.5w); bias: b − 0.01·1.
    let w = s
        .var("fc.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(
        w,
        [
            1.0 - 0.1 * 1.5,
            2.0 - 0.1 * 2.0,
            3.0 - 0.1 * 2.5,
            4.0 - 0.1 * 3.0
        ]
    );
    assert_eq!(
        s.var("fc.bias").unwrap().to_vec1::<f32>().unwrap(),
        [0.99, 0.99]
    );
    let e = opt
        .add_group("nothing", |n| n.starts_with("conv"), Sgd::new(0.1))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("`nothing` matches no trainable parameter"),
        "{e}"
    );
    opt.set_lr(0.2).unwrap();
    assert!(opt.groups().iter().all(|g| g.rule.common.lr == 0.2));
}

#[test]
fn non_finite_gradients_can_be_skipped_and_reported() {
    let s = store();
    let mut opt = Optimizer::new(Adam::new(0.1), &s)
        .unwrap()
        .non_finite(NonFiniteGrads::Skip);
    opt.step(&ones(&s)).unwrap();
    let before: Vec<Vec<f32>> = s
        .state_dict()
        .iter()
        .map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let exp_avg = opt.state("fc.bias").unwrap().tensors[0]
        .to_vec1::<f32>()
        .unwrap();
    let mut bad = ones(&s);
    bad.insert(
        "fc.bias",
        Tensor::new(&[f32::NAN, 1.0], &Device::Cpu).unwrap(),
    );
    let report = opt.step(&bad).unwrap();
    assert!(report.skipped);
    assert_eq!(report.non_finite, ["fc.bias"]);
    assert_eq!(report.updated, 0);
    let after: Vec<Vec<f32>> = s
        .state_dict()
        .iter()
        .map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert_eq!(before, after, "parameters untouched");
    assert_eq!(
        opt.state("fc.bias").unwrap().tensors[0]
            .to_vec1::<f32>()
            .unwrap(),
        exp_avg,
        "state untouched"
    );
    assert_eq!(opt.steps(), 1);
    // The default, like torch.optim, applies the step.
    let mut apply = Optimizer::new(Adam::new(0.1), &s).unwrap();
    assert!(!apply.step(&bad).unwrap().skipped);
    assert!(s.var("fc.bias").unwrap().to_vec1::<f32>().unwrap()[0].is_nan());
}

#[test]
fn missing_gradients_are_reported_and_bad_shapes_rejected() {
    let s = store();
    let mut opt = Optimizer::new(Sgd::new(0.1), &s).unwrap();
    let mut g = Gradients::default();
    g.insert(
        "fc.weight",
        Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    let report = opt.step(&g).unwrap();
    assert_eq!(
        (report.updated, report.missing.clone()),
        (1, vec!["fc.bias".to_string()])
    );
    assert!(
        opt.state("fc.bias").is_none(),
        "no gradient, no state, no step"
    );
    g.insert(
        "fc.bias",
        Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = opt.step(&g).unwrap_err().to_string();
    assert!(
        e.contains("`fc.bias`") && e.contains("[3]") && e.contains("[2]"),
        "{e}"
    );
}

#[test]
fn trains_a_candle_nn_model_through_its_varmap() -> anyhow::Result<()> {
    let mut varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = candle_nn::linear(3, 1, vb.pp("fc"))?;
    // candle-nn initializes from its own unseeded generator; start from fixed weights so the
    // trajectory (and this test) does not depend on the draw.
    varmap.set_one(
        "fc.weight",
        Tensor::new(&[[0.3f32, -0.2, 0.1]], &Device::Cpu)?,
    )?;
    varmap.set_one("fc.bias", Tensor::new(&[0.05f32], &Device::Cpu)?)?;
    let store = ParamStore::from_varmap(&varmap, &Device::Cpu, DType::F32)?;
    let mut opt = Optimizer::new(Adam::new(0.05), &store)?;
    let x = Tensor::new(
        &[[1f32, 0., 0.], [0., 1., 0.], [0., 0., 1.], [1., 1., 1.]],
        &Device::Cpu,
    )?;
    let y = Tensor::new(&[[1f32], [2.], [3.], [6.]], &Device::Cpu)?;
    let loss = |m: &candle_nn::Linear| -> anyhow::Result<f32> {
        Ok(m.forward(&x)?.sub(&y)?.sqr()?.mean_all()?.to_scalar()?)
    };
    let first = loss(&model)?;
    for _ in 0..300 {
        let l = model.forward(&x)?.sub(&y)?.sqr()?.mean_all()?;
        opt.backward_step(&l)?;
    }
    let last = loss(&model)?;
    assert!(last < 1e-3 * first, "{first} -> {last}");
    Ok(())
}

/// Values that used to be accepted and then broke training (∞ rates and accumulators, ∞
/// div factors, p-norms below 1, NaN gradient norms, periods that overflow) are refused
/// where they are given, naming the field.
#[test]
fn values_that_would_break_training_later_are_refused_up_front() {
    let cases = [
        (
            message(Adagrad::new(0.1).lr_decay(f64::INFINITY)),
            "`lr_decay`",
        ),
        (
            message(Adagrad::new(0.1).initial_accumulator_value(f64::INFINITY)),
            "`initial_accumulator_value`",
        ),
        (
            message(NAdam::new(0.1).momentum_decay(f64::INFINITY)),
            "`momentum_decay`",
        ),
    ];
    for (msg, needle) in cases {
        assert!(msg.contains(needle), "{msg:?} should mention {needle}");
    }
    for (cfg, field) in [
        (
            OneCycleLr::new(0.1, 10).div_factor(f64::INFINITY),
            "div_factor",
        ),
        (
            OneCycleLr::new(0.1, 10).final_div_factor(f64::INFINITY),
            "final_div_factor",
        ),
        (OneCycleLr::new(0.1, 10).div_factor(1e-310), "div_factor"),
    ] {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    for (cfg, field) in [
        (
            PlateauConfig {
                threshold: f64::INFINITY,
                ..Default::default()
            },
            "threshold",
        ),
        (
            PlateauConfig {
                min_lr: f64::INFINITY,
                ..Default::default()
            },
            "min_lr",
        ),
        (
            PlateauConfig {
                eps: f64::INFINITY,
                ..Default::default()
            },
            "eps",
        ),
    ] {
        let e = ReduceLrOnPlateau::new(cfg).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    assert!(CosineAnnealingWarmRestarts::new(1)
        .eta_min(f64::INFINITY)
        .validate()
        .is_err());
    assert!(GradNormRatio::new(1.0, f64::INFINITY).is_err());

    // A p-norm below 1 is not a norm: refused when clipping is configured.
    for p in [0.5, 0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = Optimizer::new(Sgd::new(0.1), &store())
            .unwrap()
            .clip(Clip::Norm {
                max_norm: 1.0,
                norm: taper_tensor::Norm::P(p),
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("norm_type"), "p = {p}: {e}");
    }
}

/// `CosineAnnealingWarmRestarts` with a huge `T_mult` neither overflows nor loops.
#[test]
fn warm_restarts_with_huge_periods_step_normally() {
    let s = CosineAnnealingWarmRestarts::new(1).t_mult(u64::MAX);
    for t in [0, 1, 2, 1000, u64::MAX - 1, u64::MAX] {
        let lr = s.lr(1.0, t).unwrap();
        assert!((0.0..=1.0).contains(&lr), "t = {t}: {lr}");
    }
    let s = CosineAnnealingWarmRestarts::new(3).t_mult(7);
    assert_eq!(s.lr(1.0, 3).unwrap(), 1.0, "a restart at T_0");
    assert_eq!(s.lr(1.0, 3 + 21).unwrap(), 1.0, "and at T_0 + T_0·T_mult");
}

/// A NaN or infinite gradient norm is an error for the gradient-norm-ratio rate, and
/// changes nothing: the next finite step continues from the last good norm.
#[test]
fn grad_norm_ratio_refuses_non_finite_norms() {
    let mut r = GradNormRatio::new(0.1, 1e-8).unwrap();
    assert_eq!(r.rate(4.0).unwrap(), 0.1);
    assert!(r.rate(f64::NAN).is_err());
    assert!(r.rate(f64::INFINITY).is_err());
    assert_eq!(r.rate(8.0).unwrap(), 0.1 * 8.0 / 4.0);
}

/// A schedule that produces an invalid rate is reported under the schedule's name, and the
/// failed step changes neither the scheduler nor the optimizer.
#[test]
fn a_schedule_giving_a_bad_rate_is_named_and_changes_nothing() {
    let mut opt = Optimizer::new(Sgd::new(0.1), &store()).unwrap();
    let mut s =
        LrScheduler::new(LambdaLr::new(|t| if t < 2 { 1.0 } else { -1.0 }), &mut opt).unwrap();
    s.step(&mut opt).unwrap();
    let e = s.step(&mut opt).unwrap_err().to_string();
    assert!(e.contains("LambdaLR"), "{e}");
    assert_eq!((s.steps(), opt.lr()), (1, 0.1));
}

/// Builders spelled alike across the Adam family, and PyTorch's `momentum=0` as plain SGD.
#[test]
fn consistent_builders() {
    assert_eq!(Adamax::new(1e-3).eps(1e-6).eps, 1e-6);
    assert_eq!(NAdam::new(1e-3).eps(1e-6).eps, 1e-6);
    assert_eq!(RAdam::new(1e-3).eps(1e-6).eps, 1e-6);
    assert_eq!(Adam::new(1e-3).eps(1e-6).eps, 1e-6);
    assert!(message(Adamax::new(1e-3).eps(0.0)).contains("`eps`"));

    let zero = Sgd::new(0.1).momentum(Momentum::Classic {
        momentum: 0.0,
        dampening: 0.0,
    });
    assert_eq!(zero.momentum, Momentum::None);
    let (s1, s2) = (store(), store());
    let mut a = Optimizer::new(zero, &s1).unwrap();
    let mut b = Optimizer::new(Sgd::new(0.1), &s2).unwrap();
    for _ in 0..3 {
        a.step(&ones(&s1)).unwrap();
        b.step(&ones(&s2)).unwrap();
    }
    let w = |s: &ParamStore| {
        s.var("fc.weight")
            .unwrap()
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap()
    };
    assert_eq!(w(&s1), w(&s2));
    assert!(
        a.state_dict().unwrap().tensors.is_empty(),
        "no momentum buffer, as in PyTorch"
    );
}

/// Muon takes matrices only: a vector is refused when the optimizer is built, naming the
/// parameter and what to use instead. Whole-tensor rules say so in `execution`.
#[test]
fn muon_refuses_non_matrices_and_whole_tensor_rules_name_their_path() {
    use taper_tensor::{DType, Device, ParamStore, Tensor};
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store
        .parameter("fc.weight", (4, 3), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    store
        .parameter("fc.bias", 4, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))
        .unwrap();
    let err = Optimizer::new(Muon::new(0.02), &store).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedParameter { name, dims, .. } if name == "fc.bias" && dims == &[4]),
        "{err}"
    );
    assert!(err.to_string().contains("AdamW"), "{err}");

    let matrices: Vec<_> = store
        .trainable()
        .into_iter()
        .filter(|(_, v)| v.rank() == 2)
        .collect();
    let muon = Optimizer::from_vars(Muon::new(0.02), matrices).unwrap();
    assert_eq!(
        muon.execution(),
        ["default: tensor ops: Muon steps whole tensors (1 of 1 parameters)"]
    );
    let adafactor = Optimizer::new(Adafactor::new(0.01), &store).unwrap();
    assert!(adafactor.execution()[0].contains("Adafactor steps whole tensors (2 of 2"));
}

#[test]
fn execution_says_half_precision_parameters_take_tensor_ops() {
    for dt in [DType::F16, DType::BF16] {
        let store = ParamStore::new(&Device::Cpu, dt);
        store
            .parameter("w", 8, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
            .unwrap();
        // lr 0.1: a step of 1e-3 would round back to 1.0 in bfloat16.
        let mut opt = Optimizer::new(Adam::new(0.1), &store).unwrap();
        assert_eq!(
            opt.execution(),
            [format!(
                "default: tensor ops: {dt:?} parameters have no fused path"
            )]
        );
        // And it does step them, on candle ops.
        let mut g = Gradients::default();
        g.insert("w", Tensor::ones(8, dt, &Device::Cpu).unwrap());
        opt.step(&g).unwrap();
        let w = store
            .var("w")
            .unwrap()
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap();
        assert!(w.to_vec1::<f32>().unwrap().iter().all(|&x| x < 1.0));
    }
}
