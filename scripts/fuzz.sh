#!/usr/bin/env bash
# Coverage-guided fuzzing of Taper's file readers with cargo-fuzz (libFuzzer), for a fixed
# time per target. Not part of CI (.ci/run runs the structure-aware fuzz tests instead).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Seeds: the built-in MNIST IDX files and a freshly written checkpoint's files.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly); nothing fuzzed" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz); nothing fuzzed" >&2
    exit 1
fi

# Seed corpora.
mkdir -p fuzz/corpus/idx fuzz/corpus/safetensors
cp crates/taper-data/data/mnist-10k/*-ubyte* fuzz/corpus/idx/ 2>/dev/null || true
# The checkpoint example writes runs/checkpoint/step-*/{model,optimizer,state}.safetensors.
cargo run --quiet --release --example checkpoint >/dev/null
for f in runs/checkpoint/*/*.safetensors; do
    cp "$f" "fuzz/corpus/safetensors/$(basename "$(dirname "$f")")-$(basename "$f")"
done

for target in idx safetensors; do
    echo "== fuzzing $target for ${secs}s"
    # -rss_limit_mb caps memory: a reader that allocates by what a header claims fails here.
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576
done
echo "fuzz.sh: no crash in $(( 2 * secs ))s of fuzzing"
