#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md ("vLLM in-process"), step by step.
#
# The GPU machine has torch 2.11.0+cu130 and Python 3.12, no internet and no vllm; it takes
# only what is carried to it (64 MiB per call), and keeps files between calls while warm.
# So: download vLLM's wheels here, cut them into pieces, carry one piece per call, join and
# install there, then measure.
#
#   scripts/gpu_procedure.sh prepare        # here: wheels -> .gpu/pieces/, student folder
#   scripts/gpu_procedure.sh install DIR    # there: join DIR/pieces, pip install offline
#   scripts/gpu_procedure.sh measure        # there: conformance on vLLM, then the benchmark
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_VERSION=${VLLM_VERSION:-0.26.0}   # pins torch 2.11.0, the image's
PIECE=${PIECE:-60M}

case "${1:-}" in
prepare)
    mkdir -p .gpu/wheels .gpu/pieces
    # vLLM and every dependency the image lacks, as CPython 3.12 manylinux wheels; torch and
    # the CUDA libraries are already on the machine, so they are left out.
    python3 -m pip download "vllm==${VLLM_VERSION}" "torch==2.11.0" \
        --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --only-binary=:all: -d .gpu/wheels
    rm -f .gpu/wheels/torch-* .gpu/wheels/nvidia_* .gpu/wheels/triton-*
    tar -C .gpu -cf .gpu/wheels.tar wheels
    split -b "$PIECE" .gpu/wheels.tar .gpu/pieces/wheels.tar.
    # The student: the demo folder (built by `distillgate student build --task banking77`).
    test -f models/banking77/config.json || .venv/bin/distillgate student build --task banking77
    ls -l .gpu/pieces
    echo "carry .gpu/pieces/* one per call (and models/, data/), then: $0 install DIR"
    ;;
install)
    dir=${2:?usage: $0 install DIR (the folder holding pieces/)}
    cat "$dir"/pieces/wheels.tar.* > "$dir/wheels.tar"
    tar -C "$dir" -xf "$dir/wheels.tar"
    python3 -m venv --system-site-packages .venv-gpu   # keeps the image's CUDA torch
    .venv-gpu/bin/pip install --no-index --find-links "$dir/wheels" "vllm==${VLLM_VERSION}"
    .venv-gpu/bin/pip install --no-index --find-links "$dir/wheels" -e ".[dev]" --no-deps
    .venv-gpu/bin/python -c "import vllm, torch; print(vllm.__version__, torch.__version__, torch.cuda.get_device_name())"
    ;;
measure)
    PY=${PY:-.venv-gpu/bin/python}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    # 1. The conformance suite on VLLMEngine (and the CPU engine, for comparison).
    "$PY" -m pytest -q tests/gateway/engines/test_conformance.py -k "vllm or transformers" -rs
    # 2. In-process vLLM vs `vllm serve`, same model and load; the CPU engine beside them.
    "$PY" -m benchmarks.vllm --student models/banking77 --rounds 3 --duration 10 --with-cpu
    ;;
*)
    sed -n '2,13p' "$0"
    exit 2
    ;;
esac
