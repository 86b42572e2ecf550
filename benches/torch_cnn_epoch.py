"""PyTorch's side of `cargo run --release --example bench_cnn`: the mnist example's CNN
(conv 1->16 5x5 pad 2, ReLU, max-pool 2, conv 16->32 5x5 pad 2, ReLU, max-pool 2,
linear 1568->128, ReLU, linear 128->10), also with BatchNorm2d after each conv, and
PyTorch's own MNIST example network (net3x3: conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU,
max-pool 2, dropout 0.25, linear 9216->128, ReLU, dropout 0.5, linear 128->10), each trained with Adam (lr 1e-3, torch's default foreach implementation), batch 64, on the
training images of an MNIST-format directory; then inference (forward only, no_grad,
batch 1000) over the test images.

Usage: python3 torch_cnn_epoch.py DIR [LIMIT] [EPOCHS]
  -> one JSON line per network: {"variant", "train_samples_per_s": [per epoch],
     "infer_samples_per_s": [per epoch], "threads", "version", "final_loss"}
"""
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from mnist_idx import idx


def images(d, name):
    return torch.from_numpy(idx(f"{d}/{name}-images-idx3-ubyte.gz").astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)


def net3x3():
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(128, 10))


def net(bn):
    def block(cin, cout):
        layers = [nn.Conv2d(cin, cout, 5, padding=2)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        return layers + [nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(),
                         nn.Linear(128, 10))


d = sys.argv[1]
limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
x = images(d, "train")
y = torch.from_numpy(idx(d + "/train-labels-idx1-ubyte.gz").astype(np.int64))
xt = images(d, "t10k")
if limit:
    x, y = x[:limit], y[:limit]
for variant in ("cnn", "cnn-bn", "net3x3"):
    torch.manual_seed(0)
    model = net3x3() if variant == "net3x3" else net(variant == "cnn-bn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train, infer = [], []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        t = time.perf_counter()
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        train.append(len(x) / (time.perf_counter() - t))
        model.eval()
        t = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(xt), 1000):
                model(xt[i:i + 1000])
        infer.append(len(xt) / (time.perf_counter() - t))
    print(json.dumps({"variant": variant, "train_samples_per_s": train, "infer_samples_per_s": infer,
                      "threads": torch.get_num_threads(), "version": torch.__version__,
                      "final_loss": loss.item()}), flush=True)
