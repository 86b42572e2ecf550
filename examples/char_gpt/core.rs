//! The character-level GPT of the `char_gpt` example, shared with its end-to-end test and
//! with `bench_gpt`: the model (a decoder-only transformer with tied input and output
//! embeddings), its optimizers (AdamW, or Muon for the matrices and AdamW for the rest),
//! training with warmup + cosine, clipping and checkpoints, evaluation in bits per
//! character, and sampling.

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use taper::data::text::{TokenWindows, Vocab};
use taper::nn::{
    cross_entropy, dropout, EncoderArgs, FeedForwardActivation, PositionalEmbedding,
    TransformerConfig, TransformerEncoder,
};
use taper::optim::{
    Adam, AdjustLr, Clip, CosineAnnealingLr, LrScheduler, Muon, OptimizerSet, SequentialLr,
    WeightDecay,
};
use taper::prelude::*;
use taper::tensor::{candle, Norm};
use taper::train::{Checkpoint, TrainState};

/// The model's shape: nanoGPT's `GPTConfig` without biases off (Taper's layers keep
/// PyTorch's default biases).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// The longest context (positions).
    pub block_size: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// The embedding width.
    pub d_model: usize,
    /// Dropout after the embeddings, in attention and in each block.
    pub dropout: f64,
}

impl GptConfig {
    /// Parameters of the model: embeddings, blocks, final norm (the output layer is the
    /// token embedding).
    pub fn parameters(&self) -> usize {
        let (v, b, d, l) = (self.vocab_size, self.block_size, self.d_model, self.n_layer);
        let block = 3 * d * d + 3 * d + d * d + d + 2 * (4 * d * d) + 4 * d + d + 4 * d;
        v * d + b * d + l * block + 2 * d
    }

    /// Floating-point operations of one training token: 6 per parameter multiply
    /// (forward 2, backward 4) plus attention's 6·2·L·d per layer for a full block
    /// (PaLM's appendix B count; causal masking does not halve the dense kernels).
    pub fn train_flops_per_token(&self) -> f64 {
        let matmul_params = (self.parameters() - self.block_size * self.d_model) as f64;
        6.0 * matmul_params + 12.0 * (self.n_layer * self.block_size * self.d_model) as f64
    }
}

/// The model: `wte` (token embedding), `wpe` (learned positions), `h` (a pre-norm GELU
/// `TransformerEncoder` with a final norm, run with a causal mask) and the output layer,
/// which is `wte.weight` (tied, through `store.shared`).
pub struct Gpt {
    wte: Embedding,
    wpe: PositionalEmbedding,
    h: TransformerEncoder,
    head: Tensor,
    config: GptConfig,
}

impl Gpt {
    /// The model over `store`, initialized as GPT-2: every matrix and embedding N(0, 0.02),
    /// biases 0, norms 1.
    pub fn new(config: GptConfig, store: &ParamStore) -> Result<Self> {
        let d = config.d_model;
        let wte = Embedding::new(config.vocab_size, d, &store.sub("wte"))?;
        let wpe = PositionalEmbedding::new(config.block_size, d, &store.sub("wpe"))?;
        let h = TransformerConfig::new(d, config.n_head)
            .dim_feedforward(4 * d)
            .dropout(config.dropout)
            .activation(FeedForwardActivation::Gelu)
            .batch_first(true)
            .norm_first(true)
            .encoder(config.n_layer, true, &store.sub("h"))?;
        let head = store.shared("wte.weight")?;
        for (name, var) in store.named_parameters() {
            let t = var.as_tensor();
            let value = if t.rank() == 2 {
                randn(t.dims(), 0.0, 0.02, t.dtype(), t.device())?
            } else if name.ends_with("bias") {
                t.zeros_like()?
            } else {
                continue;
            };
            var.set(&value)?;
        }
        Ok(Self {
            wte,
            wpe,
            h,
            head,
            config,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> GptConfig {
        self.config
    }

    /// Next-token logits (N, L, vocab) of token ids (N, L), L ≤ `block_size`.
    pub fn logits(&self, ids: &Tensor, train: bool) -> candle::Result<Tensor> {
        let x = self.wpe.forward(&self.wte.forward(ids)?)?;
        let x = dropout(&x, self.config.dropout, train)?;
        let causal = EncoderArgs {
            is_causal: true,
            ..Default::default()
        };
        let x = self.h.encode(&x, causal, train)?;
        x.broadcast_matmul(&tracked(&self.head).t()?)
    }

    /// The mean cross-entropy (nats per token) of predicting `targets` (N, L) from `ids`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.logits(ids, train)?;
        let (n, l, v) = logits.dims3()?;
        Ok(cross_entropy(
            &logits.reshape((n * l, v))?,
            &targets.reshape(n * l)?,
        )?)
    }
}

/// Which optimizers train the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// AdamW (β = (0.9, 0.95)) with weight decay 0.1 on matrices and embeddings, none on
    /// biases and norms.
    Adamw,
    /// Muon for the blocks' matrices (learning rate matched to AdamW's RMS), AdamW for the
    /// embeddings, biases and norms.
    Muon,
}

/// The training recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recipe {
    /// Optimizer steps in all.
    pub steps: u64,
    /// Sequences per step.
    pub batch_size: usize,
    /// The peak learning rate.
    pub lr: f64,
    /// Linear warmup steps (from lr/100), then cosine to 0 at `steps`.
    pub warmup: u64,
    /// The optimizers.
    pub optimizer: OptimizerKind,
    /// The largest total gradient norm (clip_grad_norm_ over every parameter).
    pub clip: f64,
    /// Seeds initialization, dropout and the data order.
    pub seed: u64,
}

