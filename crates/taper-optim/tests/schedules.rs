//! Learning-rate schedules against torch.optim.lr_scheduler's own values
//! (`fixtures/torch_schedules.py` → `fixtures/torch_schedules.json`, 45 steps each, CyclicLR's
//! three modes and MultiplicativeLR included), the
//! documents' schedules against float64 formulas, ReduceLROnPlateau against torch, and
//! validation, resume and clipping.

mod common;

use common::{fixture, floats};
use serde_json::Value;
use taper_optim::*;
use taper_tensor::{DType, Device, Gradients, Norm, ParamStore, StateDict, Stateful, Tensor};

fn sgd() -> (ParamStore, Optimizer<Sgd>) {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store
        .parameter("w", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))
        .unwrap();
    let rule = Sgd::new(0.1).momentum(Momentum::Classic {
        momentum: 0.9,
        dampening: 0.0,
    });
    let opt = Optimizer::new(rule, &store).unwrap();
    (store, opt)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

fn check<S: Schedule>(fx: &Value, name: &str, schedule: S) {
    let case = &fx["schedules"][name];
    assert!(case.is_object(), "no fixture for {name}");
    let (want_lr, want_m) = (floats(&case["lr"]), floats(&case["momentum"]));
    assert!(want_lr.len() >= 40);
    let (_, mut opt) = sgd();
    let mut sched = LrScheduler::new(schedule, &mut opt).unwrap();
    for t in 0..want_lr.len() {
        if t > 0 {
            sched.step(&mut opt).unwrap();
        }
        assert!(
            close(opt.lr(), want_lr[t]),
            "{name} step {t}: lr {} vs torch {}",
            opt.lr(),
            want_lr[t]
        );
        let m = opt.groups()[0].rule.momentum_coefficient().unwrap();
        assert!(
            close(m, want_m[t]),
            "{name} step {t}: momentum {m} vs torch {}",
            want_m[t]
        );
    }
}

#[test]
fn pytorch_schedules_match_torch() {
    let fx = fixture("torch_schedules.json");
    check(&fx, "step", StepLr::new(7).gamma(0.5));
    check(
        &fx,
        "multistep",
        MultiStepLr::new(vec![30, 5, 12]).gamma(0.3),
    );
    check(&fx, "exponential", ExponentialLr::new(0.93));
    check(
        &fx,
        "constant",
        ConstantLr::new().factor(0.25).total_iters(6),
    );
    check(
        &fx,
        "linear",
        LinearLr::new()
            .start_factor(0.1)
            .end_factor(0.9)
            .total_iters(20),
    );
    check(
        &fx,
        "polynomial",
        PolynomialLr::new().total_iters(30).power(2.0),
    );
    check(&fx, "cosine", CosineAnnealingLr::new(20).eta_min(0.001));
    check(
        &fx,
        "cosine_restarts",
        CosineAnnealingWarmRestarts::new(5).t_mult(2).eta_min(0.002),
    );
    check(
        &fx,
        "cosine_restarts_mult1",
        CosineAnnealingWarmRestarts::new(8),
    );
    check(&fx, "onecycle_cos", OneCycleLr::new(1.0, 45));
    let three = OneCycleLr::new(0.5, 45)
        .pct_start(0.25)
        .anneal_strategy(Anneal::Linear)
        .three_phase(true)
        .div_factor(10.0)
        .final_div_factor(100.0)
        .base_momentum(0.8)
        .max_momentum(0.9);
    check(&fx, "onecycle_linear_3phase", three);
    check(
        &fx,
        "lambda",
        LambdaLr::new(|t| 1.0 / (1.0 + 0.1 * t as f64)),
    );
    check(
        &fx,
        "multiplicative",
        MultiplicativeLr::new(|t| if t % 3 == 0 { 0.8 } else { 0.97 }),
    );
    check(
        &fx,
        "cyclic_triangular",
        CyclicLr::new(0.01, 0.1).step_size_up(5),
    );
    let triangular2 = CyclicLr::new(0.01, 0.1)
        .step_size_up(4)
        .step_size_down(6)
        .mode(CyclicMode::Triangular2);
    check(&fx, "cyclic_triangular2", triangular2);
    let exp_range = CyclicLr::new(0.02, 0.2)
        .step_size_up(7)
        .mode(CyclicMode::ExpRange { gamma: 0.97 })
        .base_momentum(0.85)
        .max_momentum(0.95);
    check(&fx, "cyclic_exp_range", exp_range);
    let no_momentum = CyclicLr::new(0.001, 0.05)
        .step_size_up(3)
        .step_size_down(9)
        .cycle_momentum(false);
    check(&fx, "cyclic_no_momentum", no_momentum);
    check(&fx, "swa_cos", SwaLr::new(0.05));
    check(
        &fx,
        "swa_linear",
        SwaLr::new(0.01)
            .anneal_epochs(5)
            .anneal_strategy(Anneal::Linear),
    );
    check(&fx, "swa_immediate", SwaLr::new(0.02).anneal_epochs(0));
    let cosine = Box::new(CosineAnnealingLr::new(40));
    check(
        &fx,
        "sequential_warmup_cosine",
        SequentialLr::warmup(5, 0.01, cosine),
    );
    let chained = ChainedLr::new(vec![
        Box::new(ConstantLr::new().factor(0.5).total_iters(4)),
        Box::new(ExponentialLr::new(0.95)),
    ]);
    check(&fx, "chained_constant_exponential", chained);
}

