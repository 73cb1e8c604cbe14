#!/usr/bin/env bash
# GPU check: the op benchmark and the RL-step benchmark in bf16 with SDPA attention on CUDA,
# including a Qwen2.5-0.5B-shaped model with random weights (speed does not need trained weights).
#
#   bash benchmarks/gpu_check.sh            # from anywhere; outputs go to $OUT (or a temp dir)
#
# Made for the GPU image: python3 with torch + CUDA, transformers, accelerate, peft, triton; no
# `datasets`, no TRL, no network (the TRL column of bench_step is skipped there). Every part runs
# under its own timeout and a global budget (GPU_CHECK_BUDGET seconds, default 450 = 7.5 min), so
# the whole script ends in under 8 minutes; a part that fails or times out is recorded in
# $OUT/summary.txt and the script carries on. Exit status: 0 if every part that ran passed.
# Environment: OUT (output dir), PYTHON (default python3), GPU_CHECK_BUDGET, QWEN_LENGTH (128),
# QWEN_MICRO_BATCH (32), DEVICE (cuda; DEVICE=cpu is a dry run of every part at toy sizes).
set -euo pipefail
{ # the whole script is parsed before it runs (safe if the file changes meanwhile)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET:-450}"
DEVICE="${DEVICE:-cuda}"
QWEN_LENGTH="${QWEN_LENGTH:-128}"
QWEN_MICRO_BATCH="${QWEN_MICRO_BATCH:-32}"
WORK="$(mktemp -d -t gpu_check_work.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
FAILED=0
: > "$OUT/summary.txt"
# qwen-sized parts: full size on a GPU, toy sizes for a CPU dry run (2 layers, 2 prompts x 2, 4 tokens)
QWEN_STEP=(--length "$QWEN_LENGTH" --steps 3 --micro-batch "$QWEN_MICRO_BATCH")
QWEN_ROLL=(--batch 128 --group 8 --new 64 --repeats 2)
# bf16 compute on fp32 master weights, + gradient checkpointing, + LoRA, on a Qwen2.5-0.5B shape
PREC=(--layers 24 --hidden 896 --heads 14 --kv-heads 2 --intermediate 4864 --model-vocab 151936 --length 512
      --prompts 4 --group 8 --steps 2)
OPS=()
OPS_DT=bf16
TINY_STEP=(--steps 5)
TINY_ROLL=(--repeats 3 --group 8)
if [ "$DEVICE" = "cpu" ]; then
    OPS=(--quick)
    OPS_DT=fp32                 # bf16 matmuls are ~5x slower than fp32 on CPUs without AVX512/AMX
    TINY_STEP=(--steps 1 --prompts 4 --group 4 --length 8)
    TINY_ROLL=(--repeats 1 --group 8 --batch 32 --new 8)
    QWEN_STEP=(--layers 2 --prompts 2 --group 2 --length 4 --steps 1 --no-trl)
    QWEN_ROLL=(--batch 4 --group 2 --new 4 --repeats 1)
    PREC=(--layers 2 --hidden 64 --heads 4 --intermediate 128 --vocab 512 --length 8 --prompts 2 --group 2 --steps 1)
fi

log() { echo "[gpu_check $(date +%T) +${SECONDS}s] $*" | tee -a "$OUT/gpu_check.log"; }

# part NAME TIMEOUT_S CMD...: run CMD with min(TIMEOUT_S, what is left of the budget), output to $OUT/NAME.txt
part() {
    local name="$1" want="$2"
    shift 2
    local left=$((BUDGET - SECONDS - 5))
    if [ "$left" -lt 15 ]; then
        log "skip $name: budget spent"
        echo "$name SKIPPED(budget)" >> "$OUT/summary.txt"
        return 0
    fi
    local t=$((want < left ? want : left))
    log "run $name (timeout ${t}s): $*"
    local start=$SECONDS rc=0
    timeout --kill-after=5 "$t" "$@" > "$OUT/$name.txt" 2>&1 || rc=$?
    local took=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        echo "$name OK ${took}s" >> "$OUT/summary.txt"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "$name TIMEOUT ${took}s" >> "$OUT/summary.txt"
        FAILED=1
    else
        echo "$name FAIL(rc=$rc) ${took}s" >> "$OUT/summary.txt"
        FAILED=1
    fi
    log "$name: rc=$rc after ${took}s; tail:"
    tail -n 25 "$OUT/$name.txt" | tee -a "$OUT/gpu_check.log" || true
}

# 1. environment, and our package imports without `datasets` (absent on the GPU image)
part env 60 "$PY" - <<'EOF'
import sys
sys.modules["datasets"] = None          # any `import datasets` at import time fails loudly
import torch, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)
print("cuda available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
import zoo.cli, zoo.trainer, zoo.rollout, zoo.ops, zoo.model, zoo.evaluate  # noqa: F401,E401
import algorithms, rewards  # noqa: F401,E401
for name in ("accelerate", "peft", "triton", "trl"):
    try:
        m = __import__(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(name, "absent:", type(e).__name__)
print("zoo imports without datasets: OK")
EOF

# 1b. correctness of the fused op on the accelerator path (its own tiling, bf16 matmuls) vs full logits
part ops_correct 60 "$PY" benchmarks/gpu_ops_correct.py "$DEVICE"

DT=bf16
# 2. the op benchmark (fused log-prob/entropy kernels), written by the ops owner
if [ -f benchmarks/bench_ops.py ]; then
    part bench_ops 120 "$PY" benchmarks/bench_ops.py --device "$DEVICE" --dtype "$OPS_DT" ${OPS[@]+"${OPS[@]}"}
else
    log "skip bench_ops: benchmarks/bench_ops.py not found"
    echo "bench_ops SKIPPED(missing)" >> "$OUT/summary.txt"
fi

# 3. RL step on the tiny model (ours only when TRL is absent), and the sampler vs model.generate
part step_tiny 75 "$PY" benchmarks/bench_step.py --device "$DEVICE" --dtype "$DT" "${TINY_STEP[@]}" \
    --out "$OUT/step_tiny"
part rollout_tiny 45 "$PY" benchmarks/bench_rollout.py --device "$DEVICE" --dtype "$DT" "${TINY_ROLL[@]}"

# 4. RL step on a Qwen2.5-0.5B-shaped random model: 16 prompts x 8, QWEN_LENGTH tokens each
part step_qwen 170 "$PY" benchmarks/bench_step.py --device "$DEVICE" --dtype "$DT" --model qwen-0.5b-random \
    "${QWEN_STEP[@]}" --cache "$WORK/models" --out "$OUT/step_qwen"

# 5. the same model's sampler vs model.generate (reuses the saved random weights), then compiled decoding
QWEN_DIR="$(ls -d "$WORK"/models/qwen-0.5b-random-* 2>/dev/null | head -n 1 || true)"
if [ -n "$QWEN_DIR" ]; then
    part rollout_qwen 60 "$PY" benchmarks/bench_rollout.py --device "$DEVICE" --dtype "$DT" --model "$QWEN_DIR" \
        "${QWEN_ROLL[@]}"
    part rollout_qwen_compiled 90 "$PY" benchmarks/bench_rollout.py --device "$DEVICE" --dtype "$DT" \
        --model "$QWEN_DIR" "${QWEN_ROLL[@]}" --compile
else
    log "skip rollout_qwen: no saved qwen model (step_qwen failed before saving it)"
    echo "rollout_qwen SKIPPED(no model)" >> "$OUT/summary.txt"
fi

# 6. precision modes on the Qwen2.5-0.5B shape: fp32 vs bf16 compute with fp32 master weights,
#    + gradient checkpointing, + LoRA (peak CUDA memory and step time, each mode in its own process)
part precision_qwen 150 "$PY" benchmarks/bench_precision.py --device "$DEVICE" "${PREC[@]}" \
    --modes fp32,bf16,bf16+ckpt,lora+bf16+ckpt

log "done in ${SECONDS}s; summary:"
tee -a "$OUT/gpu_check.log" < "$OUT/summary.txt"
log "outputs in $OUT"
exit "$FAILED"
}
