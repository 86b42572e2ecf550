"""PyTorch's side of `bench_gpu` (examples/bench_gpu.rs), on the first CUDA GPU.

Usage:
  python3 torch_gpu.py adam MILLIONS[,MILLIONS...] STEPS
      -> one JSON line per size: seconds per `y.copy_(x)` and per fused Adam step (float32)
  python3 torch_gpu.py mlp DIR EPOCHS
      -> one JSON line per Adam variant (foreach, fused): the best epoch's samples/s of an
         MLP 784-256-10, batch 64, on DIR's training images, each batch copied to the GPU

Exits with status 1, printing nothing, when no CUDA GPU is available.
TAPER_BENCH_DEVICE=cpu runs the same code on the CPU, to check the script anywhere.
"""
import json
import os
import sys
import time

import numpy as np
import torch

from mnist_idx import idx

dev = torch.device(os.environ.get("TAPER_BENCH_DEVICE", "cuda"))
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit(1)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(f, steps):
    for _ in range(3):
        f()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        f()
    sync()
    return (time.perf_counter() - t) / steps


if sys.argv[1] == "adam":
    steps = int(sys.argv[3])
    for m in map(int, sys.argv[2].split(",")):
        n = m * 1_000_000
        x, y = torch.ones(n, device=dev), torch.empty(n, device=dev)
        copy_s = timed(lambda: y.copy_(x), steps)
        del x, y
        w = torch.nn.Parameter(torch.ones(n, device=dev))
        w.grad = torch.full((n,), 0.01, device=dev)
        opt = torch.optim.Adam([w], lr=1e-3, fused=True)
        adam_s = timed(opt.step, steps)
        del w, opt
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps({"millions": m, "copy_s": copy_s, "fused_adam_s": adam_s,
                          "version": torch.__version__}))
elif sys.argv[1] == "mlp":
    d, epochs = sys.argv[2], int(sys.argv[3])
    x = torch.from_numpy(idx(d + "/train-images-idx3-ubyte.gz").astype(np.float32) / 255.0)
    x = x.reshape(-1, 784)
    y = torch.from_numpy(idx(d + "/train-labels-idx1-ubyte.gz").astype(np.int64))
    for variant, kwargs in (("foreach", {}), ("fused", {"fused": True})):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                    torch.nn.Linear(256, 10)).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kwargs)
        best = 0.0
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            sync()
            t = time.perf_counter()
            for i in range(0, len(x), 64):
                b = perm[i:i + 64]
                xb, yb = x[b].to(dev), y[b].to(dev)
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sync()
            best = max(best, len(x) / (time.perf_counter() - t))
        print(json.dumps({"variant": variant, "samples_per_s": best, "version": torch.__version__}))
