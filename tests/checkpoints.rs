//! Checkpoints: exact resume, PyTorch-compatible weight files both ways, load reports,
//! crash safety, corrupted files, and the checkpoint manager.

mod common;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use taper::data::{mnist, Batching, DataLoader, TensorDataset};
use taper::nn::{cross_entropy, Activation, BatchNorm, Dropout, Linear, Sequential};
use taper::optim::{Adam, CosineAnnealingLr, LrScheduler, Optimizer};
use taper::prelude::*;
use taper::tensor::LoadMode;
use taper::train::{Checkpoint, CheckpointManager, Direction, TrainState};

use common::{weight_bits, TmpDir};

/// A fresh, existing directory for one test, removed when dropped.
fn tmp(name: &str) -> TmpDir {
    let d = TmpDir::fresh("ckpt", name);
    std::fs::create_dir_all(&*d).unwrap();
    d
}

struct Run {
    store: ParamStore,
    model: Sequential,
    opt: Optimizer<Adam>,
    sched: LrScheduler<CosineAnnealingLr>,
    loader: DataLoader<TensorDataset>,
    state: TrainState,
}

fn new_run(init_seed: u64) -> Run {
    manual_seed(init_seed);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append(taper::nn::Flatten::default())
        .append_with(|s| Linear::new(784, 32, s))
        .unwrap()
        .append(Activation::Relu)
        .append(Dropout::new(0.2).unwrap())
        .append_with(|s| Linear::new(32, 10, s))
        .unwrap();
    let mut opt = Optimizer::new(Adam::new(1e-2), &store).unwrap();
    let sched = LrScheduler::new(CosineAnnealingLr::new(40), &mut opt).unwrap();
    let data = mnist::builtin().unwrap().train.take(200).unwrap();
    let loader = DataLoader::new(data, Batching::MiniBatch(32))
        .unwrap()
        .shuffle(true)
        .seed(5);
    Run {
        state: TrainState::for_loader(&loader),
        store,
        model,
        opt,
        sched,
        loader,
    }
}

/// Trains until `run.state.step == until`, resuming mid-epoch where the state says.
fn advance(run: &mut Run, until: u64) {
    while run.state.step < until {
        for batch in run.state.batches(&run.loader).unwrap() {
            let b = batch.unwrap();
            let logits = run.model.forward_t(&b.inputs, true).unwrap();
            let loss = cross_entropy(&logits, &b.targets).unwrap();
            run.opt
                .step(&Gradients::compute(&loss, &run.store).unwrap())
                .unwrap();
            run.sched.step(&mut run.opt).unwrap();
            run.state.finish_batch();
            if run.state.step == until {
                return;
            }
        }
        run.state.finish_epoch();
    }
}

#[test]
fn resuming_from_a_checkpoint_is_bit_identical() {
    const N: u64 = 20; // 7 batches per epoch: the save falls mid-epoch
    let mut straight = new_run(1);
    advance(&mut straight, N);

    let mut first = new_run(1);
    advance(&mut first, N / 2);
    let ckpt = Checkpoint::capture(&first.store, &first.opt, first.state.clone())
        .unwrap()
        .add_state("lr", &first.sched)
        .unwrap();
    let root = tmp("resume");
    let dir = root.join("ckpt");
    ckpt.save(&dir).unwrap();
    drop(first);

    // Fresh objects, initialized differently: everything must come from the checkpoint.
    let mut second = new_run(777);
    let loaded = Checkpoint::load(&dir).unwrap();
    loaded
        .restore(
            &second.store,
            &mut second.opt,
            &mut [("lr", &mut second.sched)],
        )
        .unwrap();
    second.state = loaded.train.clone();
    assert_eq!(
        (
            second.state.step,
            second.state.epoch,
            second.state.batch_in_epoch
        ),
        (10, 1, 3)
    );
    advance(&mut second, N);
    assert_eq!(weight_bits(&straight.store), weight_bits(&second.store));
    assert_eq!(straight.opt.lr(), second.opt.lr());
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn torch_like_model(store: &ParamStore) -> Sequential {
    Sequential::new(store)
        .append_with(|s| Linear::new(4, 8, s))
        .unwrap()
        .append_with(|s| BatchNorm::new_1d(8, s))
        .unwrap()
        .append(Activation::Relu)
        .append_with(|s| Linear::new(8, 3, s))
        .unwrap()
}

#[test]
fn a_file_saved_by_pytorch_loads_and_gives_pytorchs_logits() {
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("torch_mlp.json")).unwrap()).unwrap();
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = torch_like_model(&store);
    let names: Vec<String> = fx["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        store.names(),
        names,
        "Taper's names are PyTorch's, in PyTorch's order"
    );
    let report = store
        .load(fixture("torch_mlp.safetensors"), LoadMode::Strict)
        .unwrap();
    assert!(report.is_clean());
    let x: Vec<Vec<f32>> = serde_json::from_value(fx["x"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(fx["logits"].clone()).unwrap();
    let got = model
        .forward_t(&Tensor::new(x, &Device::Cpu).unwrap(), false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-5, "{g} vs torch {w}");
    }
    // Loading onto another dtype converts.
    let f64_store = ParamStore::new(&Device::Cpu, DType::F64);
    let _ = torch_like_model(&f64_store);
    f64_store
        .load(fixture("torch_mlp.safetensors"), LoadMode::Strict)
        .unwrap();
    assert_eq!(f64_store.var("0.weight").unwrap().dtype(), DType::F64);
    assert_eq!(
        f64_store
            .var("1.num_batches_tracked")
            .unwrap()
            .as_tensor()
            .to_scalar::<i64>()
            .unwrap(),
        3
    );
}

