//! Every optimizer and option combination against torch.optim's own trajectories
//! (`fixtures/torch_optim.py` → `fixtures/torch_optim.json`): the recorded gradients are
//! replayed for 25 steps and the parameters compared after every step, to 1e-5 relative
//! (norm-wise: max|taper − torch| / max|torch| per tensor),
//! on both execution paths (fused CPU and generic tensor ops), in float32 as PyTorch ran.

mod common;

use common::*;
use serde_json::Value;
use taper_optim::*;
use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};

/// Replays case `name` through `rule` on both paths. A case with `p2_init` (Muon's matrix
/// cases) starts `p2` from its values and shape.
fn run<R: Rule>(fx: &Value, name: &str, rule: R) {
    let case = &fx["cases"][name];
    assert!(case.is_object(), "no fixture for {name}");
    for path in [UpdatePath::Auto, UpdatePath::Generic] {
        let store = match case["p2_init"].as_object() {
            None => two_params(
                &floats(&fx["init"]["p1"]),
                &floats(&fx["init"]["p2"]),
                DType::F32,
            ),
            Some(p2) => {
                let store = ParamStore::new(&Device::Cpu, DType::F32);
                let shapes: [(&str, &Value, Vec<usize>); 2] = [
                    ("p1", &fx["init"]["p1"], vec![3, 4]),
                    (
                        "p2",
                        &p2["values"],
                        floats(&p2["shape"]).iter().map(|&d| d as usize).collect(),
                    ),
                ];
                for (n, v, dims) in shapes {
                    let t = Tensor::from_vec(floats(v), dims.as_slice(), &Device::Cpu)
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap();
                    store
                        .parameter(n, t.shape(), |_, _, _| Ok(t.clone()))
                        .unwrap();
                }
                store
            }
        };
        let mut opt = optimizer(rule.clone(), &store, path);
        for (step, (g, want)) in case["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["params"].as_array().unwrap())
            .enumerate()
        {
            let mut gs = Gradients::default();
            for p in ["p1", "p2"] {
                let dims = store.var(p).unwrap().dims().to_vec();
                let t = Tensor::from_vec(floats(&g[p]), dims.as_slice(), &Device::Cpu).unwrap();
                gs.insert(p, t.to_dtype(DType::F32).unwrap());
            }
            let report = opt.step(&gs).unwrap();
            assert_eq!(report.updated, 2);
            for p in ["p1", "p2"] {
                let got = values(store.var(p).unwrap().as_tensor());
                let err = rel_err(&got, &floats(&want[p]));
                assert!(
                    err < 1e-5,
                    "{name} ({path:?}) step {} {p}: relative error {err:.2e}",
                    step + 1
                );
            }
            // State torch recorded for this case, as `{param}.{name}` (ASGD's `ax`).
            if let Some(recorded) = case["state"].get(step).and_then(Value::as_object) {
                for (key, want) in recorded {
                    let (p, field) = key.split_once('.').unwrap();
                    let dims = store.var(p).unwrap().dims().to_vec();
                    let slots = rule.slots_for(&dims);
                    let k = slots.iter().position(|s| s.name() == field);
                    let k = k.unwrap_or_else(|| panic!("{name}: no state `{field}`"));
                    let got = values(&opt.state(p).unwrap().tensors[k]);
                    let err = rel_err(&got, &floats(want));
                    assert!(
                        err < 1e-5,
                        "{name} ({path:?}) step {} {key}: relative error {err:.2e}",
                        step + 1
                    );
                }
            }
        }
        assert_eq!(opt.steps(), 25);
    }
}

#[test]
fn sgd_matches_torch() {
    let fx = fixture("torch_optim.json");
    run(&fx, "sgd", Sgd::new(0.1));
    run(
        &fx,
        "sgd_momentum",
        Sgd::new(0.05).momentum(Momentum::Classic {
            momentum: 0.9,
            dampening: 0.0,
        }),
    );
    run(
        &fx,
        "sgd_dampening",
        Sgd::new(0.05).momentum(Momentum::Classic {
            momentum: 0.9,
            dampening: 0.3,
        }),
    );
    run(
        &fx,
        "sgd_nesterov",
        Sgd::new(0.05).momentum(Momentum::Nesterov { momentum: 0.9 }),
    );
    run(
        &fx,
        "sgd_wd_maximize",
        Sgd::new(0.05)
            .momentum(Momentum::Classic {
                momentum: 0.5,
                dampening: 0.0,
            })
            .weight_decay(WeightDecay::L2(0.1))
            .maximize(true),
    );
}

#[test]
fn adagrad_matches_torch() {
    let fx = fixture("torch_optim.json");
    run(&fx, "adagrad", Adagrad::new(0.1));
    run(
        &fx,
        "adagrad_full",
        Adagrad::new(0.1)
            .lr_decay(0.05)
            .initial_accumulator_value(0.2)
            .eps(1e-6)
            .weight_decay(WeightDecay::L2(0.1)),
    );
    run(&fx, "adagrad_maximize", Adagrad::new(0.1).maximize(true));
}

#[test]
fn rmsprop_matches_torch() {
    let fx = fixture("torch_optim.json");
    run(&fx, "rmsprop", RmsProp::new(0.01));
    run(&fx, "rmsprop_centered", RmsProp::new(0.01).centered(true));
    run(&fx, "rmsprop_momentum", RmsProp::new(0.01).momentum(0.9));
    run(
        &fx,
        "rmsprop_full",
        RmsProp::new(0.01)
            .alpha(0.9)
            .eps(1e-6)
            .centered(true)
            .momentum(0.5)
            .weight_decay(WeightDecay::L2(0.1)),
    );
}

#[test]
fn adam_and_adamw_match_torch() {
    let fx = fixture("torch_optim.json");
    run(&fx, "adam", Adam::new(0.01));
    run(&fx, "adam_amsgrad", Adam::new(0.01).amsgrad(true));
    run(
        &fx,
        "adam_wd",
        Adam::new(0.01).weight_decay(WeightDecay::L2(0.1)),
    );
    run(
        &fx,
        "adam_decoupled",
        Adam::new(0.01).weight_decay(WeightDecay::Decoupled(0.1)),
    );
    run(
        &fx,
        "adam_maximize",
        Adam::new(0.01).betas(0.8, 0.99).eps(1e-6).maximize(true),
    );
    run(&fx, "adamw", Adam::adamw(0.01));
    run(
        &fx,
        "adamw_amsgrad",
        Adam::adamw(0.01)
            .weight_decay(WeightDecay::Decoupled(0.05))
            .amsgrad(true),
    );
}

#[test]
fn adamax_nadam_radam_adadelta_match_torch() {
    let fx = fixture("torch_optim.json");
    run(&fx, "adamax", Adamax::new(0.01));
    run(
        &fx,
        "adamax_wd_maximize",
        Adamax::new(0.01)
            .betas(0.8, 0.99)
            .weight_decay(WeightDecay::L2(0.1))
            .maximize(true),
    );
    run(&fx, "nadam", NAdam::new(0.01));
    run(
        &fx,
        "nadam_wd",
        NAdam::new(0.01).weight_decay(WeightDecay::L2(0.1)),
    );
    run(
        &fx,
        "nadam_decoupled",
        NAdam::new(0.01)
            .momentum_decay(0.01)
            .weight_decay(WeightDecay::Decoupled(0.1)),
    );
    run(&fx, "radam", RAdam::new(0.01));
    run(
        &fx,
        "radam_wd",
        RAdam::new(0.01).weight_decay(WeightDecay::L2(0.1)),
    );
    run(
        &fx,
        "radam_decoupled",
        RAdam::new(0.01).weight_decay(WeightDecay::Decoupled(0.1)),
    );
    run(&fx, "adadelta", Adadelta::default());
    run(
        &fx,
        "adadelta_full",
        Adadelta::new(0.5)
            .rho(0.8)
            .eps(1e-5)
            .weight_decay(WeightDecay::L2(0.1))
            .maximize(true),
    );
}

#[test]
fn rprop_matches_torch() {
    let fx = fixture("torch_optim.json");
    run(&fx, "rprop", Rprop::new(0.01));
    run(
        &fx,
        "rprop_full",
        Rprop::new(0.05)
            .etas(0.3, 1.5)
            .step_sizes(1e-3, 0.2)
            .maximize(true),
    );
}

#[test]
fn asgd_matches_torch_with_its_averaged_parameters() {
    let fx = fixture("torch_optim.json");
    run(&fx, "asgd", Asgd::new(0.01));
    run(
        &fx,
        "asgd_full",
        Asgd::new(0.05)
            .lambd(0.01)
            .alpha(0.5)
            .t0(5.0)
            .weight_decay(WeightDecay::L2(0.1))
            .maximize(true),
    );
    assert_eq!(
        fx["cases"]["asgd_full"]["state"].as_array().unwrap().len(),
        25
    );
}

#[test]
fn adafactor_matches_torch_with_its_factored_state() {
    let fx = fixture("torch_optim.json");
    run(&fx, "adafactor", Adafactor::new(0.01));
    run(
        &fx,
        "adafactor_full",
        Adafactor::new(0.05)
            .beta2_decay(-0.6)
            .eps(Some(1e-6), 1e-2)
            .d(1.5)
            .weight_decay(WeightDecay::Decoupled(0.1))
            .maximize(true),
    );
}

#[test]
fn muon_matches_torch() {
    let fx = fixture("torch_optim.json");
    let f32 = |m: Muon| m.ns_precision(NsPrecision::F32);
    run(&fx, "muon_f32", f32(Muon::new(0.02)));
    run(
        &fx,
        "muon_f32_full",
        f32(Muon::new(0.05)
            .weight_decay(WeightDecay::Decoupled(0.05))
            .momentum(0.9)
            .nesterov(false)
            .newton_schulz((3.4445, -4.7750, 2.0315), 3)
            .eps(1e-6)
            .adjust_lr(AdjustLr::MatchRmsAdamW)),
    );
    run(
        &fx,
        "muon_f32_spectral",
        f32(Muon::new(0.01).adjust_lr(AdjustLr::SpectralUnclamped)),
    );
    // PyTorch's default bfloat16 iteration, rounded where PyTorch's bfloat16 addmm rounds.
    run(&fx, "muon_bf16", Muon::new(0.02));
}
