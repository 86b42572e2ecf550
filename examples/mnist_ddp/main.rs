//! MNIST on several processes: data-parallel training over MPI, the MLP of the `mnist`
//! example, each rank on its own shard of every epoch.
//!
//! ```text
//! cargo build --release --features mpi --example mnist_ddp
//! mpirun -np 2 target/release/examples/mnist_ddp                  # two ranks, this machine
//! mpirun -np 4 -H a:2,b:2 target/release/examples/mnist_ddp       # two machines, two each
//! ```
//!
//! Every rank builds the model; DDP checks they match and copies rank 0's weights to all.
//! Each step, every rank computes the gradient of its 32 examples, the gradients are
//! averaged (one all-reduce per 25 MiB bucket), and every rank takes the same step, so the
//! global batch is ranks × `--batch-size`. `--zero` shards the optimizer state (ZeRO-1).
//! Rank 0 evaluates nothing alone: the test set is sharded too and the counts all-reduced.
//! Rank 0 writes a checkpoint after every epoch; `--resume` continues from the latest, on
//! any number of ranks (rank 0 reads it and sends it to the others, so the other machines
//! need no copy). Each rank uses (cores ÷ ranks on its machine) threads unless
//! `RAYON_NUM_THREADS` says otherwise.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use taper::dist::{Communicator, DistributedDataParallel, Mpi, ZeroOptimizer};
use taper::prelude::*;
use taper::train::TrainState;

/// Data-parallel MNIST over MPI: run under `mpirun -np N`.
#[derive(Parser, Debug)]
struct Args {
    /// Epochs to train (in all, counting those of a resumed run).
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Examples per rank and step (the global batch is ranks × this).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Hidden width of the MLP 784 → hidden → 10.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// `adam` (learning rate 1e-3) or `sgd` (0.05, momentum 0.9).
    #[arg(long, default_value = "adam", value_parser = ["adam", "sgd"])]
    optimizer: String,
    /// Shard the optimizer state over the ranks (ZeRO-1).
    #[arg(long)]
    zero: bool,
    /// Seed of the initialization and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// MNIST-format directory (default: the built-in 8,000/2,000 digits).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where rank 0 writes checkpoints.
    #[arg(long, default_value = "runs/mnist_ddp")]
    out: PathBuf,
    /// Continue from the latest checkpoint in `--out`.
    #[arg(long)]
    resume: bool,
}

/// One optimizer, sharded or not.
enum Opt<'c, R: Rule> {
    Plain(Optimizer<R>),
    Zero(ZeroOptimizer<'c, R, Mpi>),
}

impl<R: Rule> Opt<'_, R> {
    fn step(&mut self, grads: &Gradients) -> anyhow::Result<()> {
        match self {
            Opt::Plain(o) => drop(o.step(grads)?),
            Opt::Zero(o) => drop(o.step(grads)?),
        }
        Ok(())
    }
    /// The whole state, on rank 0 (every rank must call it).
    fn state(&self) -> anyhow::Result<Option<OptimizerState>> {
        Ok(match self {
            Opt::Plain(o) => Some(o.state_dict()?),
            Opt::Zero(o) => o.consolidated_state()?,
        })
    }
    fn load(&mut self, state: &OptimizerState) -> anyhow::Result<()> {
        match self {
            Opt::Plain(o) => o.load_state_dict(state)?,
            Opt::Zero(o) => o.load_state_dict(state)?,
        }
        Ok(())
    }
}

/// Before rayon or candle start: one share of this machine's cores per local rank.
fn set_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let local: usize = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY-free in edition 2021: no other thread exists yet.
    std::env::set_var("RAYON_NUM_THREADS", (cores / local).max(1).to_string());
}

