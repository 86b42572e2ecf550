//! taper-dist in a world of one rank: the bucket plan, the sharding, and DDP and ZeRO-1
//! giving exactly the plain optimizer's training. Runs everywhere, MPI or not.

mod common;

use candle_core::DType;
use common::{max_diff, train_algo, Res, ALGOS};
use taper_dist::{
    partition, BucketPlan, Communicator, Error, Launcher, SingleProcess, ZeroOptimizer,
};
use taper_optim::Adam;
use taper_tensor::{Device, ParamStore};

fn entries(list: &[(&str, usize, DType)]) -> Vec<(String, Vec<usize>, DType)> {
    list.iter()
        .map(|(n, k, d)| (n.to_string(), vec![*k], *d))
        .collect()
}

#[test]
fn buckets_pack_in_order_split_at_the_cap_and_keep_dtypes_apart() -> Res<()> {
    let params = entries(&[
        ("a", 100, DType::F32),
        ("b", 150, DType::F32),
        ("c", 10, DType::F64),
        ("d", 1000, DType::F32),
        ("e", 5, DType::F32),
        ("f", 20, DType::F64),
    ]);
    let plan = BucketPlan::new(&params, 1024)?; // 256 f32 or 128 f64 per bucket
    let names: Vec<Vec<&str>> = plan
        .buckets
        .iter()
        .map(|b| b.members.iter().map(|m| m.name.as_str()).collect())
        .collect();
    assert_eq!(
        names,
        [vec!["a", "b"], vec!["c", "f"], vec!["d"], vec!["e"]]
    );
    assert_eq!(plan.buckets[0].members[1].offset, 100);
    assert_eq!(plan.buckets[1].dtype, DType::F64);
    assert_eq!(plan.elements(), 1285);
    assert_eq!(plan.bytes(), 1255 * 4 + 30 * 8);
    // One 25 MiB bucket holds all of a small model.
    let plan = BucketPlan::new(&params[..2], taper_dist::DEFAULT_BUCKET_BYTES)?;
    assert_eq!(plan.buckets.len(), 1);
    // Integer parameters cannot be averaged; the error names the parameter.
    let err = BucketPlan::new(&entries(&[("steps", 1, DType::U32)]), 1024).unwrap_err();
    assert!(err.to_string().contains("steps: U32"), "{err}");
    Ok(())
}

#[test]
fn zero_partition_is_balanced_by_size_and_deterministic() {
    let sizes = [784 * 32, 32, 32 * 10, 10];
    assert_eq!(partition(&sizes, 2), [0, 1, 1, 1]);
    assert_eq!(partition(&sizes, 1), [0, 0, 0, 0]);
    // More ranks than parameters: some own nothing.
    assert_eq!(partition(&[5, 5], 3), [0, 1]);
    let sizes = [10, 9, 8, 7, 6, 5];
    let owner = partition(&sizes, 3);
    let load: Vec<usize> = (0..3)
        .map(|r| {
            sizes
                .iter()
                .zip(&owner)
                .filter(|(_, &o)| o == r)
                .map(|(s, _)| s)
                .sum()
        })
        .collect();
    assert_eq!(load, [15, 15, 15]);
}

#[test]
fn one_rank_ddp_and_zero_train_exactly_like_the_plain_optimizer() -> Res<()> {
    for algo in ALGOS {
        let plain = {
            // No DDP: the hand-written loop.
            common::with_rule(algo, |r| -> Res<ParamStore> {
                use candle_core::ModuleT;
                taper_tensor::manual_seed(7);
                let store = ParamStore::new(&Device::Cpu, DType::F32);
                let model = common::model(&store, 32)?;
                let loader = common::loader(0, 1, 64)?;
                macro_rules! run {
                    ($rule:expr) => {{
                        let mut opt = taper_optim::Optimizer::new($rule, &store)?;
                        for b in loader.epoch(0).take(20) {
                            let b = b?;
                            let loss = taper_nn::cross_entropy(
                                &model.forward_t(&b.inputs, true)?,
                                &b.targets,
                            )?;
                            opt.backward_step(&loss)?;
                        }
                    }};
                }
                match r {
                    common::RuleChoice::Sgd(r) => run!(r),
                    common::RuleChoice::Adam(r) => run!(r),
                }
                Ok(store)
            })?
        };
        for zero in [false, true] {
            let run = train_algo(&SingleProcess, algo, zero, 20, 64, 7, None, 0, None)?;
            assert_eq!(max_diff(&plain, &run.store)?, 0.0, "{algo}, zero {zero}");
        }
    }
    Ok(())
}

