//! Bit-identical resume, in a fresh process, for every optimizer × every kind of
//! learning-rate control, with early stopping, gradient clipping, dropout and shuffling,
//! saving mid-epoch.
//!
//! The parent trains each combination straight through, and again up to a mid-epoch
//! checkpoint. A child process (this test binary, `TAPER_RESUME_CHILD`) builds fresh
//! objects with another initialization, restores each checkpoint and finishes the run. The
//! weights, the learning rate and early stopping's best weights must match the straight
//! run bit for bit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};
use taper::data::{Batching, DataLoader, TensorDataset};
use taper::nn::{cross_entropy, Activation, Dropout, Linear, Sequential};
use taper::optim::*;
use taper::prelude::*;
use taper::train::{Checkpoint, Direction, EarlyStopping, TrainState};

use common::TmpDir;

const CHILD: &str = "TAPER_RESUME_CHILD";
/// 60 examples in batches of 8: 8 batches per epoch. Saving after step 10 is mid-epoch 1.
const SAVE_AT: u64 = 10;
const STEPS: u64 = 21;

/// The kinds of learning-rate control.
#[derive(Debug, Clone, Copy)]
enum Control {
    Constant,
    /// Time-based decay (the documents' inverse-time rate).
    InverseTime,
    /// OneCycle, which also cycles the momentum (SGD's, or Adam's β₁).
    OneCycle,
    /// Loss-driven: ReduceLROnPlateau on the training loss every 3 steps.
    Plateau,
    /// The gradient-norm ratio.
    GradNorm,
}

const CONTROLS: [Control; 5] = [
    Control::Constant,
    Control::InverseTime,
    Control::OneCycle,
    Control::Plateau,
    Control::GradNorm,
];

struct Run<R: Rule> {
    store: ParamStore,
    model: Sequential,
    opt: Optimizer<R>,
    loader: DataLoader<TensorDataset>,
    state: TrainState,
    time: Option<LrScheduler<InverseTime>>,
    cycle: Option<LrScheduler<OneCycleLr>>,
    plateau: Option<ReduceLrOnPlateau>,
    ratio: Option<GradNormRatio>,
    early: EarlyStopping,
}

fn data() -> TensorDataset {
    // Fixed data from its own generator, independent of Taper's RNG.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let x: Vec<f32> = (0..60 * 6).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<i64> = (0..60).map(|_| rng.random_range(0..3)).collect();
    TensorDataset::new(
        Tensor::from_vec(x, (60, 6), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, 60, &Device::Cpu).unwrap(),
    )
    .unwrap()
}

fn build<R: Rule>(rule: R, control: Control, init_seed: u64) -> Run<R> {
    manual_seed(init_seed);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append_with(|s| Linear::new(6, 16, s))
        .unwrap()
        .append(Activation::Relu)
        .append(Dropout::new(0.3).unwrap())
        .append_with(|s| Linear::new(16, 3, s))
        .unwrap();
    let mut opt = Optimizer::new(rule, &store)
        .unwrap()
        .clip(Clip::Norm {
            max_norm: 0.5,
            norm: Norm::L2,
        })
        .unwrap();
    let loader = DataLoader::new(data(), Batching::MiniBatch(8))
        .unwrap()
        .shuffle(true)
        .seed(5);
    let time = matches!(control, Control::InverseTime)
        .then(|| LrScheduler::new(InverseTime::new(0.05), &mut opt).unwrap());
    let cycle = matches!(control, Control::OneCycle).then(|| {
        let max_lr = opt.lr() * 3.0;
        // Momentum cycles where the algorithm has one (PyTorch refuses it elsewhere).
        let cycle =
            OneCycleLr::new(max_lr, STEPS + 5).cycle_momentum(opt.group_momentum(0).is_some());
        LrScheduler::new(cycle, &mut opt).unwrap()
    });
    let plateau = matches!(control, Control::Plateau).then(|| {
        ReduceLrOnPlateau::new(PlateauConfig {
            patience: 0,
            factor: 0.5,
            cooldown: 1,
            ..Default::default()
        })
        .unwrap()
    });
    let ratio =
        matches!(control, Control::GradNorm).then(|| GradNormRatio::new(opt.lr(), 1e-12).unwrap());
    Run {
        state: TrainState::for_loader(&loader),
        store,
        model,
        opt,
        loader,
        time,
        cycle,
        plateau,
        ratio,
        early: EarlyStopping::new(100, 0.0, Direction::Minimize, true).unwrap(),
    }
}

fn train<R: Rule>(run: &mut Run<R>, until: u64) {
    while run.state.step < until {
        for b in run.state.batches(&run.loader).unwrap() {
            let b = b.unwrap();
            let logits = run.model.forward_t(&b.inputs, true).unwrap();
            let loss = cross_entropy(&logits, &b.targets).unwrap();
            let grads = Gradients::compute(&loss, &run.store).unwrap();
            if let Some(r) = run.ratio.as_mut() {
                r.step(&grads, &mut run.opt).unwrap();
            }
            run.opt.step(&grads).unwrap();
            if let Some(s) = run.time.as_mut() {
                s.step(&mut run.opt).unwrap();
            }
            if let Some(s) = run.cycle.as_mut() {
                s.step(&mut run.opt).unwrap();
            }
            run.state.finish_batch();
            if run.state.step % 3 == 0 {
                let l = loss.to_scalar::<f32>().unwrap() as f64;
                if let Some(p) = run.plateau.as_mut() {
                    p.step(l, &mut run.opt).unwrap();
                }
                run.early.update(l, &run.store).unwrap();
            }
            if run.state.step == until {
                return;
            }
        }
        run.state.finish_epoch();
    }
}

