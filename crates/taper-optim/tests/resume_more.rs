//! The rules outside the registry (Muon takes matrices; SparseAdam is stepped by rows) save
//! and restore through `OptimizerState` files and resume bit for bit in a fresh optimizer,
//! as the registry's do in `tests/resume_matrix.rs`.

use taper_optim::*;
use taper_tensor::{manual_seed, randn, DType, Device, Gradients, ParamStore, RowSparse, Tensor};

fn store(seed: u64) -> ParamStore {
    manual_seed(seed);
    let s = ParamStore::new(&Device::Cpu, DType::F32);
    s.parameter("a", (6, 4), |sh, dt, d| randn(sh, 0.0, 1.0, dt, d))
        .unwrap();
    s.parameter("b", (3, 5), |sh, dt, d| randn(sh, 0.0, 1.0, dt, d))
        .unwrap();
    s
}

fn copy(from: &ParamStore) -> ParamStore {
    from.to_dtype(DType::F32).unwrap()
}

fn values(s: &ParamStore) -> Vec<Vec<f32>> {
    s.trainable()
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

/// Gradients for step `t`: fixed functions of the step, so both runs see the same.
fn grads(s: &ParamStore, t: u64) -> Gradients {
    let mut g = Gradients::default();
    for (name, v) in s.trainable() {
        let n = v.elem_count();
        let data: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.37 + t as f32) * 1.3).sin())
            .collect();
        g.insert(
            &name,
            Tensor::from_vec(data, v.dims(), &Device::Cpu).unwrap(),
        );
    }
    g
}

fn resume<R: Rule>(rule: R, step: impl Fn(&mut Optimizer<R>, &ParamStore, u64)) {
    let full = store(3);
    let mut a = Optimizer::new(rule.clone(), &full).unwrap();
    for t in 1..=8 {
        step(&mut a, &full, t);
    }
    let half = store(3);
    let mut b = Optimizer::new(rule.clone(), &half).unwrap();
    for t in 1..=4 {
        step(&mut b, &half, t);
    }
    let dir = std::env::temp_dir().join(format!(
        "taper-resume-more-{}-{}",
        R::NAME,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("opt.safetensors");
    b.save(&file).unwrap();
    let resumed = copy(&half);
    let mut c = Optimizer::new(rule, &resumed).unwrap();
    c.load(&file).unwrap();
    for t in 5..=8 {
        step(&mut c, &resumed, t);
    }
    assert_eq!(values(&resumed), values(&full), "{}", R::NAME);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn muon_and_sparse_adam_resume_bit_for_bit() {
    let dense = |o: &mut Optimizer<Muon>, s: &ParamStore, t: u64| {
        o.step(&grads(s, t)).unwrap();
    };
    resume(Muon::new(0.02), dense);
    resume(
        Muon::new(0.02)
            .ns_precision(NsPrecision::F32)
            .nesterov(false),
        dense,
    );
    // SparseAdam by rows: a different subset each step, so rows' moments differ in age.
    resume(SparseAdam::new(0.01), |o, s, t| {
        let g = grads(s, t);
        let rows: Vec<u32> = (0..6).filter(|r| (r + t as u32) % 3 != 0).collect();
        let a = RowSparse::from_dense(g.get("a").unwrap(), &rows).unwrap();
        o.step_rows(&[("a", a)]).unwrap();
    });
}
