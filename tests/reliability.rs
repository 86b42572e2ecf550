//! Reliability: what a kill, a full disk, a damaged file or a bad value can and cannot do.
//!
//! - Checkpoint directories survive SIGKILL at random moments of a save, a `best` swap or
//!   a prune: every listed checkpoint and `best` load, nothing half-written is listed, and
//!   the next manager removes the leftovers.
//! - A save that hits a full disk (a file-size limit in a child process) fails cleanly and
//!   leaves nothing behind.
//! - A failed restore or load changes nothing; checksums catch flipped bits; counters,
//!   scalars and JSON fields read from files are validated; the loader is checked on resume.
//!
//! Crash tests run the test binary itself as the child process (`TAPER_RELIABILITY_CHILD`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use taper::data::{Batching, DataLoader, Dataset, TensorDataset};
use taper::nn::{Linear, Sequential};
use taper::optim::{
    Adam, CosineAnnealingLr, GradNormRatio, LrScheduler, OneCycleLr, Optimizer, PlateauConfig,
    ReduceLrOnPlateau,
};
use taper::prelude::*;
use taper::tensor::{LoadMode, StateDict};
use taper::train::{Checkpoint, CheckpointManager, Direction, EarlyStopping, TrainState};

use common::{weight_bits, TmpDir};

const CHILD: &str = "TAPER_RELIABILITY_CHILD";

fn tmp(name: &str) -> TmpDir {
    let d = TmpDir::fresh("rel", name);
    std::fs::create_dir_all(&*d).unwrap();
    d
}

fn model(width: usize) -> (ParamStore, Optimizer<Adam>) {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _ = Sequential::new(&store)
        .append_with(|s| Linear::new(width, 8, s))
        .unwrap();
    let opt = Optimizer::new(Adam::new(0.01), &store).unwrap();
    (store, opt)
}

fn step_once(store: &ParamStore, opt: &mut Optimizer<Adam>) {
    let loss = store
        .var("0.weight")
        .unwrap()
        .as_tensor()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    opt.step(&Gradients::compute(&loss, store).unwrap())
        .unwrap();
}

fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Runs this test binary's `test` in a child process with `role`, optionally under
/// resource limits set before exec.
fn child(test: &str, role: &str, limits: Option<(u64, bool)>) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((bytes, fsize)) = limits {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                let resource = if fsize {
                    // A write past the limit fails with EFBIG instead of killing the process.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    libc::RLIMIT_FSIZE
                } else {
                    libc::RLIMIT_AS
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// The child's side of the kill test: save checkpoints into the root forever, with a
/// metric that sometimes improves (a `best` swap) and keep_last = 2 (a prune every save).
fn saver(root: &Path) {
    let (store, mut opt) = model(4096);
    let mut m = CheckpointManager::new(root, 2)
        .unwrap()
        .track_best(Direction::Maximize)
        .unwrap();
    let mut step = m
        .latest()
        .unwrap()
        .and_then(|p| Checkpoint::load(p).ok())
        .map_or(0, |c| c.train.step);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(std::process::id() as u64);
    loop {
        step += 1;
        step_once(&store, &mut opt);
        let mut st = TrainState::new(0);
        st.step = step;
        let metric = rng.random::<f64>() + step as f64 * 1e-3;
        m.save(
            &Checkpoint::capture(&store, &opt, st).unwrap(),
            Some(metric),
        )
        .unwrap();
    }
}

#[test]
fn checkpoint_directories_survive_sigkill_at_any_moment() {
    if let Ok(role) = std::env::var(CHILD) {
        if let Some(root) = role.strip_prefix("saver:") {
            saver(Path::new(root));
        }
        return;
    }
    let root = tmp("kills");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut best_seen = false;
    let mut interrupted = 0;
    let rounds = 40;
    for round in 0..rounds {
        let mut proc = child(
            "checkpoint_directories_survive_sigkill_at_any_moment",
            &format!("saver:{}", root.display()),
            None,
        )
        .spawn()
        .unwrap();
        // Let it start and save a few, then kill it somewhere inside a save.
        std::thread::sleep(Duration::from_millis(rng.random_range(40..160)));
        proc.kill().unwrap(); // SIGKILL
        let status = proc.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the saver stopped on its own"
        );

        let leftovers = hidden_entries(&root);
        if !leftovers.is_empty() {
            interrupted += 1;
        }
        // What a restarted run sees: a manager removes the leftovers, every listed
        // checkpoint and `best` load, and `best` never disappears once it existed.
        let m = CheckpointManager::new(&root, 2)
            .unwrap()
            .track_best(Direction::Maximize)
            .unwrap();
        assert!(
            hidden_entries(&root).is_empty(),
            "round {round}: leftovers {:?}",
            hidden_entries(&root)
        );
        for p in m.checkpoints().unwrap() {
            Checkpoint::load(&p).unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        match m.best() {
            Some(b) => {
                let c = Checkpoint::load(&b).unwrap();
                assert!(c.train.metadata["best_metric"].as_f64().is_some());
                best_seen = true;
            }
            None => assert!(!best_seen, "round {round}: `best` was lost"),
        }
    }
    assert!(best_seen, "no round got as far as a best checkpoint");
    println!("{interrupted} of {rounds} kills left a save, swap or prune half-done; all recovered");
    assert!(
        interrupted > 0,
        "no kill landed inside a save: the test proves nothing"
    );
}

/// The child's side of the full-disk test: a save that cannot be written must fail, and a
/// file written atomically likewise.
fn full_disk_saver(root: &Path) {
    let (store, mut opt) = model(4096); // 128 KiB of weights: over the 64 KiB limit
    step_once(&store, &mut opt);
    let mut st = TrainState::new(0);
    st.step = 2;
    let ckpt = Checkpoint::capture(&store, &opt, st).unwrap();
    let e = ckpt.save(root.join("step-0000000002")).unwrap_err();
    println!("save failed as expected: {e}");
    // Replacing the existing checkpoint fails the same way and leaves the old one.
    let e = ckpt.save(root.join("step-0000000001")).unwrap_err();
    println!("overwrite failed as expected: {e}");
    let e = taper::tensor::write_atomic(root.join("big.bin"), &vec![7u8; 1 << 20]).unwrap_err();
    println!("write_atomic failed as expected: {e}");
    let e =
        taper::data::idx::write_idx_u8(root.join("x-idx1-ubyte"), &[1 << 20], &vec![1; 1 << 20])
            .unwrap_err();
    println!("write_idx_u8 failed as expected: {e}");
    println!("CHILD-OK");
}

#[test]
fn a_save_that_hits_a_full_disk_fails_and_leaves_nothing_behind() {
    if let Ok(role) = std::env::var(CHILD) {
        if let Some(root) = role.strip_prefix("full:") {
            full_disk_saver(Path::new(root));
        }
        return;
    }
    let root = tmp("full");
    let (store, opt) = model(4);
    let mut st = TrainState::new(0);
    st.step = 1;
    Checkpoint::capture(&store, &opt, st)
        .unwrap()
        .save(root.join("step-0000000001"))
        .unwrap();
    let before = weight_bits(&store);
    let out = child(
        "a_save_that_hits_a_full_disk_fails_and_leaves_nothing_behind",
        &format!("full:{}", root.display()),
        Some((64 << 10, true)),
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hidden_entries(&root).is_empty(),
        "{:?}",
        hidden_entries(&root)
    );
    let mut names: Vec<String> = std::fs::read_dir(&*root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["step-0000000001"]);
    let (store2, mut opt2) = model(4);
    Checkpoint::load(root.join("step-0000000001"))
        .unwrap()
        .restore(&store2, &mut opt2, &mut [])
        .unwrap();
    assert_eq!(weight_bits(&store2), before);
}

/// A swap on a file system without atomic exchange moves `best` aside first; if the process
/// dies right then, the next manager moves it back instead of deleting it.
#[test]
fn a_best_moved_aside_by_a_killed_swap_is_restored() {
    let root = tmp("aside");
    let (store, opt) = model(4);
    let mut m = CheckpointManager::new(&root, 1)
        .unwrap()
        .track_best(Direction::Minimize)
        .unwrap();
    let mut st = TrainState::new(0);
    st.step = 3;
    m.save(&Checkpoint::capture(&store, &opt, st).unwrap(), Some(0.25))
        .unwrap();
    // A process that has exited: its pid is free.
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    std::fs::rename(root.join("best"), root.join(format!(".best.old-{pid}"))).unwrap();
    std::fs::create_dir(root.join(format!(".best.tmp-{pid}"))).unwrap();
    std::fs::create_dir(root.join(format!(".step-0000000001.del-{pid}"))).unwrap();
    // A running process's temporaries are left alone.
    let mine = root.join(format!(".step-0000000009.tmp-{}", std::process::id()));
    std::fs::create_dir(&mine).unwrap();
    let m = CheckpointManager::new(&root, 1)
        .unwrap()
        .track_best(Direction::Minimize)
        .unwrap();
    let best = Checkpoint::load(m.best().unwrap()).unwrap();
    assert_eq!(best.train.metadata["best_metric"], 0.25);
    assert_eq!(
        hidden_entries(&root),
        [mine.file_name().unwrap().to_string_lossy()]
    );
}

#[test]
fn a_failed_restore_changes_nothing() {
    let root = tmp("atomic");
    let (store, mut opt) = model(4);
    let mut sched = LrScheduler::new(CosineAnnealingLr::new(10), &mut opt).unwrap();
    step_once(&store, &mut opt);
    sched.step(&mut opt).unwrap();
    let ckpt = Checkpoint::capture(&store, &opt, TrainState::new(0))
        .unwrap()
        .add_state("sched", &sched)
        .unwrap();

    // A fresh run whose own state must survive every failed restore.
    let (store2, mut opt2) = model(4);
    step_once(&store2, &mut opt2);
    step_once(&store2, &mut opt2);
    let (w, steps, lr) = (weight_bits(&store2), opt2.steps(), opt2.lr());
    let check_untouched = |opt2: &Optimizer<Adam>, what: &str| {
        assert_eq!(weight_bits(&store2), w, "{what}: weights changed");
        assert_eq!(
            (opt2.steps(), opt2.lr()),
            (steps, lr),
            "{what}: optimizer changed"
        );
    };

    // The weights fit, the optimizer state does not.
    let mut bad = ckpt.clone();
    bad.optimizer.scalars.insert("steps".into(), -1.0);
    assert!(bad
        .restore(&store2, &mut opt2, &mut [("sched", &mut sched)])
        .is_err());
    check_untouched(&opt2, "bad optimizer state");
    // Both fit, a piece's state does not.
    let mut bad = ckpt.clone();
    bad.states.scalars.insert("sched.step".into(), 2.5);
    let e = bad
        .restore(&store2, &mut opt2, &mut [("sched", &mut sched)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("sched.step"), "{e}");
    check_untouched(&opt2, "bad scheduler state");
    // A piece the checkpoint has state for was not passed: that would silently drop it.
    let e = ckpt
        .restore(&store2, &mut opt2, &mut [])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`sched`"), "{e}");
    check_untouched(&opt2, "forgotten piece");
    // A weight relabelled as integer is not converted into garbage.
    let mut bad = ckpt.clone();
    let t = bad.weights["0.bias"].to_dtype(DType::I64).unwrap();
    bad.weights.insert("0.bias".into(), t);
    let e = bad
        .restore(&store2, &mut opt2, &mut [("sched", &mut sched)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("0.bias") && e.contains("I64"), "{e}");
    check_untouched(&opt2, "integer weight");
    // Everything fits: restored.
    ckpt.restore(&store2, &mut opt2, &mut [("sched", &mut sched)])
        .unwrap();
    assert_eq!(weight_bits(&store2), weight_bits(&store));

    // Strict and lenient loads of a file: a failure changes nothing either.
    let file = root.join("w.safetensors");
    store.save(&file).unwrap();
    let (store3, _) = model(4);
    let before = weight_bits(&store3);
    let (mut tensors, _) = taper::tensor::read_safetensors(&file).unwrap();
    tensors.insert(
        "0.weight".into(),
        tensors["0.weight"].to_dtype(DType::U32).unwrap(),
    );
    let e = store3
        .load_state_dict(&tensors, LoadMode::Strict)
        .unwrap_err();
    assert!(e.to_string().contains("U32"), "{e}");
    assert_eq!(weight_bits(&store3), before);
    let report = store3.load_state_dict(&tensors, LoadMode::Lenient).unwrap();
    assert_eq!(report.wrong_dtype.len(), 1);
}

#[test]
fn a_flipped_bit_in_any_checkpoint_file_is_an_error() {
    let root = tmp("bits");
    let (store, mut opt) = model(4);
    step_once(&store, &mut opt);
    let es = EarlyStopping::new(2, 0.0, Direction::Minimize, true).unwrap();
    let dir = root.join("c");
    Checkpoint::capture(&store, &opt, TrainState::new(0))
        .unwrap()
        .add_state("early", &es)
        .unwrap()
        .save(&dir)
        .unwrap();
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.safetensors",
        "trainer.json",
    ] {
        let good = std::fs::read(dir.join(file)).unwrap();
        // The last byte: tensor data in the weight files, a digit or brace in the JSON.
        for pos in [good.len() - 1, good.len() / 2] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            std::fs::write(dir.join(file), &bad).unwrap();
            let e = Checkpoint::load(&dir).unwrap_err().to_string();
            assert!(
                e.contains(file) || e.contains("trainer.json"),
                "{file}@{pos}: {e}"
            );
        }
        std::fs::write(dir.join(file), &good).unwrap();
    }
    Checkpoint::load(&dir).unwrap();
}

/// `trainer.json` values that parse as JSON but are not a valid state are errors naming
/// the field (the checksum is recomputed so that the validation is what is tested).
#[test]
fn trainer_json_fields_are_validated() {
    let root = tmp("json");
    let (store, opt) = model(4);
    let dir = root.join("c");
    let mut st = TrainState::new(0);
    st.batches_per_epoch = Some(7);
    Checkpoint::capture(&store, &opt, st)
        .unwrap()
        .save(&dir)
        .unwrap();
    let good = std::fs::read_to_string(dir.join("trainer.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let resign = |mut v: serde_json::Value| -> String {
        v.as_object_mut().unwrap().remove("sha256");
        let digest = sha256_hex(&serde_json::to_vec(&v).unwrap());
        v.as_object_mut()
            .unwrap()
            .insert("sha256".into(), digest.into());
        serde_json::to_string_pretty(&v).unwrap()
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("step", serde_json::json!(18446744073709551615u64), "`step`"),
        ("step", serde_json::json!(-1), "`step`"),
        ("step", serde_json::json!(2.5), "`step`"),
        ("epoch", serde_json::json!("3"), "`epoch`"),
        (
            "batch_in_epoch",
            serde_json::json!(8),
            "exceeds `batches_per_epoch`",
        ),
        ("data_seed", serde_json::json!(null), "`data_seed`"),
    ];
    for (field, value, needle) in cases {
        let mut bad = v.clone();
        bad[field] = value.clone();
        std::fs::write(dir.join("trainer.json"), resign(bad)).unwrap();
        let e = Checkpoint::load(&dir).unwrap_err().to_string();
        assert!(e.contains(needle), "{field} = {value}: {e}");
    }
    for (key, needle) in [
        (
            format!("+{}", &v["rng"]["key"].as_str().unwrap()[1..]),
            "rng.key",
        ),
        ("zz".repeat(32), "rng.key"),
    ] {
        let mut bad = v.clone();
        bad["rng"]["key"] = key.into();
        std::fs::write(dir.join("trainer.json"), resign(bad)).unwrap();
        let e = Checkpoint::load(&dir).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    let mut bad = v.clone();
    bad["rng"]["word_pos"] = "+5".into();
    std::fs::write(dir.join("trainer.json"), resign(bad)).unwrap();
    assert!(Checkpoint::load(&dir)
        .unwrap_err()
        .to_string()
        .contains("word_pos"));
    // A key given twice: serde_json would keep the last one silently.
    let dup = good.replacen("\"step\":", "\"step\": 0, \"step\":", 1);
    std::fs::write(dir.join("trainer.json"), dup).unwrap();
    let e = Checkpoint::load(&dir).unwrap_err().to_string();
    assert!(e.contains("duplicate key `step`"), "{e}");
    // Without resigning, any edit is caught by the checksum.
    let edited = good.replacen("\"step\": 0", "\"step\": 1", 1);
    assert_ne!(edited, good);
    std::fs::write(dir.join("trainer.json"), edited).unwrap();
    let e = Checkpoint::load(&dir).unwrap_err().to_string();
    assert!(e.contains("SHA-256"), "{e}");
    std::fs::write(dir.join("trainer.json"), &good).unwrap();
    Checkpoint::load(&dir).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every stateful piece validates what it reads, and a failure changes nothing.
#[test]
fn every_piece_validates_its_state() {
    let (store, mut opt) = model(4);
    let mut sched = LrScheduler::new(OneCycleLr::new(0.1, 10), &mut opt).unwrap();
    let mut plateau = ReduceLrOnPlateau::new(PlateauConfig {
        cooldown: 2,
        ..Default::default()
    })
    .unwrap();
    let mut gnr = GradNormRatio::new(0.1, 1e-8).unwrap();
    let mut early = EarlyStopping::new(3, 0.0, Direction::Minimize, true).unwrap();
    early.update(1.0, &store).unwrap();
    gnr.rate(2.0).unwrap();
    let mut sd = StateDict::default();
    sched.save_state("s", &mut sd).unwrap();
    plateau.save_state("p", &mut sd).unwrap();
    gnr.save_state("g", &mut sd).unwrap();
    early.save_state("e", &mut sd).unwrap();
    let cases: Vec<(&str, f64)> = vec![
        ("s.step", 11.0), // past OneCycle's total_steps
        ("s.step", f64::NAN),
        ("s.base_lr.0", -0.1),
        ("s.base_lr.0", f64::INFINITY),
        ("p.best", f64::NAN),
        ("p.num_bad", 1e300),
        ("p.cooldown_counter", 3.0), // above the configured cooldown
        ("p.reductions", -1.0),
        ("g.previous", 0.0),
        ("g.previous", f64::NAN),
        ("e.best", f64::INFINITY),
        ("e.bad", 0.5),
    ];
    for (key, v) in cases {
        let mut bad = sd.clone();
        bad.scalars.insert(key.into(), v);
        let e = match &key[..1] {
            "s" => sched.load_state("s", &bad),
            "p" => plateau.load_state("p", &bad),
            "g" => gnr.load_state("g", &bad),
            _ => early.load_state("e", &bad),
        }
        .unwrap_err()
        .to_string();
        assert!(e.contains(key), "{key} = {v}: {e}");
    }
    // Nothing changed: the intact state round-trips to the same values.
    let mut again = StateDict::default();
    sched.save_state("s", &mut again).unwrap();
    plateau.save_state("p", &mut again).unwrap();
    gnr.save_state("g", &mut again).unwrap();
    early.save_state("e", &mut again).unwrap();
    assert_eq!(format!("{:?}", again.scalars), format!("{:?}", sd.scalars));
    // Integer "best weights" load: a model's state dict holds integer buffers (BatchNorm's
    // `num_batches_tracked`); names, shapes and dtypes meet the model at `restore`.
    let mut ints = sd.clone();
    let k = ints.tensors.keys().next().unwrap().clone();
    let t = ints.tensors[&k].to_dtype(DType::I64).unwrap();
    ints.tensors.insert(k.clone(), t);
    let mut other = early.clone();
    other.load_state("e", &ints).unwrap();
    // A missing entry names it.
    let mut bad = sd.clone();
    bad.scalars.remove("p.num_bad");
    let e = plateau.load_state("p", &bad).unwrap_err().to_string();
    assert!(e.contains("p.num_bad") && e.contains("missing"), "{e}");
    // Strings in a state file that are not numbers are refused when reading the file.
    let root = tmp("statefile");
    sd.save(root.join("s.safetensors")).unwrap();
    assert!(StateDict::load(root.join("s.safetensors")).is_ok());
}

/// A dataset that counts how many batches were built.
struct Counting {
    inner: TensorDataset,
    built: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Dataset for Counting {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, i: usize) -> taper::data::Result<(Tensor, Tensor)> {
        self.inner.get(i)
    }
    fn get_batch(&self, idx: &[usize]) -> taper::data::Result<(Tensor, Tensor)> {
        self.built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_batch(idx)
    }
}

#[test]
fn resuming_checks_the_loader_and_skips_without_building() {
    let x = Tensor::arange(0f32, 40., &Device::Cpu)
        .unwrap()
        .reshape((20, 2))
        .unwrap();
    let y = Tensor::arange(0i64, 20, &Device::Cpu).unwrap();
    let built = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loader = DataLoader::new(
        Counting {
            inner: TensorDataset::new(x, y).unwrap(),
            built: built.clone(),
        },
        Batching::MiniBatch(3),
    )
    .unwrap()
    .shuffle(true)
    .seed(11);
    let mut st = TrainState::for_loader(&loader);
    assert_eq!(st.batches_per_epoch, Some(7));
    st.epoch = 2;
    st.batch_in_epoch = 5;
    let rest: Vec<Vec<usize>> = st
        .batches(&loader)
        .unwrap()
        .map(|b| b.unwrap().indices)
        .collect();
    assert_eq!(
        built.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "only the 2 left are built"
    );
    let all: Vec<Vec<usize>> = loader.epoch(2).map(|b| b.unwrap().indices).collect();
    assert_eq!(rest, all[5..]);
    // Another seed, another batch size, or a position past the end: errors.
    let other = DataLoader::new(
        TensorDataset::new(
            Tensor::zeros((20, 2), DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros(20, DType::I64, &Device::Cpu).unwrap(),
        )
        .unwrap(),
        Batching::MiniBatch(3),
    )
    .unwrap()
    .seed(12);
    let e = st.batches(&other).err().unwrap().to_string();
    assert!(e.contains("seed 12"), "{e}");
    let other = other.seed(11).drop_last(true);
    let e = st.batches(&other).err().unwrap().to_string();
    assert!(e.contains("6 batches per epoch"), "{e}");
    st.batch_in_epoch = 8;
    assert!(st.batches(&loader).is_err());
}

#[test]
fn checkpoint_capture_takes_the_rng_itself() {
    let (store, opt) = model(4);
    manual_seed(3);
    let st = TrainState::new(0); // captured before the RNG moves on
    let _ = randn(100, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let ckpt = Checkpoint::capture(&store, &opt, st).unwrap();
    let next = randn(5, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let (store2, mut opt2) = model(4);
    manual_seed(99);
    ckpt.restore(&store2, &mut opt2, &mut []).unwrap();
    let again = randn(5, 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        next.to_vec1::<f32>().unwrap(),
        again.to_vec1::<f32>().unwrap()
    );
}