/// The optimizers of `recipe` over `store`'s parameters, with its clipping.
fn optimizers(store: &ParamStore, recipe: &Recipe) -> Result<OptimizerSet> {
    let adamw = |lr: f64, wd: f64| {
        Adam::adamw(lr)
            .betas(0.9, 0.95)
            .weight_decay(WeightDecay::Decoupled(wd))
    };
    let params = store.trainable();
    let (matrices, rest): (Vec<_>, Vec<_>) = params.into_iter().partition(|(_, v)| v.rank() == 2);
    let set = match recipe.optimizer {
        OptimizerKind::Adamw => OptimizerSet::new()
            .add(
                "decay",
                Optimizer::from_vars(adamw(recipe.lr, 0.1), matrices)?,
            )?
            .add(
                "no_decay",
                Optimizer::from_vars(adamw(recipe.lr, 0.0), rest)?,
            )?,
        OptimizerKind::Muon => {
            // Muon for the hidden matrices; the embeddings (the tied output layer) stay
            // with AdamW, as in Keller Jordan's recipe.
            let (hidden, embeddings): (Vec<_>, Vec<_>) =
                matrices.into_iter().partition(|(n, _)| n.starts_with("h."));
            let muon = Muon::new(recipe.lr)
                .adjust_lr(AdjustLr::MatchRmsAdamW)
                .weight_decay(WeightDecay::Decoupled(0.1));
            OptimizerSet::new()
                .add("muon", Optimizer::from_vars(muon, hidden)?)?
                .add(
                    "decay",
                    Optimizer::from_vars(adamw(recipe.lr, 0.1), embeddings)?,
                )?
                .add(
                    "no_decay",
                    Optimizer::from_vars(adamw(recipe.lr, 0.0), rest)?,
                )?
        }
    };
    Ok(set.clip(Clip::Norm {
        max_norm: recipe.clip,
        norm: Norm::L2,
    })?)
}

/// The schedule: linear warmup from 1% of the peak, then cosine to 0 at the last step.
type Schedule = LrScheduler<SequentialLr>;

fn schedule(recipe: &Recipe, opt: &mut OptimizerSet) -> Result<Schedule> {
    let cosine = CosineAnnealingLr::new(recipe.steps.saturating_sub(recipe.warmup).max(1));
    Ok(LrScheduler::new(
        SequentialLr::warmup(recipe.warmup.max(1), 0.01, Box::new(cosine)),
        opt,
    )?)
}

/// Everything that changes while training: resumable as one checkpoint.
pub struct Run {
    /// The parameters.
    pub store: ParamStore,
    /// The model over them.
    pub model: Gpt,
    /// The optimizers.
    pub opt: OptimizerSet,
    /// The learning-rate schedule.
    pub sched: Schedule,
    /// Steps, data order and RNG position.
    pub state: TrainState,
}

impl Run {
    /// A new run: the model initialized from `recipe.seed`.
    pub fn new<D: Dataset>(
        config: GptConfig,
        recipe: &Recipe,
        loader: &DataLoader<D>,
    ) -> Result<Self> {
        manual_seed(recipe.seed);
        let store = ParamStore::new(&Device::Cpu, DType::F32);
        let model = Gpt::new(config, &store)?;
        let mut opt = optimizers(&store, recipe)?;
        let sched = schedule(recipe, &mut opt)?;
        Ok(Self {
            store,
            model,
            opt,
            sched,
            state: TrainState::for_loader(loader),
        })
    }

