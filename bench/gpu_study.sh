#!/usr/bin/env bash
# The GPU study (docs/results/) in one command: `codestage run --seeds 0,1,2 --executor local` runs
# the three seeds as one graph on every visible GPU (CUDA_VISIBLE_DEVICES=0 for a one-GPU run),
# several small steps per GPU (the config's executor.steps_per_gpu), each step as soon as its inputs
# are done. The seed-independent tokenizer, stores and decontamination are made once and linked into
# seeds 1 and 2. Scope as in docs/results: seed 0 whole, seeds 1 and 2 pretraining (NL, CODE) and
# its evaluations, and decontamination (CPU only, beside the GPU steps). Everything but weights, token stores and checkpoints comes back as
# $1/study.tar.gz (the steps' logs in study/logs/; the coordinator's
# output in $1/run.log); the last line is the
# total wall time. Data: .gpudata/ (see configs/gpu-small.yaml).
#
#   bash bench/gpu_study.sh OUTDIR
#   STUDY_CONFIG=configs/micro.yaml STUDY_DIR=/tmp/micro-study bash bench/gpu_study.sh OUTDIR   # CPU check
#
# STUDY_ONLY: the --only filters (empty: every step of every seed); STUDY_LIMIT: seconds before the
# run is interrupted (Ctrl-C: running steps stop, the tarball is still written; a rerun resumes).
set -uo pipefail
OUTDIR="${1:-gpu-out}"; mkdir -p "$OUTDIR"
CFG="${STUDY_CONFIG:-configs/gpu-small.yaml}"
S="${STUDY_DIR:-/tmp/study}"; LOG="$OUTDIR/run.log"
ONLY="${STUDY_ONLY---only seed0/decontam --only pretrain --only seed0/instruct --only seed0/eval --only eval/NL --only eval/CODE}"
PY="${PYTHON:-python3}"
source bench/wheels.sh; SITE=$(carried_wheels "$PY") || exit 1
export PYTHONPATH="${SITE}$PWD/src" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUTDIR/gpu.txt"
fi
echo "GPUs used: ${CUDA_VISIBLE_DEVICES-all visible}; config $CFG; out $S"
T0=$(date +%s)
# shellcheck disable=SC2086  # ONLY is a list of flags
timeout -s INT -k 60 "${STUDY_LIMIT:-570}" "$PY" -m codestage.cli run "$CFG" --out "$S" --seeds 0,1,2 \
  --executor local --quiet $ONLY > "$LOG" 2>&1
RC=$?
echo "codestage run exit $RC at $(( $(date +%s) - T0 ))s"
grep -E "^(executor |FAILED|NOT RUN|        (log|rerun):)" "$LOG" | head -40
if [ $RC -ne 0 ]; then tail -5 "$LOG"; fi
tar czf "$OUTDIR/study.tar.gz" --exclude='*.safetensors' --exclude='tokens.bin' --exclude='checkpoint*' \
  --exclude='*.npy' -C "$(dirname "$S")" "$(basename "$S")"
echo "total $(( $(date +%s) - T0 ))s"
exit $RC
