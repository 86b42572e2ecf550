#!/usr/bin/env bash
# Regenerates crates/taper-nn/src/onnx/proto.rs (prost types for ONNX's official
# onnx.proto3, committed so that building Taper needs no protoc). Needs protoc
# (`apt-get install protobuf-compiler`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo run --quiet --manifest-path "$root/scripts/onnx-proto/Cargo.toml" -- "$root"
rustfmt --edition 2021 "$root/crates/taper-nn/src/onnx/proto.rs"
