#!/usr/bin/env bash
# The GPU ladder in one command (issue 19): plan, run every rung and evaluation side by side
# (PER_GPU processes on each visible GPU), fit with the largest rung held out, report; meanwhile the
# per-rung throughput bench (ours vs HF + torch.compile, while the CPU builds the stores) and
# nvidia-smi sampling for the GPU's busy fraction.
#
#   bench/ladder_gpu.sh OUT [CONFIG] [PER_GPU]      # default configs/ladder-gpu.yaml, 4 per GPU
#   bench/ladder_gpu.sh /tmp/lc configs/ladder-cpu.yaml 2   # the same script on a CPU (micro ladder)
#
# OUT gets at most 6 files (a device command returns few): ladder-results.tar.gz (reports, fit,
# points with per-item files, eval results, metrics, every log, plan, GPU samples; no weights),
# stages.log, ladder_fit_report.md, study_report.md, throughput.json, busy.json.
# Environment: LADDER_WORK (the study folder, default /tmp/codestage-ladder-<config name>; weights
# stay out of OUT), LADDER_DEADLINE_S (the ladder run is stopped after this many seconds, default
# 420; the points and the fit are then made from what finished), PYTHON (default python3), SPEED=0
# skips the throughput bench, FIT_REPLICATES (default 0: none) times a
# refit of the points with that many bootstrap replicates, FIT_LIMIT_S its time limit (default 150). Wheels in .whl/ (bench/fetch_gpu_wheels.sh) are installed (bench/wheels.sh: where missing) to
# /tmp/site first. Nothing here needs the network.
set -uo pipefail

OUT=${1:?usage: bench/ladder_gpu.sh OUT [CONFIG] [PER_GPU]}
CONFIG=${2:-configs/ladder-gpu.yaml}
PER_GPU=${3:-4}
PY=${PYTHON:-python3}
NAME=$(basename "$CONFIG" .yaml)
WORK=${LADDER_WORK:-/tmp/codestage-ladder-$NAME}
DEADLINE=${LADDER_DEADLINE_S:-420}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
B=$WORK-bench   # logs and measurements (beside the study: it must start as an empty or codestage folder)
mkdir -p "$OUT" "$B"
OUT=$(cd "$OUT" && pwd)
source bench/wheels.sh; SITE=$(carried_wheels "$PY") || exit 1
export PYTHONPATH="${SITE}$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}   # several processes per GPU share the cores
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-4}   # not a pool of every core in each of them
T0=$(date +%s)
stamp() { echo "[ladder_gpu $(date -u +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/stages.log"; }

GPUS=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --list-gpus >/dev/null 2>&1; then
  GPUS=$(nvidia-smi --list-gpus | wc -l)
  nvidia-smi > "$B/nvidia-smi.txt" 2>&1
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$B/gpu_util.csv" 2>/dev/null &
  SMI=$!
fi
stamp "start: config $CONFIG, work $WORK, $GPUS GPUs, $PER_GPU per GPU, deadline ${DEADLINE}s"
$PY -c "import torch, transformers, scipy, matplotlib, pydantic, zstandard; print('torch', torch.__version__, 'transformers', transformers.__version__, 'scipy', scipy.__version__)" 2>&1 \
  | tee -a "$OUT/stages.log"

stamp "plan"
$PY -m codestage.cli ladder plan "$CONFIG" > "$B/plan.txt" 2>&1 || { cat "$B/plan.txt"; exit 2; }
tail -n 1 "$B/plan.txt" | tee -a "$OUT/stages.log"

