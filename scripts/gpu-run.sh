#!/usr/bin/env bash
# Runs the binaries scripts/pack-gpu.sh packed, on a GPU machine with a CUDA 13 driver and
# the CUDA 13 runtime libraries in Python's nvidia/cu13/lib (cuBLAS, cuRAND, NVRTC, cudart;
# the pip wheels torch depends on), from the repository root. Outputs go to $OUT (the device
# tool's folder) when set, else /tmp/taper-gpu-out. Every step runs even when one fails; the
# exit status is the number of steps that failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/taper-gpu-out}
mkdir -p "$out"

# The CUDA 13 libraries: $TAPER_CU13_LIB, else Python's nvidia/cu13/lib.
cu13_lib=${TAPER_CU13_LIB:-}
if [ -z "$cu13_lib" ]; then
    cu13_lib=$(python3 -c '
import importlib.util, os
spec = importlib.util.find_spec("nvidia.cu13")
print(os.path.join(list(spec.submodule_search_locations)[0], "lib"))
' 2>/dev/null) || true
fi
if [ -z "$cu13_lib" ] || [ ! -e "$cu13_lib/libcublas.so.13" ]; then
    echo "gpu-run: no CUDA 13 libraries found (set TAPER_CU13_LIB to a folder with libcublas.so.13)"
    exit 1
fi
export LD_LIBRARY_PATH="$cu13_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "CUDA libraries: $cu13_lib"
nvidia-smi -L 2>&1 | tee "$out/gpu.txt" || true

failed=0
step() {
    local name=$1
    shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

step gpu-suite "$here/bin/gpu" --nocapture --test-threads 1
step bench-gpu "$here/bin/bench_gpu"
step mnist-cuda "$here/bin/mnist" --device cuda --epochs 2 --out "$out/mnist"
exit "$failed"
