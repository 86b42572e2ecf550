"""PyTorch's side of `cargo run --release --example bench_gpt`: the char_gpt example's model
(token + learned position embeddings, a pre-norm GELU nn.TransformerEncoder with a final
LayerNorm run with a causal mask, the output layer tied to the token embedding), trained
with AdamW (betas (0.9, 0.95), weight decay 0.1, torch's default foreach implementation)
and clip_grad_norm_(1.0) on random windows of token ids; plus the machine's f32 matmul rate
through torch.mm (a 1024^3 sgemm), measured in the same process.

Usage: python3 torch_gpt.py VOCAB BLOCK LAYERS D_MODEL HEADS BATCH STEPS WARMUP
  -> one JSON line: {"version", "threads", "tokens_per_s": [per timed step], "final_loss",
     "matmul_gflops", "peak_mib"}
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Gpt(nn.Module):
    def __init__(self, vocab, block, layers, d, heads, dropout):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        nn.init.normal_(self.wte.weight, std=0.02)
        self.wpe = nn.Parameter(torch.zeros(block, d))
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.h = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d),
                                       enable_nested_tensor=False)
        self.drop = dropout

    def forward(self, ids):
        l = ids.shape[1]
        x = F.dropout(self.wte(ids) + self.wpe[:l], self.drop, self.training)
        mask = nn.Transformer.generate_square_subsequent_mask(l)
        x = self.h(x, mask=mask, is_causal=True)
        return x @ self.wte.weight.t()


def peak_mib():
    """VmHWM: this process's own peak (getrusage's ru_maxrss survives the exec from the
    Rust parent, so it would report the parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def matmul_gflops(n=1024, seconds=1.0):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def main():
    vocab, block, layers, d, heads, batch, steps, warmup = map(int, sys.argv[1:9])
    torch.manual_seed(0)
    model = Gpt(vocab, block, layers, d, heads, 0.1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.randint(0, vocab, (200_000,))
    rates, loss = [], None
    for step in range(warmup + steps):
        starts = torch.randint(0, len(data) - block - 1, (batch,))
        x = torch.stack([data[s:s + block] for s in starts])
        y = torch.stack([data[s + 1:s + block + 1] for s in starts])
        t0 = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= warmup:
            rates.append(batch * block / (time.perf_counter() - t0))
    print(json.dumps({
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "tokens_per_s": rates,
        "final_loss": loss.item(),
        "matmul_gflops": matmul_gflops(),
        "peak_mib": peak_mib(),
    }))


if __name__ == "__main__":
    main()
