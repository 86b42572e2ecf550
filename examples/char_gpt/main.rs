//! A character-level GPT trained on Shakespeare: a 4-layer decoder-only transformer
//! (d_model 128, 4 heads, block 128, tied input and output embeddings) with AdamW (or Muon
//! for the matrices: `--optimizer muon`), warmup + cosine, gradient clipping, checkpoints
//! that resume bit for bit, validation bits per character, and sampling with temperature,
//! top-k and a seed. The model, its configuration and its vocabulary are saved together.
//!
//! ```sh
//! cargo run --release --example char_gpt -- --steps 2000
//! cargo run --release --example char_gpt -- --load runs/char_gpt --prompt "ROMEO:" --tokens 400
//! ```

#[allow(dead_code)] // `bench_gpt` and the tests use the rest
mod core;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use core::{
    bits_per_char, generate, windows, Gpt, GptConfig, OptimizerKind, Recipe, Run, Sampling,
};
use taper::data::text::{shakespeare, Vocab};
use taper::prelude::*;

#[derive(Parser, Debug)]
#[command(about = "Train a character-level GPT on Shakespeare, checkpoint it, and sample from it")]
struct Args {
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Context length.
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Dropout.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// AdamW for everything, or Muon for the blocks' matrices and AdamW for the rest.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    optimizer: OptimizerKind,
    /// The largest gradient norm.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Seeds initialization, dropout and the data order.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Steps between validation passes.
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    /// Validation batches per pass (the whole validation text is about 800 windows).
    #[arg(long, default_value_t = 25)]
    eval_batches: usize,
    /// Where the checkpoint, the model, its configuration and its vocabulary go.
    #[arg(long, default_value = "runs/char_gpt")]
    out: PathBuf,
    /// Steps between checkpoints (0: only at the end).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Continue from `OUT/checkpoint` (bit-identical to an uninterrupted run).
    #[arg(long)]
    resume: bool,
    /// Sample from the model saved in this folder instead of training.
    #[arg(long)]
    load: Option<PathBuf>,
    /// The text sampling starts from.
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Characters to sample.
    #[arg(long, default_value_t = 500)]
    tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely characters.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seeds the sampler.
    #[arg(long, default_value_t = 0)]
    sample_seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: Some(args.top_k),
        seed: args.sample_seed,
    };
    if let Some(dir) = &args.load {
        let (model, vocab) = load(dir)?;
        return print_sample(&model, &vocab, &args.prompt, args.tokens, sampling);
    }
    let corpus = shakespeare();
    let vocab = Vocab::chars_of(&format!("{}{}", corpus.train, corpus.valid));
    let (train, valid) = windows(&vocab, corpus.train, corpus.valid, args.block_size)?;
    let train = DataLoader::new(train, Batching::MiniBatch(args.batch_size))?
        .shuffle(true)
        .seed(args.seed);
    let valid = DataLoader::new(valid, Batching::MiniBatch(args.batch_size))?;
    let config = GptConfig {
        vocab_size: vocab.len(),
        block_size: args.block_size,
        n_layer: args.layers,
        n_head: args.heads,
        d_model: args.d_model,
        dropout: args.dropout,
    };
    let recipe = Recipe {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        optimizer: args.optimizer,
        clip: args.clip,
        seed: args.seed,
    };
    let mut run = Run::new(config, &recipe, &train)?;
    println!(
        "char_gpt: {} parameters, vocabulary {}, {} training windows, {:?}, {} threads",
        run.store.num_parameters(),
        vocab.len(),
        train.dataset().len(),
        args.optimizer,
        taper::tensor::candle::utils::get_num_threads()
    );
    let ckpt = args.out.join("checkpoint");
    if args.resume {
        run.resume(&ckpt)?;
        println!("resumed at step {}", run.state.step);
    }
    let start = Instant::now();
    let first = run.state.step;
    let mut window_loss = (0.0, 0u64);
    run.train_until(&train, args.steps, |run, loss| {
        window_loss = (window_loss.0 + loss, window_loss.1 + 1);
        let step = run.state.step;
        if step % args.eval_every == 0 || step == args.steps {
            let val = bits_per_char(&run.model, &valid, args.eval_batches)?;
            let secs = start.elapsed().as_secs_f64();
            let tokens = (step - first) as f64 * (args.batch_size * args.block_size) as f64;
            println!(
                "step {step:>5}  train {:.3} bpc  val {val:.3} bpc  lr {:.2e}  {:.0} tokens/s  {:.1} min",
                window_loss.0 / window_loss.1 as f64 / std::f64::consts::LN_2,
                run.opt.group_lr(0).unwrap_or(f64::NAN),
                tokens / secs,
                secs / 60.0
            );
            window_loss = (0.0, 0);
        }
        if args.checkpoint_every > 0 && step % args.checkpoint_every == 0 {
            run.save(&ckpt)?;
        }
        Ok(())
    })?;
    run.save(&ckpt)?;
    save(&args.out, &run.model, &run.store, &vocab)?;
    let val = bits_per_char(&run.model, &valid, usize::MAX)?;
    println!(
        "final: validation {val:.3} bits per character over the whole validation text, after {} steps in {:.1} min; saved to {}",
        run.state.step,
        start.elapsed().as_secs_f64() / 60.0,
        args.out.display()
    );
    print_sample(&run.model, &vocab, &args.prompt, args.tokens, sampling)
}

/// The model's weights, its configuration and its vocabulary, side by side.
fn save(dir: &std::path::Path, model: &Gpt, store: &ParamStore, vocab: &Vocab) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| taper::tensor::Error::File {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    store.save(dir.join("model.safetensors"))?;
    let config = serde_json::to_vec_pretty(&model.config()).expect("a config serializes");
    taper::tensor::write_atomic(dir.join("config.json"), &config)?;
    vocab.save(dir.join("vocab.json"))?;
    Ok(())
}

/// What [`save`] wrote.
fn load(dir: &std::path::Path) -> Result<(Gpt, Vocab)> {
    let vocab = Vocab::load(dir.join("vocab.json"))?;
    let path = dir.join("config.json");
    let file_error = |reason: String| taper::tensor::Error::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
    let config: GptConfig = serde_json::from_str(&text)
        .map_err(|e| file_error(format!("not a char_gpt configuration: {e}")))?;
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Gpt::new(config, &store)?;
    store.load(dir.join("model.safetensors"), LoadMode::Strict)?;
    Ok((model, vocab))
}

fn print_sample(model: &Gpt, vocab: &Vocab, prompt: &str, n: usize, s: Sampling) -> Result<()> {
    let ids = generate(model, &vocab.encode(prompt)?, n, s)?;
    println!(
        "--- sample (temperature {}, top-k {:?}, seed {}) ---\n{prompt}{}",
        s.temperature,
        s.top_k,
        s.seed,
        vocab.decode(&ids)?
    );
    Ok(())
}
