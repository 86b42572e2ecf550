//! The checkpoint round trip, shared with the end-to-end tests.

use std::path::{Path, PathBuf};

use taper::data::{mnist, Batching, DataLoader, Dataset, TensorDataset};
use taper::nn::{cross_entropy, Activation, Dropout, Flatten, Linear, Sequential};
use taper::optim::{Adam, Optimizer};
use taper::prelude::*;
use taper::train::{accuracy, Checkpoint, TrainState};

/// What the round trip showed.
#[derive(Debug)]
pub struct Outcome {
    /// Steps in total.
    pub steps: u64,
    /// The checkpoint written halfway.
    pub checkpoint: PathBuf,
    /// Test accuracy of the uninterrupted run.
    pub straight_accuracy: f64,
    /// Test accuracy of the resumed run.
    pub resumed_accuracy: f64,
    /// Whether every weight is bit-identical.
    pub identical: bool,
}

struct Run {
    store: ParamStore,
    model: Sequential,
    opt: Optimizer<Adam>,
    state: TrainState,
}

fn fresh(seed: u64) -> anyhow::Result<Run> {
    manual_seed(seed);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 64, s))?
        .append(Activation::Relu)
        .append(Dropout::new(0.1)?)
        .append_with(|s| Linear::new(64, 10, s))?;
    let opt = Optimizer::new(Adam::new(2e-3), &store)?;
    Ok(Run {
        store,
        model,
        opt,
        state: TrainState::new(1),
    })
}

fn train(run: &mut Run, loader: &DataLoader<TensorDataset>, until: u64) -> anyhow::Result<()> {
    while run.state.step < until {
        // The rest of the current epoch: checked against the loader, skipped batches unbuilt.
        for b in run.state.batches(loader)? {
            let b = b?;
            let loss = cross_entropy(&run.model.forward_t(&b.inputs, true)?, &b.targets)?;
            run.opt.step(&Gradients::compute(&loss, &run.store)?)?;
            run.state.finish_batch();
            if run.state.step == until {
                return Ok(());
            }
        }
        run.state.finish_epoch();
    }
    Ok(())
}

fn test_accuracy(run: &Run, test: &TensorDataset) -> anyhow::Result<f64> {
    let logits = no_grad(|| run.model.forward_t(test.inputs(), false))?;
    Ok(accuracy(&logits, test.targets())?)
}

/// Trains `steps` straight, and `steps/2` + save + load into fresh objects + the rest.
pub fn run(steps: u64, dir: &Path) -> anyhow::Result<Outcome> {
    let data = mnist::builtin()?;
    let test = data.test.take(1000)?;
    let loader = DataLoader::new(data.train, Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(1);
    assert!(loader.dataset().len() > 0);

    let mut straight = fresh(7)?;
    train(&mut straight, &loader, steps)?;

    let mut first = fresh(7)?;
    train(&mut first, &loader, steps / 2)?;
    let checkpoint = dir.join(format!("step-{}", steps / 2));
    Checkpoint::capture(&first.store, &first.opt, first.state.clone())?.save(&checkpoint)?;
    drop(first);

    let mut second = fresh(12345)?; // different initialization: the checkpoint must override it
    let ckpt = Checkpoint::load(&checkpoint)?;
    ckpt.restore(&second.store, &mut second.opt, &mut [])?;
    second.state = ckpt.train;
    train(&mut second, &loader, steps)?;

    let bits = |s: &ParamStore| -> anyhow::Result<Vec<Vec<u32>>> {
        s.state_dict()
            .iter()
            .map(|(_, t)| {
                Ok(t.flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|x| x.to_bits())
                    .collect())
            })
            .collect()
    };
    Ok(Outcome {
        steps,
        checkpoint,
        straight_accuracy: test_accuracy(&straight, &test)?,
        resumed_accuracy: test_accuracy(&second, &test)?,
        identical: bits(&straight.store)? == bits(&second.store)?,
    })
}