#[test]
fn cyclic_and_multiplicative_validate_and_jump() {
    let err = CyclicLr::new(0.1, 0.01)
        .step_size_up(0)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("CyclicLR: invalid value for `step_size_up`"),
        "{err}"
    );
    let bad = CyclicLr::new(0.01, 0.1)
        .step_size_up(5)
        .mode(CyclicMode::ExpRange { gamma: 1.5 });
    assert!(bad.validate().unwrap_err().to_string().contains("gamma"));
    // A pure function of the step: jumping back and forth gives what stepping gives.
    let m = MultiplicativeLr::new(|t| 1.0 - 0.01 * (t % 5) as f64);
    let forward: Vec<f64> = (0..50).map(|t| m.lr(2.0, t).unwrap()).collect();
    for t in [49u64, 3, 27, 0, 27, 28] {
        assert_eq!(m.lr(2.0, t).unwrap(), forward[t as usize]);
    }
    let nan = MultiplicativeLr::new(|t| if t == 4 { f64::NAN } else { 1.0 });
    let err = nan.lr(1.0, 10).unwrap_err().to_string();
    assert!(
        err.contains("MultiplicativeLR") && err.contains("at step 4"),
        "{err}"
    );
}

#[test]
fn documents_schedules_match_their_formulas() {
    let (alpha, beta) = (0.5f64, 0.1f64);
    let inv = InverseTime::new(beta);
    let sqrt = InverseSqrt::new(beta);
    for t in 0..100u64 {
        assert_eq!(inv.lr(alpha, t).unwrap(), alpha / (1.0 + beta * t as f64));
        assert_eq!(
            sqrt.lr(alpha, t).unwrap(),
            alpha / (1.0 + beta * t as f64).sqrt()
        );
    }
    // Applied to an optimizer, step by step.
    let (_, mut opt) = sgd();
    let mut s = LrScheduler::new(InverseTime::new(beta), &mut opt).unwrap();
    for _ in 0..10 {
        s.step(&mut opt).unwrap();
    }
    assert!((opt.lr() - 0.1 / 2.0).abs() < 1e-15);
}

#[test]
fn reduce_on_plateau_matches_torch() {
    let fx = fixture("torch_schedules.json");
    for (name, run) in fx["plateau"].as_object().unwrap() {
        let (metrics, want) = (floats(&run["metrics"]), floats(&run["lr"]));
        let threshold = run["threshold"].as_f64().unwrap();
        let config = match name.as_str() {
            "max_rel" => PlateauConfig {
                mode: PlateauMode::Max,
                factor: 0.1,
                patience: 1,
                threshold,
                cooldown: 0,
                ..Default::default()
            },
            _ => PlateauConfig {
                factor: 0.5,
                patience: 2,
                threshold,
                threshold_mode: if name.ends_with("abs") {
                    ThresholdMode::Abs
                } else {
                    ThresholdMode::Rel
                },
                cooldown: 2,
                min_lr: 0.02,
                ..Default::default()
            },
        };
        let (_, mut opt) = sgd();
        let mut p = ReduceLrOnPlateau::new(config).unwrap();
        for (i, (m, w)) in metrics.iter().zip(&want).enumerate() {
            p.step(*m, &mut opt).unwrap();
            assert!(
                close(opt.lr(), *w),
                "{name} step {i}: lr {} vs torch {w}",
                opt.lr()
            );
        }
        assert!(
            p.reductions() >= 2,
            "{name}: the sequence exercises patience and cooldown"
        );
    }
}

