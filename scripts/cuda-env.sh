# shellcheck shell=bash
# Source this file (`. scripts/cuda-env.sh`) to compile Taper's `cuda` and `nccl` features on
# a machine without a CUDA toolkit: it installs the pinned CUDA 13.0 compiler wheels from
# PyPI into a virtual environment and exports PATH, CUDA_COMPUTE_CAP and friends.
#
# Pinned to 13.0.x: pip's default (13.5) is newer than cudarc 0.19 accepts and than what a
# 580 driver loads. CUDA_COMPUTE_CAP=90 (H100/H200) lets candle-kernels' build skip
# nvidia-smi. Enough for `cargo check`/`clippy`; linking a CUDA binary also needs
# libcuda.so, which only a GPU driver provides.
#
# NCCL is pinned to 2.30, the API version cudarc 0.19's `nccl` feature binds.
#
# Returns 1, saying why, when a wheel cannot be installed; the caller decides to skip.

TAPER_CUDA_VENV="${TAPER_CUDA_VENV:-$HOME/.cache/taper-cuda-venv}"
taper_cuda_wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-nccl-cu13==2.30.7
)

taper_cuda_env() {
    if [ ! -x "$TAPER_CUDA_VENV/bin/pip" ]; then
        python3 -m venv "$TAPER_CUDA_VENV" || {
            echo "note: could not create a Python venv at $TAPER_CUDA_VENV"
            return 1
        }
    fi
    "$TAPER_CUDA_VENV/bin/pip" install --quiet "${taper_cuda_wheels[@]}" >/dev/null 2>&1 || {
        echo "note: could not pip install the CUDA 13.0 wheels (${taper_cuda_wheels[*]})"
        return 1
    }
    local cu13
    cu13=$(ls -d "$TAPER_CUDA_VENV"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1)
    if [ -z "$cu13" ] || [ ! -x "$cu13/bin/nvcc" ]; then
        echo "note: the CUDA wheels installed, but nvcc is not under site-packages/nvidia/cu13"
        return 1
    fi
    # Unversioned names for the linker, as a toolkit would have them.
    local lib
    for lib in "$cu13"/lib/lib*.so.*; do
        local base="${lib%%.so.*}.so"
        [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
    done
    export CUDA_ROOT="$cu13" CUDA_PATH="$cu13" CUDA_HOME="$cu13"
    # Prepended once: sourcing twice leaves the environment as it was, so cargo does not
    # rerun candle-kernels' nvcc build for a changed PATH.
    case ":$PATH:" in *":$cu13/bin:"*) ;; *) export PATH="$cu13/bin:$PATH" ;; esac
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$cu13/lib:"*) ;;
        *) export LD_LIBRARY_PATH="$cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    echo "CUDA: $(nvcc --version | tail -n1) from $cu13, compute capability $CUDA_COMPUTE_CAP"
}

taper_cuda_env
