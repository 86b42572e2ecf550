"""PyTorch's side of `cargo run --release --example bench_mlp`: epochs of an MLP 784-256-10
with Adam (lr 1e-3), batch 64, on the training images of an MNIST-format directory, with
torch.optim.Adam's default (foreach) implementation and with fused=True.

Usage: python3 torch_mlp_epoch.py DIR [LIMIT] [EPOCHS]
  -> prints one JSON line per variant: {"variant": ..., "samples_per_s": [per epoch], ...}
"""
import json
import sys
import time

import numpy as np
import torch

from mnist_idx import idx


d = sys.argv[1]
limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
x = torch.from_numpy(idx(d + "/train-images-idx3-ubyte.gz").astype(np.float32) / 255.0).reshape(-1, 784)
y = torch.from_numpy(idx(d + "/train-labels-idx1-ubyte.gz").astype(np.int64))
if limit:
    x, y = x[:limit], y[:limit]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
for variant, kwargs in (("foreach", {}), ("fused", {"fused": True})):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kwargs)
    rates = []
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        t = time.perf_counter()
        for i in range(0, len(x), 64):
            idx_b = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx_b]), y[idx_b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(len(x) / (time.perf_counter() - t))
    print(json.dumps({"variant": variant, "samples_per_s": rates, "threads": torch.get_num_threads(),
                      "version": torch.__version__, "final_loss": loss.item()}))
