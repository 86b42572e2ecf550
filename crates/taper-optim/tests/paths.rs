//! The fused CPU path and the generic tensor path agree to 1e-6 relative, for every
//! algorithm and option, on random data; and the fused path really updates in place.

mod common;

use common::*;
use taper_optim::{Rule, UpdatePath};
use taper_tensor::{manual_seed, randn, DType, Device, Gradients, ParamStore};

fn random_store(dtype: DType) -> ParamStore {
    let store = ParamStore::new(&Device::Cpu, dtype);
    // 100_003 elements: more than one rayon chunk, and not a multiple of it.
    for (name, n) in [("big", 100_003usize), ("small", 7)] {
        store
            .parameter(name, n, |s, dt, d| randn(s, 0.0, 1.0, dt, d))
            .unwrap();
    }
    store
}

fn random_grads(store: &ParamStore) -> Gradients {
    let mut g = Gradients::default();
    for (name, v) in store.trainable() {
        g.insert(
            &name,
            randn(v.shape(), 0.0, 1.0, v.dtype(), v.device()).unwrap(),
        );
    }
    g
}

fn agree<R: Rule>(name: &str, rule: R) {
    for dtype in [DType::F32, DType::F64] {
        manual_seed(42);
        let fused_store = random_store(dtype);
        let generic_store = fused_store.to_dtype(dtype).unwrap();
        let mut fused = optimizer(rule.clone(), &fused_store, UpdatePath::Auto);
        let mut generic = optimizer(rule.clone(), &generic_store, UpdatePath::Generic);
        for step in 1..=8 {
            let g = random_grads(&fused_store);
            // The fused path mutates state tensors in place; the generic path replaces them.
            let before = fused.state("big").and_then(|s| s.tensors.first().cloned());
            fused.step(&g).unwrap();
            generic.step(&g).unwrap();
            // (Only where the fused loop runs: a whole-tensor rule takes tensor ops on both.)
            let in_place = fused.execution()[0].contains("fused CPU loop");
            if let Some(old) = before.filter(|_| in_place) {
                let now = &fused.state("big").unwrap().tensors[0];
                assert_eq!(
                    values(&old),
                    values(now),
                    "{name}: fused state was not updated in place"
                );
            }
            for (p, _) in fused_store.trainable() {
                let a = values(fused_store.var(&p).unwrap().as_tensor());
                let b = values(generic_store.var(&p).unwrap().as_tensor());
                let err = rel_err(&a, &b);
                assert!(
                    err < 1e-6,
                    "{name} {dtype:?} step {step} {p}: fused vs generic {err:.2e}"
                );
                let sa = &fused.state(&p).unwrap().tensors;
                let sb = &generic.state(&p).unwrap().tensors;
                for (k, (x, y)) in sa.iter().zip(sb).enumerate() {
                    let err = rel_err(&values(x), &values(y));
                    if err >= 1e-6 {
                        let (vx, vy, vg) = (values(x), values(y), values(g.get(&p).unwrap()));
                        let pv = values(fused_store.var(&p).unwrap().as_tensor());
                        for i in (0..vx.len())
                            .filter(|&i| (vx[i] - vy[i]).abs() > 1e-4)
                            .take(3)
                        {
                            eprintln!(
                                "i={i} fused {} generic {} g {} p_after {}",
                                vx[i], vy[i], vg[i], pv[i]
                            );
                        }
                    }
                    assert!(
                        err < 1e-6,
                        "{name} {dtype:?} step {step} {p} state {k}: {err:.2e}"
                    );
                }
            }
        }
    }
}

#[test]
fn fused_and_generic_paths_agree_for_every_rule() {
    for_every_rule!(agree);
}