#[test]
fn invalid_schedule_parameters_name_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            StepLr::new(0).validate().unwrap_err().to_string(),
            "StepLR: invalid value for `step_size`: 0",
        ),
        (
            StepLr::new(3)
                .gamma(-1.0)
                .validate()
                .unwrap_err()
                .to_string(),
            "`gamma`",
        ),
        (
            CosineAnnealingLr::new(0)
                .validate()
                .unwrap_err()
                .to_string(),
            "CosineAnnealingLR: invalid value for `T_max`: 0",
        ),
        (
            CosineAnnealingWarmRestarts::new(0)
                .validate()
                .unwrap_err()
                .to_string(),
            "`T_0`",
        ),
        (
            CosineAnnealingWarmRestarts::new(5)
                .t_mult(0)
                .validate()
                .unwrap_err()
                .to_string(),
            "`T_mult`",
        ),
        (
            LinearLr::new()
                .start_factor(0.0)
                .total_iters(5)
                .validate()
                .unwrap_err()
                .to_string(),
            "`start_factor`",
        ),
        (
            ConstantLr::new()
                .factor(1.5)
                .total_iters(5)
                .validate()
                .unwrap_err()
                .to_string(),
            "`factor`",
        ),
        (
            PolynomialLr::new()
                .total_iters(0)
                .validate()
                .unwrap_err()
                .to_string(),
            "`total_iters`",
        ),
        (
            OneCycleLr::new(1.0, 0).validate().unwrap_err().to_string(),
            "`total_steps`",
        ),
        (
            OneCycleLr::new(1.0, 10)
                .pct_start(1.5)
                .validate()
                .unwrap_err()
                .to_string(),
            "`pct_start`",
        ),
        (
            ReduceLrOnPlateau::new(PlateauConfig::default().factor(1.0))
                .unwrap_err()
                .to_string(),
            "ReduceLROnPlateau: invalid value for `factor`: 1",
        ),
        (
            InverseTime::new(-0.1).validate().unwrap_err().to_string(),
            "`beta`",
        ),
        (
            GradNormRatio::new(0.1, 0.0).unwrap_err().to_string(),
            "`eps`",
        ),
        (
            SequentialLr::new(vec![Box::new(StepLr::new(1).gamma(0.5))], vec![3])
                .validate()
                .unwrap_err()
                .to_string(),
            "`milestones`",
        ),
    ];
    for (got, want) in cases {
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }
    // OneCycle refuses to run past total_steps.
    let (_, mut opt) = sgd();
    let mut s = LrScheduler::new(OneCycleLr::new(1.0, 3), &mut opt).unwrap();
    for _ in 0..3 {
        s.step(&mut opt).unwrap();
    }
    let e = s.step(&mut opt).unwrap_err().to_string();
    assert!(
        e.contains("tried to step 4 times; `total_steps` is 3"),
        "{e}"
    );
}

