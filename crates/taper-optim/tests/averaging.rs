//! `AveragedModel` (SWA and EMA) against torch.optim.swa_utils (`fixtures/torch_swa.py` →
//! `fixtures/torch_swa.json`): the model is set to the recorded values before each update
//! and every average compared, parameters and buffers (integer ones exactly); the state
//! round-trips and a bad state or a mismatched model changes nothing.

mod common;

use common::{fixture, floats};
use serde_json::Value;
use taper_optim::{AveragedModel, Averaging, Error};
use taper_tensor::{DType, Device, ParamStore, StateDict, Stateful, Tensor};

const SHAPES: [(&str, &[usize]); 4] = [("w", &[3, 4]), ("b", &[5]), ("rm", &[5]), ("count", &[1])];

fn tensor(name: &str, v: &Value) -> Tensor {
    let dims = SHAPES.iter().find(|(n, _)| *n == name).unwrap().1;
    let t = Tensor::from_vec(floats(v), dims, &Device::Cpu).unwrap();
    let dt = if name == "count" {
        DType::I64
    } else {
        DType::F32
    };
    t.to_dtype(dt).unwrap()
}

/// The fixture's module: parameters w and b, buffers rm (float) and count (integer).
fn model(values: &Value) -> ParamStore {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    for (name, _) in SHAPES {
        let t = tensor(name, &values[name]);
        if name == "w" || name == "b" {
            store
                .parameter(name, t.shape(), |_, _, _| Ok(t.clone()))
                .unwrap();
        } else {
            store
                .buffer(name, t.shape(), |_, _, _| Ok(t.clone()))
                .unwrap();
        }
    }
    store
}

fn set(store: &ParamStore, values: &Value) {
    for (name, _) in SHAPES {
        store
            .var(name)
            .unwrap()
            .set(&tensor(name, &values[name]))
            .unwrap();
    }
}

