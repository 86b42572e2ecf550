//! Sparse row updates against PyTorch: SparseAdam on an `Embedding(sparse)` table
//! (`fixtures/torch_sparse_adam.py` → `fixtures/torch_sparse_adam.json`), the table after
//! every step and the final moments to 1e-5, untouched rows exactly unchanged; any
//! element-wise rule steps rows the way a dense step on those rows would; refusals change
//! nothing.

mod common;

use common::*;
use serde_json::Value;
use taper_nn::{Embedding, EmbeddingConfig};
use taper_optim::*;
use taper_tensor::{DType, Device, Gradients, Module, ParamStore, RowSparse, Tensor};

fn table(fx: &Value) -> (ParamStore, Embedding) {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let w0 = Tensor::from_vec(floats(&fx["w0"]), (10, 3), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let emb = EmbeddingConfig::new(10, 3)
        .sparse(true)
        .build(&store.sub("emb"))
        .unwrap();
    store.var("emb.weight").unwrap().set(&w0).unwrap();
    (store, emb)
}

fn run(fx: &Value, name: &str, rule: SparseAdam) {
    let (store, emb) = table(fx);
    let c = Tensor::from_vec(floats(&fx["c"]), (4, 3), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let mut opt = Optimizer::new(rule, &store).unwrap();
    let case = &fx["cases"][name];
    let mut before = values(store.var("emb.weight").unwrap().as_tensor());
    for (step, (ids, want)) in fx["ids"]
        .as_array()
        .unwrap()
        .iter()
        .zip(case["weights"].as_array().unwrap())
        .enumerate()
    {
        let ids: Vec<u32> = floats(ids).iter().map(|&i| i as u32).collect();
        let x = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap();
        let loss = (emb.forward(&x).unwrap().sin().unwrap() * &c)
            .unwrap()
            .sum_all()
            .unwrap();
        let rows = emb
            .sparse_grad(&Gradients::compute(&loss, &store).unwrap())
            .unwrap();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(rows.rows(), sorted.as_slice());
        opt.step_rows(&[("emb.weight", rows)]).unwrap();
        let got = values(store.var("emb.weight").unwrap().as_tensor());
        let err = rel_err(&got, &floats(want));
        assert!(
            err < 1e-5,
            "{name} step {}: relative error {err:.2e}",
            step + 1
        );
        for r in (0..10u32).filter(|r| !sorted.contains(r)) {
            let row = r as usize * 3..r as usize * 3 + 3;
            assert_eq!(
                got[row.clone()],
                before[row],
                "{name} step {}: row {r} moved",
                step + 1
            );
        }
        before = got;
    }
    let st = opt.state("emb.weight").unwrap();
    for (k, key) in ["exp_avg", "exp_avg_sq"].iter().enumerate() {
        let err = rel_err(&values(&st.tensors[k]), &floats(&case[key]));
        assert!(err < 1e-5, "{name} {key}: {err:.2e}");
    }
    assert_eq!(st.step, 25);
}

#[test]
fn sparse_adam_on_embedding_rows_matches_torch() {
    let fx = fixture("torch_sparse_adam.json");
    run(&fx, "sparse_adam", SparseAdam::new(0.05));
    run(
        &fx,
        "sparse_adam_full",
        SparseAdam::new(0.02)
            .betas(0.8, 0.99)
            .eps(1e-6)
            .maximize(true),
    );
}

/// Any element-wise rule: stepping rows equals a dense step of a table holding only those
/// rows, and the other rows and their state stay as they were.
#[test]
fn row_steps_equal_dense_steps_on_the_present_rows() {
    fn check<R: Rule>(rule: R) {
        let dev = &Device::Cpu;
        let rows = vec![1u32, 4];
        let grad_rows = Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], dev).unwrap();
        let w: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 - 0.3).collect();
        let full = ParamStore::new(dev, DType::F32);
        let wt = Tensor::from_vec(w.clone(), (5, 2), dev).unwrap();
        full.parameter("w", (5, 2), |_, _, _| Ok(wt.clone()))
            .unwrap();
        let mut sparse = Optimizer::new(rule.clone(), &full).unwrap();
        // The same two rows as a dense (2, 2) parameter.
        let small = ParamStore::new(dev, DType::F32);
        let picked = wt
            .index_select(&Tensor::new(rows.as_slice(), dev).unwrap(), 0)
            .unwrap();
        small
            .parameter("w", (2, 2), |_, _, _| Ok(picked.clone()))
            .unwrap();
        let mut dense = Optimizer::new(rule, &small).unwrap();
        for _ in 0..3 {
            let g = RowSparse::new(rows.clone(), grad_rows.clone(), &[5, 2]).unwrap();
            sparse.step_rows(&[("w", g)]).unwrap();
            let mut gd = Gradients::default();
            gd.insert("w", grad_rows.clone());
            dense.step(&gd).unwrap();
        }
        let got = values(full.var("w").unwrap().as_tensor());
        let want = values(small.var("w").unwrap().as_tensor());
        for (k, &r) in rows.iter().enumerate() {
            let r = r as usize;
            assert!(rel_err(&got[r * 2..r * 2 + 2], &want[k * 2..k * 2 + 2]) < 1e-6);
        }
        for r in [0usize, 2, 3] {
            assert_eq!(
                got[r * 2..r * 2 + 2],
                [w[r * 2] as f64, w[r * 2 + 1] as f64]
            );
        }
    }
    check(SparseAdam::new(0.1));
    check(Adam::new(0.1));
    check(Sgd::new(0.1).momentum(0.9));
    check(Asgd::new(0.1).t0(0.0));
}

#[test]
fn row_steps_refuse_what_they_cannot_do_and_change_nothing() {
    let dev = &Device::Cpu;
    let store = ParamStore::new(dev, DType::F32);
    store
        .parameter("w", (4, 2), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    let g = || {
        RowSparse::new(
            vec![1],
            Tensor::ones((1, 2), DType::F32, dev).unwrap(),
            &[4, 2],
        )
        .unwrap()
    };
    let mut lamb = Optimizer::new(Lamb::new(0.1), &store).unwrap();
    let err = lamb.step_rows(&[("w", g())]).unwrap_err();
    assert!(matches!(err, Error::UnsupportedParameter { .. }), "{err}");
    let mut adam = Optimizer::new(Adam::new(0.1), &store).unwrap();
    let err = adam.step_rows(&[("w", g()), ("nope", g())]).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let wrong = RowSparse::new(
        vec![1],
        Tensor::ones((1, 3), DType::F32, dev).unwrap(),
        &[4, 3],
    )
    .unwrap();
    assert!(matches!(
        adam.step_rows(&[("w", wrong)]).unwrap_err(),
        Error::GradientShape { .. }
    ));
    assert!(adam.state("w").is_none(), "nothing was stepped");
    assert_eq!(values(store.var("w").unwrap().as_tensor()), vec![1.0; 8]);
    // An Embedding built without `EmbeddingConfig::sparse(true)` says so.
    let emb = Embedding::new(4, 2, &store.sub("e")).unwrap();
    assert!(emb.sparse_grad(&Gradients::default()).is_err());
}