#[test]
fn zero_state_consolidates_and_loads_back_and_refuses_a_bad_state() -> Res<()> {
    let comm = SingleProcess;
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _model = common::model(&store, 8)?;
    let mut opt = ZeroOptimizer::new(Adam::new(1e-3), &store, &comm)?;
    let x = candle_core::Tensor::ones((2, 1, 28, 28), DType::F32, &Device::Cpu)?;
    let loss = candle_core::ModuleT::forward_t(&_model, &x, true)?
        .sqr()?
        .mean_all()?;
    opt.step(&taper_tensor::Gradients::compute(&loss, &store)?)?;
    let state = opt.consolidated_state()?.expect("rank 0 gets the state");
    assert_eq!(state.tensors.len(), 8); // 4 parameters × (exp_avg, exp_avg_sq)
    let mem = opt.memory()?;
    assert_eq!(mem.local_bytes, mem.unsharded_bytes); // one rank holds everything
    assert_eq!(mem.local_bytes, 2 * 4 * (784 * 8 + 8 + 8 * 10 + 10));

    let mut fresh = ZeroOptimizer::new(Adam::new(1e-3), &store, &comm)?;
    fresh.load_state_dict(&state)?;
    assert_eq!(fresh.local().unwrap().steps(), 1);
    // A state with a wrongly shaped tensor is refused, and nothing changes.
    let mut bad = state.clone();
    let key = bad.tensors.keys().next().unwrap().clone();
    bad.tensors.insert(
        key,
        candle_core::Tensor::zeros(3, DType::F32, &Device::Cpu)?,
    );
    let mut other = ZeroOptimizer::new(Adam::new(1e-3), &store, &comm)?;
    assert!(other.load_state_dict(&bad).is_err());
    assert_eq!(other.local().unwrap().steps(), 0);
    Ok(())
}

#[test]
fn zero_clips_by_the_global_norm_like_the_plain_optimizer() -> Res<()> {
    use taper_optim::{Clip, Optimizer, Sgd};
    use taper_tensor::{Gradients, Norm, Tensor};
    let comm = SingleProcess;
    let make = || -> Res<ParamStore> {
        let store = ParamStore::new(&Device::Cpu, DType::F32);
        store.parameter("a", 2, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
        store.parameter("b", 2, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
        Ok(store)
    };
    let grads = |store: &ParamStore| -> Res<Gradients> {
        let mut g = Gradients::default();
        for (n, v) in store.trainable() {
            g.insert(&n, (v.as_tensor().ones_like()? * 3.0)?);
        }
        Ok(g)
    };
    let clip = Clip::Norm {
        max_norm: 1.0,
        norm: Norm::L2,
    };
    let (s1, s2) = (make()?, make()?);
    let mut plain = Optimizer::new(Sgd::new(0.5), &s1)?.clip(clip)?;
    let mut zero = ZeroOptimizer::new(Sgd::new(0.5), &s2, &comm)?.clip(clip)?;
    plain.step(&grads(&s1)?)?;
    let report = zero.step(&grads(&s2)?)?;
    assert_eq!(report.grad_norm, Some(6.0)); // √(4 × 9), over both parameters
    assert_eq!(common::max_diff(&s1, &s2)?, 0.0);
    Ok(())
}

#[test]
fn schedules_drive_a_sharded_optimizer_as_they_drive_a_plain_one() -> Res<()> {
    use taper_optim::{CosineAnnealingLr, LrScheduler, LrTarget, OneCycleLr, Optimizer, Rule, Sgd};
    use taper_tensor::{Gradients, Tensor};
    let comm = SingleProcess;
    let make = || -> Res<ParamStore> {
        let store = ParamStore::new(&Device::Cpu, DType::F32);
        store.parameter("w", 3, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
        Ok(store)
    };
    let (s1, s2) = (make()?, make()?);
    let rule = Sgd::new(0.1).momentum(0.9);
    let mut plain = Optimizer::new(rule, &s1)?;
    let mut zero = ZeroOptimizer::new(rule, &s2, &comm)?;
    let mut a = LrScheduler::new(CosineAnnealingLr::new(5), &mut plain)?;
    let mut b = LrScheduler::new(CosineAnnealingLr::new(5), &mut zero)?;
    for _ in 0..4 {
        let g = Gradients::compute(&s1.var("w")?.as_tensor().sqr()?.sum_all()?, &s1)?;
        plain.step(&g)?;
        let g = Gradients::compute(&s2.var("w")?.as_tensor().sqr()?.sum_all()?, &s2)?;
        zero.step(&g)?;
        a.step(&mut plain)?;
        b.step(&mut zero)?;
        assert_eq!(plain.lr(), zero.lr());
    }
    assert_eq!(common::max_diff(&s1, &s2)?, 0.0);
    // OneCycle cycles the momentum too; an invalid rate is refused and changes nothing.
    let mut c = LrScheduler::new(OneCycleLr::new(1.0, 10), &mut zero)?;
    c.step(&mut zero)?;
    assert_eq!(
        zero.group_momentum(0),
        zero.local().unwrap().groups()[0]
            .rule
            .momentum_coefficient()
    );
    let before = zero.lr();
    assert!(zero.set_lr(-1.0).is_err());
    assert_eq!(zero.lr(), before);
    assert_eq!(zero.local().unwrap().lr(), before);
    Ok(())
}

#[test]
fn on_root_runs_once_and_agree_passes_errors_through() -> Res<()> {
    let comm = SingleProcess;
    let mut ran = 0;
    let out = comm.on_root("saving", || {
        ran += 1;
        Ok::<_, std::io::Error>(7)
    })?;
    assert_eq!((out, ran), (Some(7), 1));
    let err = comm
        .on_root("saving", || -> taper_dist::Result<()> {
            Err(Error::InvalidValue {
                field: "path",
                value: "/nonexistent".into(),
                expected: "a writable directory",
            })
        })
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent"));
    Ok(())
}

#[test]
fn a_missing_mpirun_is_an_error_naming_it() {
    let err = Launcher::find_in("mpirun", "/nonexistent/bin:/also/not").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`mpirun` was not found") && msg.contains("/also/not"),
        "{msg}"
    );
    assert!(msg.contains("apt-get install openmpi-bin"), "{msg}");
}