# The throughput bench runs while the tokenizer and stores are built on the CPU (the GPUs idle then):
# the smaller half of the sizes on the last GPU, the larger half on the first.
SPEED_PIDS=()
if [ "$GPUS" -gt 0 ] && [ "${SPEED:-1}" != 0 ]; then
  SIZES=($($PY -c "
from codestage.config import load_config
from codestage.study.ladder.plan import plan_ladder
print(' '.join(dict.fromkeys(r.size for r in plan_ladder(load_config('$CONFIG')).rungs)))"))
  HALF=$(( (${#SIZES[@]} + 1) / 2 ))
  [ "$GPUS" -eq 1 ] && HALF=${#SIZES[@]}   # one GPU: every size in one process, one after another
  SMALL=$(IFS=,; echo "${SIZES[*]:0:$HALF}")
  LARGE=$(IFS=,; echo "${SIZES[*]:$HALF}")
  stamp "throughput bench in the background: $SMALL on GPU $((GPUS - 1)), ${LARGE:-nothing} on GPU 0"
  CUDA_VISIBLE_DEVICES=$((GPUS - 1)) timeout 300 $PY bench/ladder_throughput.py speed "$CONFIG" --sizes "$SMALL" \
    --json "$B/throughput_small.json" > "$B/throughput_small.log" 2>&1 &
  SPEED_PIDS+=($!)
  if [ -n "$LARGE" ]; then
    CUDA_VISIBLE_DEVICES=0 timeout 300 $PY bench/ladder_throughput.py speed "$CONFIG" --sizes "$LARGE" \
      --json "$B/throughput_large.json" > "$B/throughput_large.log" 2>&1 &
    SPEED_PIDS+=($!)
  fi
fi

stamp "ladder run: tokenizer, stores, then the runs and evaluations side by side, points, fit, report"
# SIGINT at the deadline: the coordinator stops its jobs (SIGTERM; a run writes its exit checkpoint) and exits.
timeout -s INT -k 90 "$DEADLINE" $PY -m codestage.cli ladder run "$CONFIG" --out "$WORK" --per-gpu "$PER_GPU" \
  --jobs "$PER_GPU" --quiet > "$B/ladder_run.log" 2>&1
RC=$?
grep -E "✓|▶|FAILED|NOT RUN|executor|rror" "$B/ladder_run.log" | tail -n 40
stamp "ladder run exited with $RC"

if [ "$RC" != 0 ] || [ ! -f "$WORK/ladder/fit/fit.json" ]; then
  stamp "the run did not finish: points and fit from the checkpoints evaluated so far (ladder/partial/)"
  $PY -m codestage.cli ladder points "$WORK" --to "$WORK/ladder/partial/points.csv" 2>&1 | tee -a "$OUT/stages.log"
  timeout 120 $PY -m codestage.cli ladder fit "$WORK/ladder/partial/points.csv" --out "$WORK/ladder/partial/fit" \
    --holdout largest --step1-points all --bootstrap 200 > "$B/partial_fit.log" 2>&1
  stamp "partial fit exited with $?"
fi

# The fit's cost with FIT_REPLICATES bootstrap replicates on every core of this host (issue 19 asks about 10,000)
FITB=${FIT_REPLICATES:-0}
if [ "$FITB" != 0 ] && [ -f "$WORK/ladder/points/points.csv" ]; then
  stamp "fit with $FITB bootstrap replicates on $(nproc) cores"
  F0=$(date +%s.%N)
  timeout "${FIT_LIMIT_S:-150}" $PY -m codestage.cli ladder fit "$WORK/ladder/points/points.csv" --out "$B/fit_$FITB" \
    --holdout largest --bootstrap "$FITB" > "$B/fit_$FITB.log" 2>&1
  FRC=$?
  stamp "fit with $FITB replicates: exit $FRC, $(python3 -c "import time; print(f'{time.time() - $F0:.1f}')") s"
fi

if [ ${#SPEED_PIDS[@]} -gt 0 ]; then
  stamp "waiting for the throughput bench"
  wait "${SPEED_PIDS[@]}"
  grep -hE "tok/s|Error" "$B"/throughput_*.log | tee -a "$OUT/stages.log"
  $PY - "$B" "$OUT/throughput.json" <<'EOF'
import json, sys
from pathlib import Path
parts = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("throughput_*.json"))]
if parts:
    merged = {**parts[0], "rungs": {k: v for p in parts for k, v in p["rungs"].items()}}
    Path(sys.argv[2]).write_text(json.dumps(merged, indent=1))
EOF
fi
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
if [ -s "$B/gpu_util.csv" ]; then
  $PY bench/ladder_throughput.py busy "$B/gpu_util.csv" --timing "$WORK/ladder/timing.json" --json "$OUT/busy.json" \
    > /dev/null 2>&1 && stamp "busy: $(tr -d '\n ' < "$OUT/busy.json" | cut -c1-600)"
fi

# seconds per step (from the step markers) and per phase
$PY - "$WORK" > "$B/steps.tsv" <<'EOF'
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
grep phase: "$B/steps.tsv" | tee -a "$OUT/stages.log"

stamp "tar"
cp -f "$OUT/stages.log" "$B/" 2>/dev/null
mkdir -p "$WORK" && rm -rf "$WORK/bench" && cp -r "$B" "$WORK/bench"   # they travel in the tarball
# no weights, stores, tokenizer or executor records; the evaluations' items.jsonl stay out too
# (ladder/points/items/ holds what the fit needs per item: bits, bytes, correct)
( cd "$WORK" && find . -type f \( -name '*.md' -o -name '*.json' -o -name '*.jsonl' -o -name '*.csv' -o -name '*.png' \
    -o -name '*.log' -o -name '*.txt' -o -name '*.tsv' -o -name '*.yaml' \) -size -20M ) \
  | grep -v -E '/(snapshots|stores|tokenizer|model|\.executor)/|/ckpt-' | grep -v -E '^\./ladder/eval/.*/items\.jsonl$' \
  | tar -C "$WORK" -czf "$OUT/ladder-results.tar.gz" -T - 2>>"$OUT/stages.log"
cp -f "$WORK/ladder/fit/report.md" "$OUT/ladder_fit_report.md" 2>/dev/null \
  || cp -f "$WORK/ladder/partial/fit/report.md" "$OUT/ladder_fit_report.md" 2>/dev/null
cp -f "$WORK/report.md" "$OUT/study_report.md" 2>/dev/null
stamp "done (ladder run rc $RC): $(ls "$OUT" | tr '\n' ' ')"
exit "$RC"