    /// Trains until `state.step == until` (or the loader's epochs run on), calling
    /// `after_step(run, loss)` after each step.
    pub fn train_until<D: Dataset>(
        &mut self,
        loader: &DataLoader<D>,
        until: u64,
        mut after_step: impl FnMut(&Run, f64) -> Result<()>,
    ) -> Result<()> {
        while self.state.step < until {
            for batch in self.state.batches(loader)? {
                let b = batch?;
                let loss = self.model.loss(&b.inputs, &b.targets, true)?;
                self.opt.backward_step(&loss)?;
                self.sched.step(&mut self.opt)?;
                self.state.finish_batch();
                after_step(self, loss.to_scalar::<f32>()? as f64)?;
                if self.state.step >= until {
                    return Ok(());
                }
            }
            self.state.finish_epoch();
        }
        Ok(())
    }

    /// Writes a checkpoint (weights, optimizers, schedule, data position, RNG) to `dir`,
    /// atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        Checkpoint::capture(&self.store, &self.opt, self.state.clone())?
            .add_state("schedule", &self.sched)?
            .save(dir)?;
        Ok(())
    }

    /// Continues from the checkpoint in `dir`; a checkpoint that does not fit this run is
    /// an error and changes nothing.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let ckpt = Checkpoint::load(dir)?;
        ckpt.restore(
            &self.store,
            &mut self.opt,
            &mut [("schedule", &mut self.sched)],
        )?;
        self.state = ckpt.train;
        Ok(())
    }

    /// Every weight's bits, to compare runs exactly.
    pub fn weight_bits(&self) -> Result<Vec<u32>> {
        let mut bits = Vec::new();
        for (_, t) in self.store.state_dict() {
            bits.extend(
                t.flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|x| x.to_bits()),
            );
        }
        Ok(bits)
    }
}

/// Validation bits per character: the mean loss over (at most) `max_batches` batches of
/// `loader`, in bits (nats / ln 2).
pub fn bits_per_char<D: Dataset>(
    model: &Gpt,
    loader: &DataLoader<D>,
    max_batches: usize,
) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for batch in loader.epoch(0).take(max_batches) {
        let b = batch?;
        let loss = no_grad(|| model.loss(&b.inputs, &b.targets, false))?;
        sum += loss.to_scalar::<f32>()? as f64;
        n += 1;
    }
    Ok(sum / n.max(1) as f64 / std::f64::consts::LN_2)
}

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Divides the logits (1 samples from the model; towards 0, greedy).
    pub temperature: f64,
    /// Sample among the `k` most likely tokens only (None: all).
    pub top_k: Option<usize>,
    /// Seeds the sampler.
    pub seed: u64,
}

/// `n` new tokens after `prompt`, sampled one at a time from the last `block_size`
/// tokens' logits.
pub fn generate(model: &Gpt, prompt: &[u32], n: usize, sampling: Sampling) -> Result<Vec<u32>> {
    if sampling.temperature <= 0.0 || !sampling.temperature.is_finite() {
        return Err(taper::tensor::Error::InvalidValue {
            field: "temperature",
            value: sampling.temperature.to_string(),
            expected: "a finite temperature above 0",
        }
        .into());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sampling.seed);
    let mut ids = prompt.to_vec();
    let block = model.config().block_size;
    for _ in 0..n {
        let context = &ids[ids.len().saturating_sub(block)..];
        let x = Tensor::from_slice(context, (1, context.len()), &Device::Cpu)?;
        let logits = no_grad(|| model.logits(&x, false))?;
        let last: Vec<f32> = logits.get(0)?.get(context.len() - 1)?.to_vec1()?;
        ids.push(sample(&last, sampling, &mut rng));
    }
    Ok(ids[prompt.len()..].to_vec())
}

/// One id from `logits / temperature`, restricted to the top k.
fn sample(logits: &[f32], s: Sampling, rng: &mut impl Rng) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(s.top_k.unwrap_or(logits.len()).clamp(1, logits.len()));
    let max = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / s.temperature).exp())
        .collect();
    let mut r = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        if r < *w {
            return i as u32;
        }
        r -= w;
    }
    order[order.len() - 1] as u32
}

/// The training and validation windows of `text`'s two parts under `vocab`: every offset
/// for training, non-overlapping windows for validation.
pub fn windows(
    vocab: &Vocab,
    train: &str,
    valid: &str,
    block_size: usize,
) -> Result<(TokenWindows, TokenWindows)> {
    Ok((
        TokenWindows::new(&vocab.encode(train)?, block_size)?,
        TokenWindows::new(&vocab.encode(valid)?, block_size)?.stride(block_size)?,
    ))
}