fn main() {
    set_threads();
    park_idle_candle_workers();
    let args = Args::parse();
    let comm = match Mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mnist_ddp: {e}");
            std::process::exit(1);
        }
    };
    let result = match args.optimizer.as_str() {
        "sgd" => run(&args, &comm, Sgd::new(0.05).momentum(0.9)),
        _ => run(&args, &comm, Adam::new(1e-3)),
    };
    if let Err(e) = result {
        eprintln!("mnist_ddp rank {}: {e:#}", comm.rank());
        // Errors every rank sees (a mismatched model, a failed checkpoint) end every rank
        // here; abort ends the others too when this error is this rank's alone.
        comm.abort(1);
    }
}

fn run<R: Rule>(args: &Args, comm: &Mpi, rule: R) -> anyhow::Result<()> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let root = rank == 0;
    let say = |s: String| {
        if root {
            println!("{s}");
        }
    };
    say(format!(
        "{world} rank(s) × {} thread(s), {}; {}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
        Mpi::library_version().split(',').next().unwrap_or(""),
        if args.zero {
            "ZeRO-1"
        } else {
            "unsharded optimizer"
        }
    ));
    manual_seed(args.seed);
    let data = match &args.data {
        Some(dir) => mnist::load_dir(dir)?,
        None => mnist::builtin()?,
    };
    let norm = Normalize::new(0.1307, 0.3081)?;
    let train = DataLoader::new(data.train, Batching::MiniBatch(args.batch_size))?
        .shuffle(true)
        .seed(args.seed)
        .transform(norm)
        .shard(rank, world, ShardTail::Pad)?;
    let test = DataLoader::new(data.test, Batching::MiniBatch(1000))?
        .transform(norm)
        .shard(rank, world, ShardTail::Pad)?;

    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, args.hidden, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(args.hidden, 10, s))?;

    // Resume: rank 0 reads the checkpoint; the weights reach the others through DDP's
    // start-up broadcast, the optimizer state and position through explicit broadcasts.
    let mut manager = None;
    let mut ckpt_bytes = Vec::new();
    let mut position = [0f64; 2]; // epoch, step
    if root {
        let m = CheckpointManager::new(&args.out, 2)?;
        if args.resume {
            let dir = m.latest()?.context("--resume: no checkpoint in --out")?;
            let ckpt = Checkpoint::load(&dir)?;
            store.load_state_dict(&ckpt.weights, LoadMode::Strict)?;
            ckpt_bytes = ckpt.optimizer.to_bytes(&dir)?;
            position = [ckpt.train.epoch as f64, ckpt.train.step as f64];
            let saved_world = ckpt.train.metadata["world_size"].as_u64().unwrap_or(0);
            println!(
                "resuming from {} (epoch {}, written by {saved_world} rank(s))",
                dir.display(),
                ckpt.train.epoch
            );
        }
        manager = Some(m);
    }
    comm.broadcast_f64(&mut position, 0)?;
    comm.broadcast_bytes(&mut ckpt_bytes, 0)?;

    let mut ddp = DistributedDataParallel::new(comm, &store)?;
    let mut opt = if args.zero {
        Opt::Zero(ZeroOptimizer::new(rule, &store, comm)?)
    } else {
        Opt::Plain(Optimizer::new(rule, &store)?)
    };
    if !ckpt_bytes.is_empty() {
        let state = OptimizerState::from_bytes(&ckpt_bytes, std::path::Path::new("checkpoint"))?;
        opt.load(&state)?;
    }
    let mut train_state = TrainState::for_loader(&train);
    train_state.epoch = position[0] as u64;
    train_state.step = position[1] as u64;
    say(format!(
        "{} parameters; gradients in {} bucket(s) of {:.2} MB; global batch {}",
        store.num_trainable(),
        ddp.plan().buckets.len(),
        ddp.plan().bytes() as f64 / 1e6,
        world * args.batch_size
    ));

    let mut total_time = 0.0;
    let mut total_samples = 0usize;
    let mut compute_per_step = 0.0;
    for epoch in train_state.epoch..args.epochs {
        let start = Instant::now();
        let sync_before = ddp.stats().time;
        let mut loss_sum = [0f64; 2];
        let mut steps = 0usize;
        for b in train.epoch(epoch) {
            let b = b?;
            let logits = model.forward_t(&b.inputs, true)?;
            let loss = cross_entropy(&logits, &b.targets)?;
            let grads = ddp.backward(&loss)?;
            opt.step(&grads)?;
            loss_sum[0] += loss.to_scalar::<f32>()? as f64 * b.indices.len() as f64;
            loss_sum[1] += b.indices.len() as f64;
            steps += 1;
            train_state.finish_batch();
        }
        let seconds = start.elapsed().as_secs_f64();
        let sync = (ddp.stats().time - sync_before).as_secs_f64();
        ddp.check_in_sync()?;
        // Evaluation: each rank its test shard; counts summed over the ranks.
        let mut counts = [0f64; 3]; // loss sum, correct, examples
        for b in test.epoch(0) {
            let b = b?;
            let logits = no_grad(|| model.forward_t(&b.inputs, false))?;
            let n = b.indices.len() as f64;
            counts[0] += cross_entropy(&logits, &b.targets)?.to_scalar::<f32>()? as f64 * n;
            counts[1] += accuracy(&logits, &b.targets)? * n;
            counts[2] += n;
        }
        ddp.all_reduce_sum(&mut counts)?;
        ddp.all_reduce_sum(&mut loss_sum)?;
        train_state.finish_epoch();
        let samples = steps * args.batch_size * world;
        total_time += seconds;
        total_samples += samples;
        compute_per_step = (seconds - sync) / steps.max(1) as f64;
        say(format!(
            "epoch {:>2}: train loss {:.4}, test loss {:.4}, test accuracy {:.2}%, {:.0} samples/s, all-reduce {:.1}% of step time",
            epoch + 1,
            loss_sum[0] / loss_sum[1],
            counts[0] / counts[2],
            100.0 * counts[1] / counts[2],
            samples as f64 / seconds,
            100.0 * sync / seconds
        ));

        // Rank 0 writes the checkpoint; the others wait at the barrier.
        let state = opt.state()?;
        train_state.metadata = serde_json::json!({
            "world_size": world,
            "batch_size_per_rank": args.batch_size,
            "test_accuracy": counts[1] / counts[2],
        });
        comm.on_root("writing the checkpoint", || {
            let ckpt = Checkpoint {
                weights: store.state_dict().into_iter().collect(),
                optimizer: state.expect("rank 0 holds the whole state"),
                states: StateDict::default(),
                train: train_state.clone(),
            };
            let m = manager.as_mut().expect("rank 0 has the manager");
            m.save(&ckpt, None)
        })?;
    }
    if total_time > 0.0 {
        let bytes = ddp.plan().bytes() as f64;
        say(format!(
            "{:.0} samples/s over {} epoch(s); {:.2} ms compute per step",
            total_samples as f64 / total_time,
            args.epochs - position[0] as u64,
            1e3 * compute_per_step
        ));
        // A ring all-reduce sends and receives 2(N−1)/N of the gradient bytes per rank.
        say("ring all-reduce projection (per step, bandwidth-bound, latency ignored):".into());
        for (link, gbps) in [("10 GbE", 1.25e9), ("100 Gb InfiniBand", 12.5e9)] {
            let row: Vec<String> = [2usize, 4, 8, 16]
                .iter()
                .map(|&n| {
                    let t = 2.0 * (n as f64 - 1.0) / n as f64 * bytes / gbps;
                    format!(
                        "N={n}: {:.2} ms ({:.0}% of step)",
                        1e3 * t,
                        100.0 * t / (t + compute_per_step)
                    )
                })
                .collect();
            say(format!("  {link}: {}", row.join(", ")));
        }
    }
    Ok(())
}
