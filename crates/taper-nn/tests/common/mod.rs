//! Shared helpers for taper-nn's tests: the PyTorch fixture and closeness checks.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use taper_tensor::{DType, Device, ParamStore, Tensor, Var};

/// The cases of `fixtures/nn_reference.json`, produced by `fixtures/nn_reference.py`.
pub fn fixture() -> &'static Value {
    use std::sync::OnceLock;
    static FX: OnceLock<Value> = OnceLock::new();
    FX.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nn_reference.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// A tensor from the fixture's {shape, data} encoding, in f64.
pub fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// True when the fixture value is integer data (class targets, ids, counters).
pub fn is_int(v: &Value) -> bool {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x.is_i64() || x.is_u64())
        && !v["data"].as_array().unwrap().is_empty()
}

/// Asserts two tensors agree elementwise within atol + rtol·|b|.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let a: Vec<f64> = a
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = b
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}[{i}]: taper {x} vs torch {y}"
        );
    }
}

/// Inputs of a case: float inputs as variables (f64), integer ones as i64 tensors.
pub type Inputs = BTreeMap<String, Tensor>;

/// A layer's forward pass over a case's inputs, built over a store.
pub type Build =
    dyn FnOnce(&ParamStore) -> anyhow::Result<Box<dyn Fn(&Inputs) -> anyhow::Result<Tensor>>>;

/// Runs a fixture case: builds the layer over a fresh f64 store, loads the case's
/// state_dict into it (the names must match one to one), runs `forward`, and compares the
/// output, the gradients of sum(output·r) and the buffers after the forward with PyTorch's.
pub fn check_case(
    case_name: &str,
    build: impl FnOnce(&ParamStore) -> anyhow::Result<Box<dyn Fn(&Inputs) -> anyhow::Result<Tensor>>>,
) {
    check_case_as(case_name, DType::F64, (1e-10, 1e-8), build);
}

/// [`check_case`] in `dtype` (parameters, float inputs and the weights r), with tolerances
/// (atol, rtol) for that dtype.
pub fn check_case_as(
    case_name: &str,
    dtype: DType,
    (atol, rtol): (f64, f64),
    build: impl FnOnce(&ParamStore) -> anyhow::Result<Box<dyn Fn(&Inputs) -> anyhow::Result<Tensor>>>,
) {
    let case = &fixture()["cases"][case_name];
    assert!(case.is_object(), "no fixture case {case_name}");
    let store = ParamStore::new(&Device::Cpu, dtype);
    let forward = build(&store).unwrap();
    let params = case["params"].as_object().unwrap();
    let mut names: Vec<&String> = params.keys().collect();
    let mut ours = store.names();
    names.sort();
    ours.sort();
    assert_eq!(
        ours.iter().collect::<Vec<_>>(),
        names,
        "{case_name}: state_dict names"
    );
    for (name, v) in params {
        let var = store.var(name).unwrap();
        let t = tensor(v).to_dtype(var.dtype()).unwrap();
        var.set(&t).unwrap();
    }
    let mut inputs = Inputs::new();
    let mut vars = BTreeMap::new();
    for (name, v) in case["inputs"].as_object().unwrap() {
        let t = if is_int(v) {
            tensor(v).to_dtype(DType::I64).unwrap()
        } else {
            let var = Var::from_tensor(&tensor(v).to_dtype(dtype).unwrap()).unwrap();
            vars.insert(name.clone(), var.clone());
            var.as_tensor().clone()
        };
        inputs.insert(name.clone(), t);
    }
    let out = forward(&inputs).unwrap();
    assert_eq!(out.dtype(), dtype, "{case_name}: output dtype");
    assert_close(
        &format!("{case_name} output"),
        &out,
        &tensor(&case["output"]),
        atol,
        rtol,
    );
    let r = tensor(&case["r"]).to_dtype(dtype).unwrap();
    let loss = out.mul(&r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (name, want) in case["grads"].as_object().unwrap() {
        let var = vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| store.var(name).unwrap());
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{case_name}: no gradient for {name}"));
        assert_close(
            &format!("{case_name} grad {name}"),
            got,
            &tensor(want),
            atol,
            rtol,
        );
    }
    if let Some(after) = case["state_after"].as_object() {
        for (name, want) in after {
            let got = store.var(name).unwrap();
            assert_close(
                &format!("{case_name} state {name}"),
                got.as_tensor(),
                &tensor(want),
                atol,
                rtol,
            );
        }
    }
}

/// A store holding `xs[1..]` as the named parameters (sharing the variables), so
/// `gradcheck` can differentiate with respect to a layer's parameters.
pub fn store_with(names: &[&str], xs: &[Tensor]) -> ParamStore {
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    for (name, t) in names.iter().zip(&xs[1..]) {
        let var = Var::from_tensor(t).unwrap();
        store
            .insert_var(
                name,
                var,
                taper_tensor::ParamKind::Parameter { trainable: true },
            )
            .unwrap();
    }
    store
}