#[test]
fn python_reads_a_taper_checkpoint_and_recomputes_the_logits() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import safetensors, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        println!("skipped: python3 with safetensors and numpy is not available (pip install safetensors numpy)");
        return;
    }
    manual_seed(3);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append_with(|s| Linear::new(6, 16, s))
        .unwrap()
        .append(Activation::Relu)
        .append_with(|s| Linear::new(16, 4, s))
        .unwrap();
    let dir = tmp("python");
    store.save(dir.join("model.safetensors")).unwrap();
    let x = randn((3, 6), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    std::fs::write(
        dir.join("x.json"),
        serde_json::to_string(&x.to_vec2::<f32>().unwrap()).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mlp_logits.py"))
        .arg(dir.join("model.safetensors"))
        .arg(dir.join("x.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
    let ours = model
        .forward_t(&x, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (a, b) in ours.iter().flatten().zip(py.iter().flatten()) {
        assert!((*a as f64 - b).abs() < 1e-5, "{a} vs numpy {b}");
    }
}

#[test]
fn strict_loading_names_what_does_not_fit_and_lenient_loading_reports_it() {
    let dir = tmp("report");
    let a = ParamStore::new(&Device::Cpu, DType::F32);
    let _ = Sequential::new(&a)
        .append_with(|s| Linear::new(4, 8, s))
        .unwrap()
        .append_with(|s| Linear::new(8, 3, s))
        .unwrap();
    a.parameter("extra", 2, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))
        .unwrap();
    a.save(dir.join("a.safetensors")).unwrap();
    let b = ParamStore::new(&Device::Cpu, DType::F32);
    let _ = Sequential::new(&b)
        .append_with(|s| Linear::new(4, 8, s))
        .unwrap()
        .append_with(|s| Linear::new(8, 5, s))
        .unwrap();
    b.parameter("head", 1, |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))
        .unwrap();
    let before = b
        .var("0.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = b
        .load(dir.join("a.safetensors"), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    for needle in [
        "missing: head",
        "unexpected: extra",
        "`1.weight` has shape [3, 8] in the file, [5, 8] in the model",
        "`1.bias`",
    ] {
        assert!(e.contains(needle), "{e:?} should contain {needle:?}");
    }
    assert_eq!(
        b.var("0.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        before,
        "strict failure changes nothing"
    );
    let report = b
        .load(dir.join("a.safetensors"), LoadMode::Lenient)
        .unwrap();
    assert_eq!(report.missing, ["head"]);
    assert_eq!(report.unexpected, ["extra"]);
    assert_eq!(report.mismatched.len(), 2);
    assert_eq!(
        b.var("0.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        a.var("0.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        "what fits is loaded"
    );
}

fn small_checkpoint(dir: &Path, step: u64) -> (ParamStore, Optimizer<Adam>) {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _ = Sequential::new(&store)
        .append_with(|s| Linear::new(3, 4, s))
        .unwrap();
    let mut opt = Optimizer::new(Adam::new(0.1), &store).unwrap();
    let loss = store
        .var("0.weight")
        .unwrap()
        .as_tensor()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    opt.step(&Gradients::compute(&loss, &store).unwrap())
        .unwrap();
    let mut state = TrainState::new(0);
    state.step = step;
    state.metadata = serde_json::json!({"config": {"lr": 0.1}});
    Checkpoint::capture(&store, &opt, state)
        .unwrap()
        .save(dir)
        .unwrap();
    (store, opt)
}

#[test]
fn a_crash_mid_save_leaves_the_previous_checkpoint_loadable() {
    let root = tmp("crash");
    let good = root.join("ckpt");
    small_checkpoint(&good, 1);
    // A save of the next checkpoint died halfway: its temporary directory holds a
    // truncated weight file and nothing else.
    let partial = root.join(format!(".ckpt.tmp-{}", 424242));
    std::fs::create_dir_all(&partial).unwrap();
    let full = std::fs::read(good.join("model.safetensors")).unwrap();
    std::fs::write(partial.join("model.safetensors"), &full[..full.len() / 2]).unwrap();
    let c = Checkpoint::load(&good).unwrap();
    assert_eq!(c.train.step, 1);
    assert!(Checkpoint::load(&partial).is_err());
    // Likewise a half-written temporary weight file next to a good one.
    std::fs::write(root.join(".model.safetensors.tmp-1"), &full[..10]).unwrap();
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _ = Sequential::new(&store)
        .append_with(|s| Linear::new(3, 4, s))
        .unwrap();
    store
        .load(good.join("model.safetensors"), LoadMode::Strict)
        .unwrap();
    // Overwriting a checkpoint replaces it whole.
    small_checkpoint(&good, 2);
    assert_eq!(Checkpoint::load(&good).unwrap().train.step, 2);
    let stray: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".old-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn corrupted_truncated_and_foreign_checkpoints_are_rejected_clearly() {
    let root = tmp("corrupt");
    let dir = root.join("ckpt");
    small_checkpoint(&dir, 1);
    let json = std::fs::read_to_string(dir.join("trainer.json")).unwrap();
    std::fs::write(
        dir.join("trainer.json"),
        json.replace("taper-checkpoint/2", "taper-checkpoint/9"),
    )
    .unwrap();
    let e = Checkpoint::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("taper-checkpoint/9") && e.contains("not supported"),
        "{e}"
    );
    std::fs::write(dir.join("trainer.json"), "{\"hello\": 1}").unwrap();
    assert!(Checkpoint::load(&dir)
        .unwrap_err()
        .to_string()
        .contains("not a Taper checkpoint"));
    std::fs::write(dir.join("trainer.json"), &json).unwrap();
    // A weight file where the optimizer state should be.
    std::fs::copy(
        dir.join("model.safetensors"),
        dir.join("optimizer.safetensors"),
    )
    .unwrap();
    let e = Checkpoint::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("optimizer.safetensors") && e.contains("does not match its SHA-256"),
        "{e}"
    );
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 7]).unwrap();
    let e = Checkpoint::load(&dir).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn a_thousand_mutated_checkpoints_give_errors_never_panics() {
    let root = tmp("fuzz");
    let good = root.join("good");
    small_checkpoint(&good, 1);
    let files = ["model.safetensors", "optimizer.safetensors", "trainer.json"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(good.join(f)).unwrap())
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let (mut errors, mut loaded) = (0, 0);
    let case = root.join("case");
    std::fs::create_dir_all(&case).unwrap();
    for i in 0..1200 {
        let which = i % 3;
        for (k, f) in files.iter().enumerate() {
            std::fs::write(case.join(f), &originals[k]).unwrap();
        }
        let mut bytes = originals[which].clone();
        match rng.random_range(0..5) {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let p = rng.random_range(0..bytes.len());
                    bytes[p] = rng.random();
                }
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            2 => bytes.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
            3 => {
                // Lie in the safetensors header length (or the JSON's first bytes).
                let v: u64 = rng.random();
                bytes[..8].copy_from_slice(&v.to_le_bytes()[..8]);
            }
            _ => {
                let p = rng.random_range(0..bytes.len().min(200));
                bytes[p] = b"{}[]\",:0x"[rng.random_range(0..9)];
            }
        }
        std::fs::write(case.join(files[which]), &bytes).unwrap();
        let result = std::panic::catch_unwind(|| {
            let store = ParamStore::new(&Device::Cpu, DType::F32);
            let _ = Sequential::new(&store)
                .append_with(|s| Linear::new(3, 4, s))
                .unwrap();
            let mut opt = Optimizer::new(Adam::new(0.1), &store).unwrap();
            Checkpoint::load(&case).and_then(|c| c.restore(&store, &mut opt, &mut []))
        });
        match result {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("mutation {i} of {} panicked", files[which]),
        }
    }
    println!("fuzz: {errors} errors, {loaded} clean loads, 0 panics");
    assert!(
        errors > 500,
        "most mutations are detected: {errors} errors, {loaded} loads"
    );
}

#[test]
fn the_manager_keeps_the_last_k_and_the_best() {
    let root = tmp("manager");
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _ = Sequential::new(&store)
        .append_with(|s| Linear::new(2, 2, s))
        .unwrap();
    let opt = Optimizer::new(Adam::new(0.1), &store).unwrap();
    let mut m = CheckpointManager::new(&root, 2)
        .unwrap()
        .track_best(Direction::Maximize)
        .unwrap();
    for (step, acc) in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.8)] {
        let mut st = TrainState::new(0);
        st.step = step;
        m.save(&Checkpoint::capture(&store, &opt, st).unwrap(), Some(acc))
            .unwrap();
    }
    let names: Vec<String> = m
        .checkpoints()
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["step-0000000003", "step-0000000004"]);
    let best = Checkpoint::load(m.best().unwrap()).unwrap();
    assert_eq!(best.train.step, 2);
    assert_eq!(best.train.metadata["best_metric"], 0.9);
    // A new manager over the same root remembers the best metric.
    let mut again = CheckpointManager::new(&root, 2)
        .unwrap()
        .track_best(Direction::Maximize)
        .unwrap();
    let mut st = TrainState::new(0);
    st.step = 5;
    again
        .save(&Checkpoint::capture(&store, &opt, st).unwrap(), Some(0.85))
        .unwrap();
    assert_eq!(
        Checkpoint::load(again.best().unwrap()).unwrap().train.step,
        2
    );
    assert_eq!(
        again.latest().unwrap().unwrap().file_name().unwrap(),
        "step-0000000005"
    );
    assert!(CheckpointManager::new(&root, 0).is_err());
}

