//! Data-parallel training over real MPI processes: `mpirun -np 2` runs this test binary's
//! `worker` test on two ranks, and the tests here check what they wrote.
//!
//! - 2 ranks at batch 32 give the weights of 1 process at batch 64, to 1e-6 after 50 steps,
//!   for SGD (momentum) and Adam, with ZeRO-1 off and on; the ranks are checked
//!   bit-identical after every step (and their final files are compared byte for byte).
//! - Gradient accumulation with `no_sync` averages once per step and matches the large batch
//!   (through the device-tensor bucket path that CUDA models take).
//! - A ZeRO-1 checkpoint written by 2 ranks resumes on 1 process and continues exactly.
//! - A model that differs across ranks is an error on every rank, naming the entry; so is a
//!   checkpoint that rank 0 fails to write.
//! - A rank that dies ends the job with an error instead of a hang.
//!
//! Skips, saying so, without `mpirun` (install `openmpi-bin libopenmpi-dev`).

#![cfg(feature = "mpi")]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{max_diff, train_algo, Res, ALGOS};
use taper_dist::{Communicator, DistributedDataParallel, Launcher, Mpi};
use taper_optim::OptimizerState;
use taper_tensor::{DType, Device, LoadMode, ParamStore};

const SCENARIO: &str = "TAPER_DIST_SCENARIO";
const DIR: &str = "TAPER_DIST_DIR";
const STEPS: usize = 50;
const SAVE_AT: usize = 25;
const ACCUMULATE_STEPS: usize = 20;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("taper-dist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `mpirun -np 2 <this test binary> worker` with `scenario`; `None` (after printing
/// why) when mpirun is missing. Fails the test if the job outlives `limit` (a hang).
fn launch(scenario: &str, dir: &Path, limit: Duration) -> Option<Output> {
    let launcher = match Launcher::mpirun() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipping the MPI test: {e}");
            return None;
        }
    };
    let exe = std::env::current_exe().unwrap();
    let mut cmd = launcher
        .env(SCENARIO, scenario)
        .env(DIR, dir.to_string_lossy())
        .command(2, exe);
    cmd.args([
        "worker",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");
    // Drain the pipes while waiting, so a chatty job cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        out.read_to_end(&mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        err.read_to_end(&mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("mpirun ({scenario}) still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Some(Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    })
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn load(path: &Path) -> Res<ParamStore> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _m = common::model(&store, 32)?;
    store.load(path, LoadMode::Strict)?;
    Ok(store)
}

/// What each rank does, chosen by the launching test.
#[test]
#[ignore = "a rank of the MPI tests: run by them under mpirun"]
fn worker() -> Res<()> {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return Ok(());
    };
    let dir = PathBuf::from(std::env::var(DIR)?);
    let comm = Mpi::init()?;
    let r = comm.rank();
    match scenario.as_str() {
        "equivalence" => {
            for algo in ALGOS {
                for zero in [false, true] {
                    // Each rank starts from its own seed: DDP must broadcast rank 0's model.
                    let run = train_algo(
                        &comm,
                        algo,
                        zero,
                        STEPS,
                        32,
                        100 + r as u64,
                        None,
                        0,
                        Some(SAVE_AT),
                    )?;
                    let tag = format!("{algo}-zero{}", u8::from(zero));
                    run.store
                        .save(dir.join(format!("{tag}-rank{r}.safetensors")))?;
                    if let Some((l, u)) = run.zero_memory {
                        std::fs::write(
                            dir.join(format!("{tag}-memory-rank{r}.txt")),
                            format!("{l} {u}"),
                        )?;
                    }
                    // Rank 0 writes the checkpoint at step 25; the other waits for it.
                    comm.on_root("saving the checkpoint", || {
                        let (model, state) = run.saved.as_ref().expect("rank 0 keeps step 25");
                        let path = dir.join(format!("{tag}-ckpt-model.safetensors"));
                        candle_core::safetensors::save(model, path)?;
                        state.save(dir.join(format!("{tag}-ckpt-opt.safetensors")))?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    })?;
                }
            }
        }
        "accumulate" => {
            // Two micro-batches of 16 per rank and step, averaged across ranks once.
            use candle_core::ModuleT;
            taper_tensor::manual_seed(100);
            let store = ParamStore::new(&Device::Cpu, DType::F32);
            let model = common::model(&store, 32)?;
            // Buckets as tensors: the path CUDA models take, here on the CPU.
            let mut ddp = DistributedDataParallel::new(&comm, &store)?.device_buckets(true);
            let mut opt =
                taper_optim::Optimizer::new(taper_optim::Sgd::new(0.05).momentum(0.9), &store)?;
            let loader = common::loader(r, 2, 16)?;
            let mut batches = loader.epoch(0);
            for _ in 0..ACCUMULATE_STEPS {
                let mut sum: Option<taper_tensor::Gradients> = None;
                for _ in 0..2 {
                    let b = batches.next().expect("enough batches")?;
                    let loss =
                        taper_nn::cross_entropy(&model.forward_t(&b.inputs, true)?, &b.targets)?;
                    let g = ddp.no_sync(|d| d.backward(&loss))?;
                    match &mut sum {
                        Some(s) => s.accumulate(&g)?,
                        None => sum = Some(g),
                    }
                }
                let mut g = sum.expect("two micro-batches");
                g.scale(0.5)?;
                ddp.sync_gradients(&mut g)?;
                opt.step(&g)?;
            }
            ddp.check_in_sync()?;
            store.save(dir.join(format!("accumulate-rank{r}.safetensors")))?;
            std::fs::write(
                dir.join(format!("accumulate-syncs-rank{r}.txt")),
                ddp.stats().syncs.to_string(),
            )?;
        }
        "mismatch" => {
            // Rank 1 builds a wider hidden layer.
            let store = ParamStore::new(&Device::Cpu, DType::F32);
            let _m = common::model(&store, if r == 0 { 32 } else { 33 })?;
            let err = DistributedDataParallel::new(&comm, &store).unwrap_err();
            std::fs::write(dir.join(format!("mismatch-rank{r}.txt")), err.to_string())?;
            // A checkpoint that rank 0 cannot write stops rank 1 too, instead of leaving it
            // to wait at the next collective.
            let err = comm
                .on_root("writing the checkpoint", || {
                    std::fs::write("/nonexistent-dir/ckpt", b"x")
                })
                .unwrap_err();
            std::fs::write(
                dir.join(format!("root-failed-rank{r}.txt")),
                err.to_string(),
            )?;
        }
        "die" => {
            let store = ParamStore::new(&Device::Cpu, DType::F32);
            let _m = common::model(&store, 32)?;
            let mut ddp = DistributedDataParallel::new(&comm, &store)?;
            if r == 1 {
                eprintln!("rank 1 exits before the gradient all-reduce");
                std::process::exit(3);
            }
            // Rank 0 waits in the all-reduce for a rank that is gone.
            let mut g = taper_tensor::Gradients::default();
            ddp.sync_gradients(&mut g)?;
            std::fs::write(dir.join("die-rank0-returned.txt"), "returned")?;
        }
        other => panic!("unknown scenario {other}"),
    }
    Ok(())
}