#[test]
fn scheduler_state_resumes_the_same_curve_and_groups_schedule_separately() {
    let dir = std::env::temp_dir().join(format!("taper-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("state.safetensors");
    let cosine = || CosineAnnealingLr::new(20);
    let (_, mut a) = sgd();
    let mut sa = LrScheduler::new(cosine(), &mut a).unwrap();
    let mut straight = Vec::new();
    for _ in 0..15 {
        sa.step(&mut a).unwrap();
        straight.push(a.lr());
    }
    let (_, mut b) = sgd();
    let mut sb = LrScheduler::new(cosine(), &mut b).unwrap();
    for _ in 0..7 {
        sb.step(&mut b).unwrap();
    }
    let sched_file = dir.join("sched.safetensors");
    b.state_dict().unwrap().save(&file).unwrap();
    let mut sd = StateDict::default();
    sb.save_state("main", &mut sd).unwrap();
    sd.save(&sched_file).unwrap();
    let (_, mut c) = sgd();
    let mut sc = LrScheduler::new(cosine(), &mut c).unwrap();
    let loaded = OptimizerState::load(&file).unwrap();
    c.load_state_dict(&loaded).unwrap();
    sc.load_state("main", &StateDict::load(&sched_file).unwrap())
        .unwrap();
    let mut resumed = straight[..7].to_vec();
    for _ in 7..15 {
        sc.step(&mut c).unwrap();
        resumed.push(c.lr());
    }
    assert_eq!(straight, resumed);
    std::fs::remove_dir_all(&dir).ok();

    // A schedule on one group leaves the other alone.
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store
        .parameter("w", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))
        .unwrap();
    store
        .parameter("b", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))
        .unwrap();
    let mut opt = Optimizer::new(Adam::new(0.01), &store).unwrap();
    opt.add_group("b", |n| n == "b", Adam::new(0.5)).unwrap();
    let mut s =
        LrScheduler::for_groups(StepLr::new(1).gamma(0.5), &mut opt, LrGroups::One(1)).unwrap();
    s.step(&mut opt).unwrap();
    assert_eq!(opt.groups()[0].rule.common.lr, 0.01);
    assert_eq!(opt.groups()[1].rule.common.lr, 0.25);
}

#[test]
fn gradient_norm_ratio_rate_follows_the_formula() {
    let (_, mut opt) = sgd();
    let mut r = GradNormRatio::new(0.1, 1e-8).unwrap();
    let mut prev: Option<f64> = None;
    for (i, scale) in [1.0f32, 2.0, 0.5, 0.0, 3.0].iter().enumerate() {
        let mut g = Gradients::default();
        g.insert(
            "w",
            Tensor::new(&[3.0 * scale, 4.0 * scale], &Device::Cpu).unwrap(),
        );
        let lr = r.step(&g, &mut opt).unwrap();
        let sq = (25.0 * (*scale as f64).powi(2)).max(1e-8);
        let want = match prev {
            None => 0.1,
            Some(p) => 0.1 * sq / p,
        };
        assert!(
            (lr - want).abs() <= 1e-12 * want.max(1.0),
            "step {i}: {lr} vs {want}"
        );
        assert_eq!(opt.lr(), lr);
        prev = Some(sq);
    }
}

#[test]
fn clipping_option_matches_clip_grad_norm_and_leaves_user_gradients_alone() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store
        .parameter("w", 2, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))
        .unwrap();
    let mut opt = Optimizer::new(Sgd::new(1.0), &store)
        .unwrap()
        .clip(Clip::Norm {
            max_norm: 1.0,
            norm: Norm::L2,
        })
        .unwrap();
    let mut g = Gradients::default();
    g.insert("w", Tensor::new(&[3f32, 4.], &Device::Cpu).unwrap());
    let report = opt.step(&g).unwrap();
    assert_eq!(report.grad_norm, Some(5.0));
    let w = store.var("w").unwrap().to_vec1::<f32>().unwrap();
    let coef = (1.0 / (5.0 + 1e-6)) as f32;
    assert!(
        (w[0] + 3.0 * coef).abs() < 1e-6 && (w[1] + 4.0 * coef).abs() < 1e-6,
        "{w:?}"
    );
    assert_eq!(g.get("w").unwrap().to_vec1::<f32>().unwrap(), [3.0, 4.0]);
    let mut by_value = Optimizer::new(Sgd::new(1.0), &store)
        .unwrap()
        .clip(Clip::Value(0.5))
        .unwrap();
    by_value.step(&g).unwrap();
    let w2 = store.var("w").unwrap().to_vec1::<f32>().unwrap();
    assert!((w2[0] - (w[0] - 0.5)).abs() < 1e-6 && (w2[1] - (w[1] - 0.5)).abs() < 1e-6);
    assert!(Optimizer::new(Sgd::new(1.0), &store)
        .unwrap()
        .clip(Clip::Value(-1.0))
        .is_err());
}
