//! ParamStore: order, naming, prefixes, freezing, buffers, device/dtype copies, VarMap adoption.

use taper_tensor::{candle_nn, DType, Device, Error, ParamKind, ParamStore, Result, Tensor};

fn zeros(s: &taper_tensor::Shape, dt: DType, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::zeros(s, dt, dev)?)
}

fn mlp(store: &ParamStore) -> Result<()> {
    for (i, n) in [(0, (4, 3)), (2, (2, 4))] {
        let l = store.sub("layers").sub(i);
        l.parameter("weight", n, zeros)?;
        l.parameter("bias", n.0, zeros)?;
    }
    store.sub("norm").buffer("running_mean", 2, zeros)?;
    Ok(())
}

#[test]
fn insertion_order_and_dotted_names() -> Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    mlp(&store)?;
    assert_eq!(
        store.names(),
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.2.weight",
            "layers.2.bias",
            "norm.running_mean"
        ]
    );
    let params: Vec<String> = store
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(params.len(), 4);
    assert_eq!(store.buffers()[0].0, "norm.running_mean");
    assert_eq!(store.num_parameters(), 12 + 4 + 8 + 2);
    assert_eq!(store.state_dict().len(), 5);
    // A sub view sees only its entries and names relative lookups.
    let l2 = store.sub("layers.2");
    assert_eq!(l2.names(), ["layers.2.weight", "layers.2.bias"]);
    assert_eq!(l2.var("bias")?.dims(), &[2]);
    assert!(store.sub("layers.0").var("weight").is_ok());
    Ok(())
}

#[test]
fn a_name_belongs_to_one_layer_and_sharing_is_explicit() -> Result<()> {
    // Two layers on the same view used to share `w` silently (PyTorch never shares
    // unless asked): the second creation is now an error that says what to do.
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let a = store.parameter("w", (2, 2), zeros)?;
    for shape in [(2, 2), (3, 2)] {
        let e = store.parameter("w", shape, zeros).unwrap_err();
        assert!(matches!(e, Error::AlreadyTaken { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("`w` (shape [2, 2])")
                && msg.contains("store.sub(")
                && msg.contains("store.shared(\"w\")"),
            "{msg}"
        );
    }
    // Sharing on purpose.
    assert_eq!(store.shared("w")?.id(), a.id());
    assert_eq!(store.len(), 1);
    assert!(matches!(
        store.shared("nope"),
        Err(Error::UnknownName { .. })
    ));
    // A copy's entries are taken over once by the model built over it, shape checked.
    let copy = store.to_device(&Device::Cpu)?;
    let e = copy.parameter("w", (3, 2), zeros).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("`w`") && e.to_string().contains("[3, 2]"),
        "{e}"
    );
    let taken = copy.parameter("w", (2, 2), |_, _, _| panic!("must not re-init"))?;
    assert_eq!(taken.id(), copy.var("w")?.as_tensor().id());
    assert!(matches!(
        copy.parameter("w", (2, 2), zeros),
        Err(Error::AlreadyTaken { .. })
    ));
    // So are variables inserted by hand (a model built around given tensors).
    let given = ParamStore::new(&Device::Cpu, DType::F32);
    let var = taper_tensor::Var::from_tensor(&Tensor::ones((2, 2), DType::F32, &Device::Cpu)?)?;
    given.insert_var("w", var.clone(), ParamKind::Parameter { trainable: true })?;
    assert_eq!(
        given.parameter("w", (2, 2), zeros)?.id(),
        var.as_tensor().id()
    );
    assert!(given.parameter("w", (2, 2), zeros).is_err());
    let e = store.buffer("w", (2, 2), zeros).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Conflict {
                existing: "parameter",
                ..
            }
        ),
        "{e}"
    );
    // init returning the wrong shape is caught.
    let e = store
        .parameter("v", 3, |_, dt, dev| Ok(Tensor::zeros(4, dt, dev)?))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    for bad in ["", "a..b", ".a", "a."] {
        assert!(
            matches!(
                store.parameter(bad, 1, zeros),
                Err(Error::InvalidName { .. })
            ),
            "{bad}"
        );
    }
    let e = store.var("weigth").unwrap_err();
    assert!(e.to_string().contains("weigth"), "{e}");
    Ok(())
}

