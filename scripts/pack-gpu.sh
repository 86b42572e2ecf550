#!/usr/bin/env bash
# Builds Taper's CUDA binaries here (no GPU, no CUDA toolkit needed) and packs them for a GPU
# machine that has the CUDA 13 runtime libraries but no Rust: the `device` tool's machines,
# whose carry limit is 64 MiB. Prints the one command that unpacks and runs them there.
#
#   bash scripts/pack-gpu.sh            # -> target/gpu-pack/taper-gpu.tar.xz
#
# Built with `--release --features cuda`, linked against the pinned CUDA 13.0 wheels and a
# stub libcuda (`. scripts/cuda-env.sh link`); on the GPU machine the driver's libcuda.so.1
# and its Python venv's nvidia/cu13/lib (cuBLAS, cuRAND, NVRTC, cudart) are used instead.
# Packed: the GPU suite (tests/gpu.rs), the GPU benchmark (examples/bench_gpu.rs), the mnist
# example, and scripts/gpu-run.sh as run.sh. Run from the repository root; the binaries read
# benches/ and the data from the working directory there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! . scripts/cuda-env.sh link; then
    echo "pack-gpu: the CUDA wheels or the stub could not be set up (see above)" >&2
    exit 1
fi

out=target/gpu-pack
rm -rf "$out"
mkdir -p "$out/taper-gpu/bin"

cargo build --release --features cuda --example mnist --example bench_gpu
suite=$(cargo test --release --features cuda --test gpu --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])
')
[ -x "$suite" ] || { echo "pack-gpu: no GPU suite binary was built" >&2; exit 1; }

strip -o "$out/taper-gpu/bin/gpu" "$suite"
for ex in mnist bench_gpu; do
    strip -o "$out/taper-gpu/bin/$ex" "target/release/examples/$ex"
done
cp scripts/gpu-run.sh "$out/taper-gpu/run.sh"
chmod +x "$out/taper-gpu/run.sh"

# One xz stream with a 64 MiB dictionary: the binaries share candle's CUDA kernels, which
# are then stored once.
tar -C "$out" -cf - taper-gpu | xz -9e -T1 >"$out/taper-gpu.tar.xz"
rm -rf "$out/taper-gpu"
bytes=$(stat -c %s "$out/taper-gpu.tar.xz")
limit=$((64 * 1024 * 1024))
awk -v f="$out/taper-gpu.tar.xz" -v b="$bytes" \
    'BEGIN { printf "pack-gpu: %s is %.1f MiB (limit 64 MiB)\n", f, b / 1048576 }'
if [ "$bytes" -gt "$limit" ]; then
    echo "pack-gpu: the pack is over the 64 MiB carry limit" >&2
    exit 1
fi

cat <<MSG
On the GPU machine, from the repository root (device tool: carry ["$out"]):

  tar -xJf $out/taper-gpu.tar.xz -C /tmp && bash /tmp/taper-gpu/run.sh

run.sh prints the GPU, runs the GPU suite, the GPU benchmark (PyTorch beside it) and
mnist --device cuda for 2 epochs, and copies each output to \$OUT when it is set.
MSG