fn save<R: Rule>(run: &Run<R>, dir: &Path) {
    let mut c = Checkpoint::capture(&run.store, &run.opt, run.state.clone()).unwrap();
    if let Some(s) = &run.time {
        c = c.add_state("time", s).unwrap();
    }
    if let Some(s) = &run.cycle {
        c = c.add_state("cycle", s).unwrap();
    }
    if let Some(p) = &run.plateau {
        c = c.add_state("plateau", p).unwrap();
    }
    if let Some(r) = &run.ratio {
        c = c.add_state("ratio", r).unwrap();
    }
    c.add_state("early", &run.early).unwrap().save(dir).unwrap();
}

fn resume<R: Rule>(run: &mut Run<R>, dir: &Path) {
    let c = Checkpoint::load(dir).unwrap();
    let mut parts: Vec<(&str, &mut dyn Stateful)> = vec![("early", &mut run.early)];
    if let Some(s) = run.time.as_mut() {
        parts.push(("time", s));
    }
    if let Some(s) = run.cycle.as_mut() {
        parts.push(("cycle", s));
    }
    if let Some(p) = run.plateau.as_mut() {
        parts.push(("plateau", p));
    }
    if let Some(r) = run.ratio.as_mut() {
        parts.push(("ratio", r));
    }
    c.restore(&run.store, &mut run.opt, &mut parts).unwrap();
    run.state = c.train;
}

/// Everything that must match: the weights, each group's rate and momentum, early
/// stopping's best metric, and its best weights.
fn fingerprint<R: Rule>(run: &Run<R>) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for (_, t) in run.store.state_dict() {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        out.extend(v.iter().map(|x| x.to_bits() as u64));
    }
    let r = &run.opt.groups()[0].rule;
    out.push(r.common().lr.to_bits());
    out.push(r.momentum_coefficient().unwrap_or(-1.0).to_bits());
    out.push(run.early.best().unwrap_or(-1.0).to_bits());
    out.push(run.opt.steps());
    // Early stopping's best weights, written into a copy of the model.
    let copy = run.store.to(&Device::Cpu, DType::F32).unwrap();
    if run.early.restore(&copy).unwrap() {
        for (_, t) in copy.state_dict() {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            out.extend(v.iter().map(|x| x.to_bits() as u64));
        }
    }
    out
}

fn encode(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Calls `$f(key, rule)` for every registered optimizer configuration (`visit_optimizers`).
macro_rules! every_optimizer {
    ($f:ident) => {{
        struct Each;
        impl Visitor for Each {
            fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
                $f(entry.key, rule);
            }
        }
        visit_optimizers(&mut Each);
    }};
}

/// The directory of this process's checkpoints (the child gets it from `TAPER_RESUME_CHILD`).
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The parent's part for one optimizer: the straight run's fingerprint, and a mid-epoch
/// checkpoint, for every kind of learning-rate control.
fn straight_and_checkpoint<R: Rule>(name: &str, rule: R) {
    let root = ROOT.get().unwrap();
    for control in CONTROLS {
        let tag = format!("{name}-{control:?}");
        let mut straight = build(rule.clone(), control, 1);
        train(&mut straight, STEPS);
        std::fs::write(
            root.join(format!("{tag}.expected")),
            encode(&fingerprint(&straight)),
        )
        .unwrap();
        let mut first = build(rule.clone(), control, 1);
        train(&mut first, SAVE_AT);
        assert_eq!(
            (first.state.epoch, first.state.batch_in_epoch),
            (1, 2),
            "the save falls mid-epoch"
        );
        save(&first, &root.join(&tag));
    }
}

/// The child's part for one optimizer: fresh objects, initialized differently, restored
/// from each checkpoint and trained to the end.
fn resume_and_finish<R: Rule>(name: &str, rule: R) {
    let root = ROOT.get().unwrap();
    for control in CONTROLS {
        let tag = format!("{name}-{control:?}");
        let mut run = build(rule.clone(), control, 777);
        resume(&mut run, &root.join(&tag));
        train(&mut run, STEPS);
        std::fs::write(
            root.join(format!("{tag}.resumed")),
            encode(&fingerprint(&run)),
        )
        .unwrap();
    }
}

#[test]
fn resume_is_bit_identical_in_a_fresh_process_for_every_optimizer_and_lr_control() {
    if let Ok(dir) = std::env::var(CHILD) {
        ROOT.set(PathBuf::from(dir)).unwrap();
        every_optimizer!(resume_and_finish);
        return;
    }
    let root = TmpDir::fresh("resume", "matrix");
    std::fs::create_dir_all(&*root).unwrap();
    ROOT.set(root.to_path_buf()).unwrap();
    every_optimizer!(straight_and_checkpoint);

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "resume_is_bit_identical_in_a_fresh_process_for_every_optimizer_and_lr_control",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, &*root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the resuming process failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut n = 0;
    for entry in std::fs::read_dir(&*root).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "expected") {
            let tag = p.file_stem().unwrap().to_string_lossy().into_owned();
            let want = std::fs::read(&p).unwrap();
            let got = std::fs::read(p.with_extension("resumed"))
                .unwrap_or_else(|e| panic!("{tag}: the child wrote nothing: {e}"));
            assert!(
                want == got,
                "{tag}: the resumed run differs from the straight one"
            );
            n += 1;
        }
    }
    assert_eq!(n, optimizer_entries().len() * CONTROLS.len());
    println!("{n} combinations resumed bit-identically in a fresh process");
}