#[test]
fn freezing_by_name_and_prefix() -> Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    mlp(&store)?;
    assert_eq!(store.freeze("layers.0")?, 2);
    let trainable: Vec<String> = store.trainable().into_iter().map(|(n, _)| n).collect();
    assert_eq!(trainable, ["layers.2.weight", "layers.2.bias"]);
    assert_eq!(store.num_trainable(), 10);
    // Prefixes match at dot boundaries only: `layers.0` does not match `layers.01`.
    store.parameter("layers.01.weight", 1, zeros)?;
    assert_eq!(store.unfreeze("layers.0")?, 2);
    assert_eq!(store.freeze("layers.2.bias")?, 1);
    assert_eq!(
        store.entry("layers.2.bias").unwrap().kind,
        ParamKind::Parameter { trainable: false }
    );
    // Buffers are never trainable, and freezing a buffer-only prefix matches nothing.
    assert!(matches!(
        store.freeze("norm"),
        Err(Error::UnknownName { .. })
    ));
    assert!(matches!(
        store.freeze("nope"),
        Err(Error::UnknownName { .. })
    ));
    Ok(())
}

#[test]
fn copies_to_another_dtype_keep_names_order_and_flags() -> Result<()> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    mlp(&store)?;
    store.freeze("layers.2")?;
    store.buffer("steps", 1, |s, _, dev| {
        Ok(Tensor::zeros(s, DType::I64, dev)?)
    })?;
    let f64s = store.to_dtype(DType::F64)?;
    assert_eq!(f64s.names(), store.names());
    assert_eq!(f64s.dtype(), DType::F64);
    assert_eq!(f64s.var("layers.0.weight")?.dtype(), DType::F64);
    assert_eq!(f64s.var("steps")?.dtype(), DType::I64);
    assert_eq!(f64s.num_trainable(), store.num_trainable());
    // A deep copy: new variables.
    assert_ne!(
        f64s.var("layers.0.bias")?.as_tensor().id(),
        store.var("layers.0.bias")?.as_tensor().id()
    );
    // Same device and dtype: still a copy, not an alias.
    let same = store.to_device(&Device::Cpu)?;
    assert!(same.device().is_cpu());
    let (orig, copy) = (store.var("layers.0.bias")?, same.var("layers.0.bias")?);
    copy.set(&Tensor::ones(4, DType::F32, &Device::Cpu)?)?;
    assert_eq!(
        orig.to_vec1::<f32>()?,
        [0.0; 4],
        "the copy must not share storage"
    );
    assert!(store.summary().contains("frozen"));
    Ok(())
}

#[test]
fn adopts_a_candle_nn_varmap_in_natural_order() -> anyhow::Result<()> {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut layers = Vec::new();
    for i in [10, 2, 0] {
        layers.push(candle_nn::linear(3, 3, vb.pp("layers").pp(i))?);
    }
    let store = ParamStore::from_varmap(&varmap, &Device::Cpu, DType::F32)?;
    assert_eq!(
        store.names(),
        [
            "layers.0.bias",
            "layers.0.weight",
            "layers.2.bias",
            "layers.2.weight",
            "layers.10.bias",
            "layers.10.weight"
        ]
    );
    // The variables are shared: updating through the store changes the candle-nn layer.
    let w = store.var("layers.0.weight")?;
    w.set(&Tensor::ones((3, 3), DType::F32, &Device::Cpu)?)?;
    assert_eq!(layers[2].weight().to_vec2::<f32>()?, vec![vec![1f32; 3]; 3]);
    // Adopting twice is idempotent.
    assert_eq!(store.adopt_varmap(&varmap)?, 6);
    assert_eq!(store.len(), 6);
    Ok(())
}

#[test]
fn natural_order() {
    use std::cmp::Ordering::*;
    assert_eq!(taper_tensor::natural_cmp("a.2", "a.10"), Less);
    assert_eq!(taper_tensor::natural_cmp("a.b", "a.a"), Greater);
    assert_eq!(taper_tensor::natural_cmp("a", "a.0"), Less);
}