#[test]
fn two_ranks_at_batch_32_train_like_one_process_at_batch_64_with_and_without_zero() -> Res<()> {
    let dir = scratch("equivalence");
    let Some(out) = launch("equivalence", &dir, Duration::from_secs(600)) else {
        return Ok(());
    };
    assert!(out.status.success(), "{}", text(&out));
    for algo in ALGOS {
        let single = train_algo(
            &taper_dist::SingleProcess,
            algo,
            false,
            STEPS,
            64,
            100,
            None,
            0,
            Some(SAVE_AT),
        )?;
        for zero in [0, 1] {
            let tag = format!("{algo}-zero{zero}");
            let f0 = dir.join(format!("{tag}-rank0.safetensors"));
            let f1 = dir.join(format!("{tag}-rank1.safetensors"));
            assert_eq!(
                std::fs::read(&f0)?,
                std::fs::read(&f1)?,
                "{tag}: ranks differ"
            );
            let d = max_diff(&load(&f0)?, &single.store)?;
            println!("{tag}: max |2 ranks × 32 − 1 process × 64| after {STEPS} steps = {d:.2e}");
            assert!(d <= 1e-6, "{tag}: {d}");

            // The 2-rank checkpoint at step 25 resumes in one unsharded process at batch
            // 64 from batch 25, and ends where the 2-rank run ended.
            let state = OptimizerState::load(dir.join(format!("{tag}-ckpt-opt.safetensors")))?;
            let model = dir.join(format!("{tag}-ckpt-model.safetensors"));
            let resumed = train_algo(
                &taper_dist::SingleProcess,
                algo,
                false,
                STEPS - SAVE_AT,
                64,
                0,
                Some((&model, &state)),
                SAVE_AT,
                None,
            )?;
            let d = max_diff(&load(&f0)?, &resumed.store)?;
            println!(
                "{tag}: resumed on 1 process from the 2-rank step-{SAVE_AT} checkpoint: {d:.2e}"
            );
            assert!(d <= 1e-6, "{tag} resumed: {d}");
        }
    }
    // ZeRO-1 splits the optimizer state without duplicating any: the ranks' shares add up
    // to the unsharded state, and none holds more than half of it plus its largest tensor's
    // (shards are whole parameters, as in PyTorch's ZeroRedundancyOptimizer).
    for tag in ["sgd-zero1", "adam-zero1"] {
        let shares: Vec<(f64, f64)> = (0..2)
            .map(|r| {
                let t =
                    std::fs::read_to_string(dir.join(format!("{tag}-memory-rank{r}.txt"))).unwrap();
                let (l, u) = t.split_once(' ').unwrap();
                println!("ZeRO-1 {tag} rank {r}: {l} of {u} bytes of optimizer state");
                (l.parse().unwrap(), u.parse().unwrap())
            })
            .collect();
        assert_eq!(shares.len(), 2, "{}", text(&out));
        let total = shares[0].1;
        assert!(total > 0.0);
        assert_eq!(shares[0].0 + shares[1].0, total, "{tag}");
        let per_elem = total / (784 * 32 + 32 + 32 * 10 + 10) as f64;
        for (local, _) in &shares {
            assert!(
                *local <= total / 2.0 + per_elem * (784 * 32) as f64,
                "{tag}: {local}"
            );
        }
    }
    Ok(())
}

