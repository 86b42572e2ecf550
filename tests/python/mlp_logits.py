"""Recomputes a Taper MLP's logits from its checkpoint with safetensors and numpy only.

Usage: python3 mlp_logits.py MODEL.safetensors INPUT.json  -> prints the logits as JSON.
The model is Sequential(Linear, ReLU, Linear) with PyTorch's names: 0.weight, 0.bias,
2.weight, 2.bias (weights are (out, in)).
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file

w = load_file(sys.argv[1])
x = np.array(json.load(open(sys.argv[2])), dtype=np.float64)
h = np.maximum(x @ w["0.weight"].astype(np.float64).T + w["0.bias"], 0.0)
y = h @ w["2.weight"].astype(np.float64).T + w["2.bias"]
print(json.dumps(y.tolist()))
