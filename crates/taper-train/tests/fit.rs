//! `Fit` is the hand-written loop: the same weights bit for bit; gradient accumulation
//! equals a larger batch; early stopping, rate control, stopping rules, logs, metrics and
//! checkpoint resume do what they say.

use taper_data::{Batching, DataLoader, TensorDataset};
use taper_nn::{cross_entropy, mse_loss, Activation, Linear, Reduction, Sequential};
use taper_optim::{LrScheduler, Optimizer, Sgd, StepLr};
use taper_tensor::{
    manual_seed, rand_uniform, randn, DType, Device, Gradients, ModuleT, ParamStore, Tensor,
};
use taper_train::*;

fn model(store: &ParamStore) -> Sequential {
    Sequential::new(store)
        .append_with(|s| Linear::new(10, 8, s))
        .unwrap()
        .append(Activation::Relu)
        .append_with(|s| Linear::new(8, 1, s))
        .unwrap()
}

fn data(n: usize, seed: u64) -> (Tensor, Tensor) {
    manual_seed(seed);
    let x = rand_uniform((n, 10), 0.0, 1.0, DType::F64, &Device::Cpu).unwrap();
    let y = x.sum_keepdim(1).unwrap().affine(0.3, -1.0).unwrap();
    (x, y)
}

fn mse(o: &Tensor, y: &Tensor) -> taper_nn::Result<Tensor> {
    mse_loss(o, y, Reduction::Mean)
}

