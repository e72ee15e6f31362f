#!/usr/bin/env bash
# One GPU command: evaluation throughput vs lm-evaluation-harness (both protocols) and the demo
# study on CUDA as a smoke test of the whole pipeline there. Needs the wheels in .whl (see
# bench/RESULTS.md) and writes its figures and logs into $1 (default ./gpu-out).
set -uo pipefail
OUTDIR="${1:-gpu-out}"; mkdir -p "$OUTDIR"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUTDIR/gpu.txt"
python3 -c "import torch, transformers, lm_eval; print(torch.__version__, transformers.__version__)" >> "$OUTDIR/gpu.txt" 2>&1
TASKS=logiqa_en,logiqa_zh,jecqa_kd,scienceqa,cosqa
for proto in lm-eval paper; do
  python3 bench/eval_throughput.py --preset "${PRESET:-350m}" --tasks $TASKS --batch-size 32 --protocol $proto \
    --json "$OUTDIR/eval_$proto.json" > "$OUTDIR/eval_$proto.log" 2>&1
  tail -6 "$OUTDIR/eval_$proto.log"
done
/usr/bin/time -v python3 -m codestage.cli demo --out /tmp/demo-gpu --quiet > "$OUTDIR/demo_gpu.log" 2>&1
tail -25 "$OUTDIR/demo_gpu.log"
cp /tmp/demo-gpu/report.md "$OUTDIR/demo_gpu_report.md" 2>/dev/null
