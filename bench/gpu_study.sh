#!/usr/bin/env bash
# The GPU study (docs/results/) in one command of under 10 minutes on one GPU. Seed 0's tokenizer
# and stores are built once and copied to seeds 1 and 2 (their step keys do not depend on the
# seed). Then four processes share the GPU: seed 0's NL chain (NL, NN, NC), seed 0's CODE chain
# (CODE, CC, uniform, stepwise_increase) and seeds 1 and 2 (NL, CODE); a small model leaves the
# GPU mostly idle, so running them side by side costs little. A last pass writes each seed's
# report (every step is then up to date). Everything but weights and token stores comes back as
# $1/study.tar.gz. Data: .gpudata/ (see configs/gpu-small.yaml).
set -uo pipefail
OUTDIR="${1:-gpu-out}"; mkdir -p "$OUTDIR"
LOGS=/tmp/study/logs; mkdir -p $LOGS   # logs travel inside the tarball: the device returns at most 8 files
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1; fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
S=/tmp/study; CFG=configs/gpu-small.yaml
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUTDIR/gpu.txt" > $LOGS/gpu.txt
run() { seed=$1; shift; timeout "$LIMIT" python3 -m codestage.cli run $CFG --out $S/seed$seed --seed $seed --quiet "$@"; }
T0=$(date +%s)
LIMIT=120 run 0 --only tokenizer --only store > "$LOGS/prep.log" 2>&1; echo "prep exit $? at $(( $(date +%s) - T0 ))s"
for seed in 1 2; do mkdir -p $S/seed$seed && cp -r $S/seed0/tokenizer $S/seed0/stores $S/seed$seed/; done
L=${CHAIN_LIMIT:-420}
LIMIT=$L run 0 --only decontam > "$LOGS/decontam.log" 2>&1 &   # CPU only: training data vs eval items
LIMIT=$L run 0 --only pretrain/NL --only instruct/NN --only instruct/NC --only eval/NL --only eval/NN --only eval/NC > "$LOGS/seed0_nl.log" 2>&1 &
LIMIT=$L run 0 --only pretrain/CODE --only instruct/CC --only instruct/uniform --only instruct/stepwise_increase \
  --only eval/CODE --only eval/CC --only eval/uniform --only eval/stepwise_increase > "$LOGS/seed0_code.log" 2>&1 &
for seed in 1 2; do LIMIT=$L run $seed --only pretrain --only eval/NL --only eval/CODE > "$LOGS/seed$seed.log" 2>&1 & done
wait; echo "chains done at $(( $(date +%s) - T0 ))s"
LIMIT=60 run 0 --only tokenizer --only store --only decontam --only pretrain --only instruct --only eval > "$LOGS/seed0.log" 2>&1; echo "report 0 exit $?"
for seed in 1 2; do LIMIT=30 run $seed --only tokenizer --only store --only pretrain --only eval/NL --only eval/CODE > "$LOGS/seed${seed}_report.log" 2>&1; echo "report $seed exit $?"; done
tail -14 "$LOGS/seed0.log"
tar czf "$OUTDIR/study.tar.gz" --exclude='*.safetensors' --exclude='tokens.bin' --exclude='checkpoint*' --exclude='*.npy' -C /tmp study
echo "total $(( $(date +%s) - T0 ))s"