fn weights(store: &ParamStore) -> Vec<Vec<f64>> {
    store
        .state_dict()
        .iter()
        .map(|(_, t)| t.flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

fn fresh() -> (ParamStore, Sequential) {
    manual_seed(1);
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    let m = model(&store);
    (store, m)
}

#[test]
fn fit_is_the_hand_written_loop() {
    let (x, y) = data(100, 0);
    let loader = DataLoader::new(
        TensorDataset::new(x.clone(), y.clone()).unwrap(),
        Batching::MiniBatch(16),
    )
    .unwrap()
    .shuffle(true)
    .seed(5);
    let (store_a, model_a) = fresh();
    let mut opt_a = Optimizer::new(Sgd::new(0.05).momentum(0.9), &store_a).unwrap();
    let history = Fit::new(&model_a, &store_a, &mut opt_a, mse)
        .epochs(3)
        .verbosity(Verbosity::Silent)
        .run(&loader)
        .unwrap();
    let (store_b, model_b) = fresh();
    let mut opt_b = Optimizer::new(Sgd::new(0.05).momentum(0.9), &store_b).unwrap();
    let mut last = 0.0;
    for epoch in 0..3 {
        let (mut sum, mut n) = (0.0, 0);
        for b in loader.epoch(epoch) {
            let b = b.unwrap();
            let loss = mse(&model_b.forward_t(&b.inputs, true).unwrap(), &b.targets).unwrap();
            sum += loss.to_scalar::<f64>().unwrap() * b.inputs.dim(0).unwrap() as f64;
            n += b.inputs.dim(0).unwrap();
            opt_b
                .step(&Gradients::compute(&loss, &store_b).unwrap())
                .unwrap();
        }
        last = sum / n as f64;
    }
    assert_eq!(weights(&store_a), weights(&store_b));
    assert_eq!(history.get("loss").len(), 3);
    assert_eq!(history.get("loss")[2], last);
    assert_eq!(history.get("lr"), [0.05; 3]);
}

#[test]
fn accumulating_two_batches_of_16_steps_like_one_batch_of_32() {
    let (x, y) = data(64, 2);
    let run = |batch: usize, k: usize| {
        let (store, m) = fresh();
        let mut opt = Optimizer::new(Sgd::new(0.1), &store).unwrap();
        Fit::new(&m, &store, &mut opt, mse)
            .epochs(2)
            .batching(batch, false, 0)
            .accumulate(k)
            .verbosity(Verbosity::Silent)
            .run_tensors(&x, &y)
            .unwrap();
        weights(&store)
    };
    let (a, b) = (run(32, 1), run(16, 2));
    for (wa, wb) in a.iter().zip(&b) {
        for (p, q) in wa.iter().zip(wb) {
            assert!((p - q).abs() < 1e-12, "{p} vs {q}");
        }
    }
}

#[test]
fn early_stopping_schedules_stop_rules_and_logs() {
    let (x, y) = data(80, 3);
    let (xv, yv) = data(40, 4);
    let dir = std::env::temp_dir().join(format!("taper-fit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (store, m) = fresh();
    let mut opt = Optimizer::new(Sgd::new(0.05), &store).unwrap();
    let sched = LrScheduler::new(StepLr::new(2).gamma(0.5), &mut opt).unwrap();
    let history = Fit::new(&m, &store, &mut opt, mse)
        .epochs(6)
        .metrics([Metric::MeanAbsoluteError])
        .validation_tensors(&xv, &yv)
        .unwrap()
        .lr_control(Box::new(sched), LrEvery::Epoch)
        .csv_log(dir.join("log.csv"))
        .jsonl_log(dir.join("log.jsonl"))
        .verbosity(Verbosity::Silent)
        .run_tensors(&x, &y)
        .unwrap();
    assert_eq!(
        history.get("lr"),
        [0.05, 0.025, 0.025, 0.0125, 0.0125, 0.00625]
    );
    assert_eq!(history.get("val_mae").len(), 6);
    let csv = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    assert_eq!(
        csv.lines().next().unwrap(),
        "epoch,loss,mae,val_loss,val_mae,lr"
    );
    assert_eq!(csv.lines().count(), 7);
    let jsonl = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["epoch"], 1);
    assert_eq!(first["loss"].as_f64().unwrap(), history.get("loss")[0]);

    // Early stopping on a metric that cannot improve (an absurd rate), restoring the best.
    let (store, m) = fresh();
    let mut opt = Optimizer::new(Sgd::new(5.0), &store).unwrap();
    let early = EarlyStopping::new(1, 0.0, Direction::Minimize, true).unwrap();
    let history = Fit::new(&m, &store, &mut opt, mse)
        .epochs(20)
        .validation_tensors(&xv, &yv)
        .unwrap()
        .early_stopping(early, "val_loss")
        .verbosity(Verbosity::Silent)
        .run_tensors(&x, &y)
        .unwrap();
    assert!(
        history
            .stopped
            .as_deref()
            .unwrap_or("")
            .starts_with("early stopping"),
        "{history:?}"
    );
    assert!(history.epochs.len() < 20);

    // The documents' loss threshold.
    let (store, m) = fresh();
    let mut opt = Optimizer::new(Sgd::new(0.05), &store).unwrap();
    let history = Fit::new(&m, &store, &mut opt, mse)
        .epochs(50)
        .stop_rules(StopRules::new().loss_threshold(1e9))
        .verbosity(Verbosity::Silent)
        .run_tensors(&x, &y)
        .unwrap();
    assert_eq!(history.epochs.len(), 1);
    assert!(history.stopped.unwrap().contains("LossThreshold"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resumed_fit_continues_bit_for_bit_with_its_history_and_logs() {
    let (x, y) = data(64, 6);
    let dir = std::env::temp_dir().join(format!("taper-fit-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let go = |epochs: u64, ckpt: &str, resume: bool| {
        let (store, m) = fresh();
        let mut opt = Optimizer::new(Sgd::new(0.05).momentum(0.9), &store).unwrap();
        let sched = LrScheduler::new(StepLr::new(1).gamma(0.9), &mut opt).unwrap();
        let h = Fit::new(&m, &store, &mut opt, mse)
            .epochs(epochs)
            .batching(16, true, 3)
            .lr_control(Box::new(sched), LrEvery::Epoch)
            .checkpoint(dir.join(ckpt), resume)
            .csv_log(dir.join(format!("{ckpt}.csv")))
            .verbosity(Verbosity::Silent)
            .run_tensors(&x, &y)
            .unwrap();
        (weights(&store), h)
    };
    let (straight, h_straight) = go(4, "straight", false);
    go(2, "resumed", true);
    let (resumed, h_resumed) = go(4, "resumed", true);
    assert_eq!(resumed, straight);
    assert_eq!(h_resumed.get("loss"), h_straight.get("loss"));
    assert_eq!(h_resumed.get("lr"), h_straight.get("lr"));
    let csv = std::fs::read_to_string(dir.join("resumed.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn classification_reports_accuracy() {
    manual_seed(0);
    let x = randn((90, 10), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let labels = x.narrow(1, 0, 3).unwrap().argmax(1).unwrap();
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let m = Sequential::new(&store)
        .append_with(|s| Linear::new(10, 3, s))
        .unwrap();
    let mut opt = Optimizer::new(taper_optim::Adam::new(0.05), &store).unwrap();
    let ce = |o: &Tensor, t: &Tensor| cross_entropy(o, t);
    let h = Fit::new(&m, &store, &mut opt, ce)
        .epochs(15)
        .metrics([Metric::Accuracy])
        .verbosity(Verbosity::Silent)
        .run_tensors(&x, &labels)
        .unwrap();
    let acc = h.get("accuracy");
    assert!(acc[14] > 0.9 && acc[14] > acc[0], "{acc:?}");
}

/// A per-step schedule sees the optimizer's global step count, across epochs.
#[test]
fn per_step_schedules_count_steps_across_epochs() {
    use taper_optim::{OneCycleLr, Schedule};
    let (x, y) = data(64, 7);
    let (store, m) = fresh();
    let mut opt = Optimizer::new(Sgd::new(0.01), &store).unwrap();
    let cycle = OneCycleLr::new(0.1, 9);
    let sched = LrScheduler::new(cycle, &mut opt).unwrap();
    let h = Fit::new(&m, &store, &mut opt, mse)
        .epochs(2)
        .batching(16, false, 0)
        .lr_control(Box::new(sched), LrEvery::Step)
        .verbosity(Verbosity::Silent)
        .run_tensors(&x, &y)
        .unwrap();
    // 4 steps per epoch: the rate after epoch 1 is the schedule's at step 4, after epoch 2
    // at step 8, not at step 4 again.
    let want = [cycle.lr(0.01, 4).unwrap(), cycle.lr(0.01, 8).unwrap()];
    assert_eq!(h.get("lr"), want);
    assert_ne!(want[0], want[1]);
}

/// Every entry's values as f64 (integer buffers included), for bit-for-bit comparisons.
fn all_values(store: &ParamStore) -> Vec<(String, Vec<f64>)> {
    store
        .state_dict()
        .into_iter()
        .map(|(n, t)| {
            let v = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            (n, v.to_vec1().unwrap())
        })
        .collect()
}

/// A small CNN with BatchNorm2d (an integer buffer, `num_batches_tracked`).
fn bn_cnn(store: &ParamStore) -> Sequential {
    use taper_nn::{BatchNorm, Conv2d, Flatten};
    Sequential::new(store)
        .append_with(|s| Conv2d::new(1, 4, (3, 3), s))
        .unwrap()
        .append_with(|s| BatchNorm::new_2d(4, s))
        .unwrap()
        .append(Activation::Relu)
        .append(Flatten::default())
        .append_with(|s| Linear::new(4 * 6 * 6, 3, s))
        .unwrap()
}

fn images(n: usize, seed: u64) -> (Tensor, Tensor) {
    manual_seed(seed);
    let x = randn((n, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let y = x
        .flatten_from(1)
        .unwrap()
        .narrow(1, 0, 3)
        .unwrap()
        .argmax(1)
        .unwrap();
    (x, y)
}

/// Issue: a BatchNorm CNN with early stopping that restores the best weights could not
/// resume ("state `early.weights.1.num_batches_tracked` is I64; expected a float tensor").
#[test]
fn a_batchnorm_cnn_with_early_stopping_resumes_bit_for_bit() {
    let (x, y) = images(48, 11);
    let (xv, yv) = images(24, 12);
    let dir = std::env::temp_dir().join(format!("taper-fit-bn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let go = |epochs: u64, ckpt: &str, resume: bool| {
        manual_seed(3);
        let store = ParamStore::new(&Device::Cpu, DType::F32);
        let m = bn_cnn(&store);
        let mut opt = Optimizer::new(taper_optim::Adam::new(0.01), &store).unwrap();
        let early = EarlyStopping::new(3, 0.0, Direction::Minimize, true).unwrap();
        let ce = |o: &Tensor, t: &Tensor| cross_entropy(o, t);
        let h = Fit::new(&m, &store, &mut opt, ce)
            .epochs(epochs)
            .batching(16, true, 1)
            .validation_tensors(&xv, &yv)
            .unwrap()
            .early_stopping(early, "val_loss")
            .checkpoint(dir.join(ckpt), resume)
            .verbosity(Verbosity::Silent)
            .run_tensors(&x, &y)
            .unwrap();
        (all_values(&store), h)
    };
    let (straight, h_straight) = go(3, "straight", false);
    go(2, "resumed", false);
    let (resumed, h_resumed) = go(3, "resumed", true);
    assert!(straight
        .iter()
        .any(|(n, _)| n.ends_with("num_batches_tracked")));
    assert_eq!(resumed, straight);
    assert_eq!(h_resumed.get("val_loss"), h_straight.get("val_loss"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue: under `accumulate(k)` the step count advanced once per batch, so `max_steps`
/// stopped k times too early. It counts optimizer steps now.
#[test]
fn accumulated_batches_count_one_optimizer_step_per_group() {
    let (x, y) = data(64, 8);
    let (store, m) = fresh();
    let mut opt = Optimizer::new(Sgd::new(0.05), &store).unwrap();
    // 8 batches of 8 per epoch, 2 per step: 4 optimizer steps per epoch.
    let h = Fit::new(&m, &store, &mut opt, mse)
        .epochs(10)
        .batching(8, true, 0)
        .accumulate(2)
        .stop_rules(StopRules::new().max_steps(8))
        .verbosity(Verbosity::Silent)
        .run_tensors(&x, &y)
        .unwrap();
    assert_eq!(h.epochs.len(), 2, "{h:?}");
    assert!(h.stopped.as_deref().unwrap().contains("MaxSteps"));
    assert_eq!(opt.steps(), 8);
    let mut state = TrainState::new(0);
    state.accumulate_batch();
    state.finish_batch();
    assert_eq!((state.batch_in_epoch, state.step), (2, 1));
}

/// `Fit` takes any optimizer: Lookahead, L-BFGS (stepped with a closure over the batch), and
/// an `OptimizerSet` of two algorithms with a schedule on one member, which checkpoints and
/// resumes bit for bit as one piece.
#[test]
fn fit_trains_any_optimizer_and_resumes_an_optimizer_set() {
    use taper_optim::{
        Adam, AnyOptimizer, CosineAnnealingLr, Lbfgs, LbfgsOptimizer, LineSearch, Lookahead,
        OptimizerSet,
    };
    let (x, y) = data(64, 9);
    let trains = |opt: &mut dyn AnyOptimizer, store: &ParamStore, m: &Sequential, batch| {
        let h = Fit::new(m, store, opt, mse)
            .epochs(4)
            .batching(batch, false, 0)
            .verbosity(Verbosity::Silent)
            .run_tensors(&x, &y)
            .unwrap();
        let loss = h.get("loss");
        assert!(loss[3] < loss[0], "{loss:?}");
    };
    let (store, m) = fresh();
    let mut look =
        Lookahead::new(Optimizer::new(Adam::new(0.01), &store).unwrap(), 3, 0.5).unwrap();
    trains(&mut look, &store, &m, 16);
    let (store, m) = fresh();
    let cfg = Lbfgs::new(0.5)
        .line_search(LineSearch::StrongWolfe)
        .max_iter(4);
    let mut lbfgs = LbfgsOptimizer::new(cfg, &store).unwrap();
    trains(&mut lbfgs, &store, &m, 64);
    assert!(lbfgs.func_evals() > 4, "L-BFGS re-evaluated the batch");

    let dir = std::env::temp_dir().join(format!("taper-fit-set-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let go = |epochs: u64, resume: bool| {
        let (store, m) = fresh();
        let (first, rest): (Vec<_>, Vec<_>) = store
            .trainable()
            .into_iter()
            .partition(|(n, _)| n.starts_with("0."));
        let mut set = OptimizerSet::new()
            .add(
                "sgd",
                Optimizer::from_vars(Sgd::new(0.05).momentum(0.9), first).unwrap(),
            )
            .unwrap()
            .add("adam", Optimizer::from_vars(Adam::new(0.01), rest).unwrap())
            .unwrap();
        let groups = set.groups_of("adam").unwrap();
        let cosine = LrScheduler::for_groups(CosineAnnealingLr::new(20), &mut set, groups).unwrap();
        let h = Fit::new(&m, &store, &mut set, mse)
            .epochs(epochs)
            .batching(16, true, 4)
            .lr_control(Box::new(cosine), LrEvery::Step)
            .checkpoint(dir.join("ckpt"), resume)
            .verbosity(Verbosity::Silent)
            .run_tensors(&x, &y)
            .unwrap();
        (all_values(&store), h, set.member("adam").unwrap().lr())
    };
    let (straight, h_straight, lr_straight) = go(4, false);
    let _ = std::fs::remove_dir_all(&dir);
    go(2, true);
    let (resumed, h_resumed, lr_resumed) = go(4, true);
    assert_eq!(resumed, straight);
    assert_eq!(h_resumed.get("loss"), h_straight.get("loss"));
    assert_eq!(lr_resumed, lr_straight);
    assert_ne!(lr_straight, 0.01, "the schedule drove the adam member");
    let _ = std::fs::remove_dir_all(&dir);
}

/// TensorBoard from `Fit`, an EMA of the weights evaluated each epoch and checkpointed (a
/// resumed run averages on bit for bit), and `Fit::evaluate`.
#[test]
fn fit_logs_to_tensorboard_averages_weights_and_evaluates() {
    use taper_optim::AveragedModel;
    let (x, y) = data(64, 10);
    let (xv, yv) = data(32, 13);
    let root = std::env::temp_dir().join(format!("taper-fit-avg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let go = |epochs: u64, resume: bool| {
        let (store, m) = fresh();
        let mut opt = Optimizer::new(Sgd::new(0.05), &store).unwrap();
        let mut ema = AveragedModel::ema(&store, 0.9).unwrap();
        let h = Fit::new(&m, &store, &mut opt, mse)
            .epochs(epochs)
            .batching(16, true, 2)
            .validation_tensors(&xv, &yv)
            .unwrap()
            .weight_averaging(&mut ema, AverageEvery::Step, 1)
            .tensorboard(root.join("tb"))
            .checkpoint(root.join("ckpt"), resume)
            .verbosity(Verbosity::Silent)
            .run_tensors(&x, &y)
            .unwrap();
        (all_values(ema.store()), ema.n_averaged(), h)
    };
    let (avg_straight, n, h) = go(3, false);
    // From the second epoch on: 4 steps per epoch, 2 epochs averaged.
    assert_eq!(n, 8);
    assert_eq!(h.get("avg_val_loss").len(), 2, "{h:?}");
    assert_ne!(h.get("avg_val_loss")[1], h.get("val_loss")[2]);
    let _ = std::fs::remove_dir_all(root.join("ckpt"));
    go(2, true);
    let (avg_resumed, n_resumed, _) = go(3, true);
    assert_eq!((avg_resumed, n_resumed), (avg_straight, n));
    let events = std::fs::read_dir(root.join("tb"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents")
        })
        .count();
    assert!(events >= 1);

    // Keras's model.evaluate: the mean loss over the data, in evaluation mode.
    let (store, m) = fresh();
    let mut opt = Optimizer::new(Sgd::new(0.05), &store).unwrap();
    let fit = Fit::new(&m, &store, &mut opt, mse)
        .batching(16, false, 0)
        .metrics([Metric::MeanAbsoluteError]);
    let scores = fit.evaluate_tensors(&xv, &yv).unwrap();
    let out = m.forward_t(&xv, false).unwrap();
    let want = mse(&out, &yv).unwrap().to_scalar::<f64>().unwrap();
    assert!(
        (scores["loss"] - want).abs() < 1e-12,
        "{scores:?} vs {want}"
    );
    assert!(scores.contains_key("mae"));
    let _ = std::fs::remove_dir_all(&root);
}