/// A PyTorch model the user wrote (`features`/`classifier` submodules) loads into a Taper
/// struct of the user's own with other names, through a prefix map and a strict check, and
/// gives PyTorch's logits.
#[test]
fn a_pytorch_state_dict_loads_into_a_user_struct_with_other_names() {
    use taper::nn::{BatchNorm, Conv2d, Conv2dConfig, MaxPool2d};
    use taper::tensor::{candle, prefix_map};

    /// The user's port: each layer under its own `store.sub(..)` name.
    struct Net {
        conv1: Conv2d,
        bn1: BatchNorm,
        pool: MaxPool2d,
        conv2: Conv2d,
        fc: Linear,
    }
    impl Net {
        fn new(s: &ParamStore) -> taper::Result<Self> {
            Ok(Net {
                conv1: Conv2dConfig::new(1, 4, (3, 3))
                    .padding(1)
                    .build(&s.sub("conv1"))?,
                bn1: BatchNorm::new_2d(4, &s.sub("bn1"))?,
                pool: MaxPool2d::new(2),
                conv2: Conv2d::new(4, 6, (3, 3), &s.sub("conv2"))?,
                fc: Linear::new(6 * 2 * 2, 3, &s.sub("fc"))?,
            })
        }
    }
    impl ModuleT for Net {
        fn forward_t(&self, x: &Tensor, train: bool) -> candle::Result<Tensor> {
            let h = relu(&self.bn1.forward_t(&self.conv1.forward(x)?, train)?)?;
            let h = relu(&self.conv2.forward(&self.pool.forward(&h)?)?)?;
            self.fc.forward(&h.flatten_from(1)?)
        }
    }
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("torch_user_cnn.json")).unwrap())
            .unwrap();
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let net = Net::new(&store).unwrap();
    let map = prefix_map(&[
        ("features.0", "conv1"),
        ("features.1", "bn1"),
        ("features.4", "conv2"),
        ("classifier", "fc"),
    ]);
    // Without the map nothing fits, and strict loading says which names.
    let e = store
        .load(fixture("torch_user_cnn.safetensors"), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv1.weight") && e.contains("features.0.weight"),
        "{e}"
    );
    let report = store
        .load_renamed(
            fixture("torch_user_cnn.safetensors"),
            &map,
            LoadMode::Strict,
        )
        .unwrap();
    assert!(report.is_clean());
    let x: Vec<Vec<Vec<Vec<f32>>>> = serde_json::from_value(fx["x"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(fx["logits"].clone()).unwrap();
    let got = net
        .forward_t(&Tensor::new(x, &Device::Cpu).unwrap(), false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-5, "{g} vs torch {w}");
    }
    assert_eq!(
        store
            .var("bn1.num_batches_tracked")
            .unwrap()
            .as_tensor()
            .to_scalar::<i64>()
            .unwrap(),
        3
    );
    // A map sending two names to one is refused, naming both.
    let clash = prefix_map(&[("features.0", "fc"), ("classifier", "fc")]);
    let e = store
        .load_renamed(
            fixture("torch_user_cnn.safetensors"),
            &clash,
            LoadMode::Strict,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`classifier.") && e.contains("`features.0.") && e.contains("`fc."),
        "{e}"
    );
}
