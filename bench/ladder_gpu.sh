#!/usr/bin/env bash
# The GPU ladder in one command (issue 19): plan, run every rung and evaluation side by side
# (PER_GPU processes on each visible GPU), fit with the largest rung held out, report; meanwhile the
# per-rung throughput bench (ours vs HF + torch.compile) and nvidia-smi sampling for the GPU's busy
# fraction. Results: $OUT/ladder-results.tar.gz (reports, fit, points with per-item files, eval
# results, metrics, logs; no model weights) and the small summaries beside it.
#
#   bench/ladder_gpu.sh OUT [CONFIG] [PER_GPU]      # default configs/ladder-gpu.yaml, 4 per GPU
#   bench/ladder_gpu.sh /tmp/lc configs/ladder-cpu.yaml   # the same script on a CPU (micro ladder)
#
# Environment: LADDER_WORK (the study folder; default $TMPDIR/codestage-ladder-<config name>: model
# weights stay out of OUT), LADDER_DEADLINE_S (the ladder run is stopped after this many seconds, 450;
# the points and the fit are then made from what finished), PYTHON (default: python), SPEED=0 skips
# the throughput bench. Nothing here needs the network.
set -uo pipefail

OUT=${1:?usage: bench/ladder_gpu.sh OUT [CONFIG] [PER_GPU]}
CONFIG=${2:-configs/ladder-gpu.yaml}
PER_GPU=${3:-4}
PY=${PYTHON:-python}
NAME=$(basename "$CONFIG" .yaml)
WORK=${LADDER_WORK:-${TMPDIR:-/tmp}/codestage-ladder-$NAME}
DEADLINE=${LADDER_DEADLINE_S:-450}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}   # several processes per GPU share the cores
export TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
stamp() { echo "[ladder_gpu $(date -u +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/stages.log"; }

GPUS=0
if command -v nvidia-smi >/dev/null 2>&1; then
  GPUS=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$OUT/gpu_util.csv" 2>/dev/null &
  SMI=$!
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
fi
stamp "start: config $CONFIG, work $WORK, $GPUS GPUs, $PER_GPU per GPU, deadline ${DEADLINE}s"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" 2>&1 \
  | tee -a "$OUT/stages.log"

stamp "plan"
$PY -m codestage.cli ladder plan "$CONFIG" > "$OUT/plan.txt" 2>&1 || { cat "$OUT/plan.txt"; exit 2; }
tail -n 1 "$OUT/plan.txt"

# The throughput bench runs while the tokenizer and stores are built on the CPU (the GPUs idle then),
# the smaller half of the sizes on the last GPU, the larger half on the first.
if [ "$GPUS" -gt 0 ] && [ "${SPEED:-1}" != 0 ]; then
  SIZES=$(sed -n 's/^│ [A-Za-z0-9_]*-\([0-9.]*[KMB]\)-.*/\1/p' "$OUT/plan.txt" | awk '!seen[$0]++' | paste -sd, -)
  HALF=$(( ($(echo "$SIZES" | tr ',' '\n' | wc -l) + 1) / 2 ))
  SMALL=$(echo "$SIZES" | cut -d, -f1-$HALF)
  LARGE=$(echo "$SIZES" | cut -d, -f$((HALF + 1))-)
  stamp "throughput bench in the background: $SMALL on GPU $((GPUS - 1)), $LARGE on GPU 0"
  CUDA_VISIBLE_DEVICES=$((GPUS - 1)) timeout 240 $PY bench/ladder_throughput.py speed "$CONFIG" --sizes "$SMALL" \
    --json "$OUT/throughput_small.json" > "$OUT/throughput_small.log" 2>&1 &
  SPEED_A=$!
  SPEED_B=
  if [ -n "$LARGE" ]; then
    CUDA_VISIBLE_DEVICES=0 timeout 240 $PY bench/ladder_throughput.py speed "$CONFIG" --sizes "$LARGE" \
      --json "$OUT/throughput_large.json" > "$OUT/throughput_large.log" 2>&1 &
    SPEED_B=$!
  fi
fi

stamp "ladder run (tokenizer, stores, then the runs and evaluations side by side, points, fit, report)"
# SIGINT at the deadline: the coordinator stops its jobs (they keep their checkpoints) and exits.
timeout -s INT -k 30 "$DEADLINE" $PY -m codestage.cli ladder run "$CONFIG" --out "$WORK" --per-gpu "$PER_GPU" \
  --jobs "$PER_GPU" --quiet > "$OUT/ladder_run.log" 2>&1
RC=$?
tail -n 25 "$OUT/ladder_run.log"
stamp "ladder run exited with $RC"

if [ ! -f "$WORK/ladder/fit/fit.json" ] || [ "$RC" != 0 ]; then
  stamp "the run did not finish: points and fit from the checkpoints evaluated so far"
  $PY -m codestage.cli ladder points "$WORK" --to "$WORK/ladder/partial/points.csv" 2>&1 | tee -a "$OUT/stages.log"
  $PY -m codestage.cli ladder fit "$WORK/ladder/partial/points.csv" --out "$WORK/ladder/partial/fit" --holdout largest \
    --bootstrap 200 2>&1 | tail -n 30 | tee -a "$OUT/stages.log"
fi

if [ -n "${SPEED_A:-}" ]; then
  stamp "waiting for the throughput bench"
  wait "$SPEED_A" ${SPEED_B:+"$SPEED_B"}
  cat "$OUT"/throughput_*.log 2>/dev/null | grep -E "tok/s|Error" | tee -a "$OUT/stages.log"
fi
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
if [ -s "$OUT/gpu_util.csv" ]; then
  $PY bench/ladder_throughput.py busy "$OUT/gpu_util.csv" --timing "$WORK/ladder/timing.json" --json "$OUT/busy.json" \
    > /dev/null 2>&1 && stamp "busy: $(tr -d '\n ' < "$OUT/busy.json" | cut -c1-400)"
fi

# per-step seconds from the step markers, and the phases
$PY - "$WORK" > "$OUT/steps.tsv" <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
for m in sorted(work.rglob(".step.json")):
    d = json.loads(m.read_text())
    print(f"{d['step']}\t{d['seconds']}")
t = work / "ladder" / "timing.json"
if t.is_file():
    for name, p in json.loads(t.read_text()).items():
        print(f"phase:{name}\t{p['end'] - p['start']:.1f}")
EOF
grep phase: "$OUT/steps.tsv" | tee -a "$OUT/stages.log"

stamp "tar"
# no weights, stores or tokenizer; the evaluations' items.jsonl stay out too (points/items/ holds
# what the fit needs per item: bits, bytes, correct)
( cd "$WORK" && find . -type f \( -name '*.md' -o -name '*.json' -o -name '*.jsonl' -o -name '*.csv' -o -name '*.png' \
    -o -name '*.log' -o -name '*.txt' \) -size -20M ) | grep -v -E '/(snapshots|stores|tokenizer|model|\.executor)/|/ckpt-' \
  | grep -v -E '^\./ladder/eval/.*/items\.jsonl$' | tar -C "$WORK" -czf "$OUT/ladder-results.tar.gz" -T - 2>>"$OUT/stages.log"
cp -f "$WORK/ladder/fit/report.md" "$OUT/ladder_fit_report.md" 2>/dev/null \
  || cp -f "$WORK/ladder/partial/fit/report.md" "$OUT/ladder_fit_report.md" 2>/dev/null
cp -f "$WORK/report.md" "$OUT/study_report.md" 2>/dev/null
ls -la "$OUT" | tee -a "$OUT/stages.log"
stamp "done (ladder run rc $RC)"
exit "$RC"
