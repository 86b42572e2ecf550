"""PyTorch's side of `cargo run --release --example bench_optimizers`: one optimizer step over
10M float32 parameters in 8 tensors, fused and foreach, median of repeated steps.

Also one Muon step on a 1024x1024 parameter (its Newton-Schulz iteration in bfloat16, as
PyTorch runs it).

Prints one JSON line: {"adam_fused_ms": ..., "adam_foreach_ms": ..., "sgd_foreach_ms": ...,
"muon_1024_ms": ..., "threads": ...}
"""
import json
import sys
import time

import torch

n_total, parts = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000, 8
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
torch.manual_seed(0)
params = [torch.randn(n_total // parts, requires_grad=True) for _ in range(parts)]
for p in params:
    p.grad = torch.randn_like(p)


def timed(opt):
    for _ in range(3):
        opt.step()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        opt.step()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return 1e3 * ts[len(ts) // 2]


w = torch.randn(1024, 1024, requires_grad=True)
w.grad = torch.randn_like(w)
muon_reps, reps = reps, min(reps, 5)
muon_ms = timed(torch.optim.Muon([w], lr=0.02))
reps = muon_reps

out = {
    "muon_1024_ms": muon_ms,
    "adam_fused_ms": timed(torch.optim.Adam(params, lr=1e-3, fused=True)),
    "adam_foreach_ms": timed(torch.optim.Adam(params, lr=1e-3, foreach=True)),
    "sgd_foreach_ms": timed(torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)),
    "threads": torch.get_num_threads(),
    "torch": torch.__version__,
}
print(json.dumps(out))