fn values(store: &ParamStore, name: &str) -> Vec<f64> {
    let t = store.var(name).unwrap().as_tensor().clone();
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn averages_match_torch_swa_utils() {
    let fx = fixture("torch_swa.json");
    let m = model(&fx["init"]);
    let mut avgs = [
        ("swa", AveragedModel::swa(&m).unwrap()),
        (
            "swa_buffers",
            AveragedModel::swa(&m).unwrap().use_buffers(true),
        ),
        (
            "ema_buffers",
            AveragedModel::ema(&m, 0.9).unwrap().use_buffers(true),
        ),
    ];
    for (step, rec) in fx["steps"].as_array().unwrap().iter().enumerate() {
        set(&m, &rec["model"]);
        for (key, avg) in &mut avgs {
            avg.update_parameters(&m).unwrap();
            let want = &rec[*key];
            assert_eq!(avg.n_averaged(), want["n_averaged"].as_u64().unwrap());
            for (name, _) in SHAPES {
                let (got, want) = (values(avg.store(), name), floats(&want[name]));
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                    .fold(0.0, f64::max);
                let tol = if name == "count" { 0.0 } else { 1e-6 };
                assert!(
                    err <= tol,
                    "{key} step {} {name}: {got:?} vs {want:?}",
                    step + 1
                );
            }
        }
    }
    // The model's own values were never touched by averaging.
    let last = fx["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(
        values(&m, "b"),
        floats(&last["model"]["b"])
            .iter()
            .map(|x| *x as f32 as f64)
            .collect::<Vec<_>>()
    );
}

#[test]
fn state_round_trips_and_bad_states_change_nothing() {
    let fx = fixture("torch_swa.json");
    let m = model(&fx["init"]);
    let mut ema = AveragedModel::ema(&m, 0.5).unwrap().use_buffers(true);
    for rec in fx["steps"].as_array().unwrap().iter().take(3) {
        set(&m, &rec["model"]);
        ema.update_parameters(&m).unwrap();
    }
    let mut sd = StateDict::default();
    ema.save_state("ema", &mut sd).unwrap();
    assert_eq!(sd.scalars["ema.n_averaged"], 3.0);
    assert!(sd.tensors.contains_key("ema.module.w"));
    let bytes = sd.to_bytes(std::path::Path::new("ema.state")).unwrap();
    let back = StateDict::from_bytes(&bytes, std::path::Path::new("ema.state")).unwrap();

    let mut fresh = AveragedModel::ema(&model(&fx["init"]), 0.5)
        .unwrap()
        .use_buffers(true);
    fresh.load_state("ema", &back).unwrap();
    assert_eq!(fresh.n_averaged(), 3);
    for (name, _) in SHAPES {
        assert_eq!(
            values(fresh.store(), name),
            values(ema.store(), name),
            "{name}"
        );
    }
    // Continuing from the restored state gives what continuing the original gives.
    set(&m, &fx["steps"][3]["model"]);
    ema.update_parameters(&m).unwrap();
    fresh.update_parameters(&m).unwrap();
    assert_eq!(values(fresh.store(), "w"), values(ema.store(), "w"));

    // Invalid states: each is refused, naming the key, and changes nothing.
    let before = values(fresh.store(), "w");
    let mut bad_count = back.clone();
    bad_count.set_scalar("ema", "n_averaged", 2.5);
    let mut nan = back.clone();
    let w = nan.tensors["ema.module.w"].clone();
    nan.set_tensor("ema", "module.w", &(w * f64::NAN).unwrap());
    let mut shape = back.clone();
    shape.set_tensor(
        "ema",
        "module.b",
        &Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    let mut missing = back.clone();
    missing.tensors.remove("ema.module.count");
    for (what, sd, key) in [
        ("fractional counter", bad_count, "ema.n_averaged"),
        ("NaN weight", nan, "ema.module.w"),
        ("wrong shape", shape, "ema.module.b"),
        ("missing buffer", missing, "ema.module.count"),
    ] {
        let err = fresh.load_state("ema", &sd).unwrap_err().to_string();
        assert!(err.contains(key), "{what}: {err}");
        assert_eq!(values(fresh.store(), "w"), before, "{what}");
        assert_eq!(fresh.n_averaged(), 4, "{what}");
    }
}

#[test]
fn a_mismatched_model_or_decay_is_an_error_that_changes_nothing() {
    let fx = fixture("torch_swa.json");
    let m = model(&fx["init"]);
    let mut swa = AveragedModel::swa(&m).unwrap();
    swa.update_parameters(&m).unwrap();
    let before = values(swa.store(), "w");
    let other = ParamStore::new(&Device::Cpu, DType::F32);
    other
        .parameter("w", (3, 4), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    let err = swa.update_parameters(&other).unwrap_err();
    assert!(matches!(err, Error::StateMismatch(_)), "{err}");
    assert!(err.to_string().contains("`b`"), "{err}");
    assert_eq!(
        values(swa.store(), "w"),
        before,
        "w was checked first but must not move"
    );
    assert_eq!(swa.n_averaged(), 1);
    let err = AveragedModel::new(&m, Averaging::Ema { decay: 1.5 }).unwrap_err();
    assert!(err.to_string().contains("decay"), "{err}");
}

/// The averaged weights are a model's: a layer built over `store()` evaluates them, and the
/// store saves and loads like any model's.
#[test]
fn the_average_evaluates_and_saves_like_a_model() {
    use taper_nn::Linear;
    use taper_tensor::{LoadMode, Module};
    let dev = &Device::Cpu;
    let model_store = ParamStore::new(dev, DType::F64);
    let layer = Linear::new(3, 2, &model_store.sub("fc")).unwrap();
    let mut swa = AveragedModel::swa(&model_store).unwrap();
    for k in 0..3 {
        for (name, v) in model_store.trainable() {
            let t = (v.as_tensor().ones_like().unwrap() * (k as f64 + 1.0)).unwrap();
            model_store.var(&name).unwrap().set(&t).unwrap();
        }
        swa.update_parameters(&model_store).unwrap();
    }
    // The mean of 1, 2, 3 everywhere: the averaged layer computes x·2ᵀ + 2.
    let averaged = Linear::new(3, 2, &swa.store().sub("fc")).unwrap();
    let x = Tensor::new(&[[1.0f64, 2.0, 3.0]], dev).unwrap();
    assert_eq!(
        averaged.forward(&x).unwrap().to_vec2::<f64>().unwrap(),
        [[14.0, 14.0]]
    );
    // The training model still holds its last weights.
    assert_eq!(
        layer.forward(&x).unwrap().to_vec2::<f64>().unwrap(),
        [[21.0, 21.0]]
    );
    let dir = std::env::temp_dir().join(format!("taper-swa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("swa.safetensors");
    swa.store().save(&file).unwrap();
    let fresh = ParamStore::new(dev, DType::F64);
    let restored = Linear::new(3, 2, &fresh.sub("fc")).unwrap();
    fresh.load(&file, LoadMode::Strict).unwrap();
    assert_eq!(
        restored.forward(&x).unwrap().to_vec2::<f64>().unwrap(),
        [[14.0, 14.0]]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
