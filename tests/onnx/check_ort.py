"""Checks every ONNX model Taper exported into a directory with ONNX itself and ONNX Runtime.

For each NAME.onnx beside NAME.safetensors (inputs `x0`, `x1`, … of different batch sizes and
Taper's outputs `y0`, `y1`, …):
- `onnx.checker.check_model(model, full_check=True)` (structure, types and shape inference);
- ONNX Runtime's CPU outputs against Taper's, |ort - taper| <= 1e-5 * max(1, |taper|).
Prints one line per model and exits 1 if any fails. Needs `pip install onnx onnxruntime
safetensors numpy`.
"""
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

TOL = 1e-5


def check(path: pathlib.Path) -> str | None:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    data = load_file(str(path.with_suffix(".safetensors")))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    k = 0
    worst = 0.0
    while f"x{k}" in data:
        x = data[f"x{k}"]
        if inp.type == "tensor(int64)":
            x = x.astype(np.int64)
        (y,) = sess.run(["output"], {inp.name: x})
        want = data[f"y{k}"]
        if y.shape != want.shape:
            return f"batch {x.shape[0]}: ONNX Runtime gives shape {y.shape}, Taper {want.shape}"
        err = np.max(np.abs(y - want) / np.maximum(1.0, np.abs(want)), initial=0.0)
        worst = max(worst, float(err))
        if not err <= TOL:
            return f"batch {x.shape[0]}: relative difference {err:.3g} > {TOL}"
        k += 1
    if k < 2:
        return "fewer than two batch sizes to compare"
    print(f"ok   {path.stem}: {k} batch sizes, worst relative difference {worst:.2e}")
    return None


def main() -> int:
    failed = 0
    for path in sorted(pathlib.Path(sys.argv[1]).glob("*.onnx")):
        try:
            reason = check(path)
        except Exception as e:  # the checker's and the runtime's errors
            reason = f"{type(e).__name__}: {e}"
        if reason:
            failed += 1
            print(f"FAIL {path.stem}: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