#[test]
fn no_sync_accumulation_averages_once_per_step_and_matches_the_large_batch() -> Res<()> {
    let dir = scratch("accumulate");
    let Some(out) = launch("accumulate", &dir, Duration::from_secs(300)) else {
        return Ok(());
    };
    assert!(out.status.success(), "{}", text(&out));
    let single = train_algo(
        &taper_dist::SingleProcess,
        "sgd",
        false,
        ACCUMULATE_STEPS,
        64,
        100,
        None,
        0,
        None,
    )?;
    let d = max_diff(
        &load(&dir.join("accumulate-rank0.safetensors"))?,
        &single.store,
    )?;
    println!("2 ranks × 2 micro-batches × 16 with no_sync vs 1 process × 64: {d:.2e}");
    assert!(d <= 1e-6, "{d}");
    for r in 0..2 {
        let syncs = std::fs::read_to_string(dir.join(format!("accumulate-syncs-rank{r}.txt")))?;
        assert_eq!(
            syncs,
            ACCUMULATE_STEPS.to_string(),
            "one all-reduce per step, not per micro-batch"
        );
    }
    Ok(())
}

#[test]
fn a_model_that_differs_across_ranks_is_an_error_on_every_rank() {
    let dir = scratch("mismatch");
    let Some(out) = launch("mismatch", &dir, Duration::from_secs(120)) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out));
    for r in 0..2 {
        let msg = std::fs::read_to_string(dir.join(format!("mismatch-rank{r}.txt"))).unwrap();
        assert!(msg.contains("rank 1"), "{msg}");
        assert!(msg.contains("`1.weight parameter [32, 784] F32`"), "{msg}");
        assert!(msg.contains("[33, 784]"), "{msg}");
    }
    let root = std::fs::read_to_string(dir.join("root-failed-rank0.txt")).unwrap();
    assert!(root.contains("No such file"), "{root}");
    let other = std::fs::read_to_string(dir.join("root-failed-rank1.txt")).unwrap();
    assert_eq!(
        other,
        "rank 0 failed during writing the checkpoint; every rank stops"
    );
}

#[test]
fn a_rank_that_dies_ends_the_job_with_an_error_not_a_hang() {
    let dir = scratch("die");
    let Some(out) = launch("die", &dir, Duration::from_secs(120)) else {
        return;
    };
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!dir.join("die-rank0-returned.txt").exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("what mpirun says when rank 1 dies:\n{stderr}");
    // Rank 1 got as far as its exit, and mpirun said why the job ended.
    assert!(stderr.contains("rank 1 exits before"), "{}", text(&out));
    assert!(
        ["non-zero", "exited", "aborted", "rank 1"]
            .iter()
            .any(|w| stderr.contains(w)),
        "{}",
        text(&out)
    );
}
