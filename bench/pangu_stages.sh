#!/usr/bin/env bash
# The user's path at the paper's scale on one GPU, through the real CLI: the dry-run's estimate, the
# data (tokenizer and token stores), `codestage pretrain` for a few dozen steps, instruction tuning
# from that checkpoint (`codestage step ... --step instruct/NN`, the command every executor runs),
# then `codestage eval` on every task with a sample of items. Each stage's wall time, exit status
# and peak GPU memory (max_memory_allocated, GiB, from the files the stage writes) go into
# OUT/stages.json; each stage's output into OUT/<stage>.log. Data: .gpudata/ (configs/gpu-small.yaml).
#
#   bash bench/pangu_stages.sh OUT [PRESET]                  # default preset pangu-2.6b, configs/pangu-2.6b.yaml
#   STAGES_CONFIG=configs/micro.yaml STEPS=3 SAMPLE=3 bash bench/pangu_stages.sh /tmp/st micro   # CPU check
#
# STEPS: pretraining and instruction steps (default: the config's); SAMPLE: items per task (40);
# EVAL_DATA: evaluation data folder (default .gpudata/eval where present, else the bundled slice);
# STAGES_DIR: the study folder (weights, stores; default /tmp/pangu-stages, emptied first);
# STAGES_LIMIT: seconds for everything (570); each stage gets what is left (Ctrl-C at the end of it).
set -uo pipefail
OUT="${1:-pangu-out}"; PRESET="${2:-pangu-2.6b}"; mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
CFG="${STAGES_CONFIG:-configs/pangu-2.6b.yaml}"
S="${STAGES_DIR:-/tmp/pangu-stages}"; SAMPLE="${SAMPLE:-40}"; LIMIT="${STAGES_LIMIT:-570}"
EVAL_DATA="${EVAL_DATA:-}"; if [ -z "$EVAL_DATA" ] && [ -d .gpudata/eval ]; then EVAL_DATA=.gpudata/eval; fi
PY="${PYTHON:-python3}"
source bench/wheels.sh; SITE=$(carried_wheels "$PY") || exit 1
export PYTHONPATH="${SITE}$PWD/src" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
fi
rm -rf "$S"
# The config with PRESET and STEPS applied, beside the original (its relative data paths stay valid).
DCFG="$(dirname "$CFG")/.stages-$$.yaml"
trap 'rm -f "$DCFG"' EXIT
"$PY" - "$CFG" "$DCFG" "$PRESET" "${STEPS:-}" <<'PYEOF' || exit 1
import sys, yaml
src, dst, preset, steps = sys.argv[1:]
cfg = yaml.safe_load(open(src, encoding="utf-8"))
cfg["model"] = {"preset": preset}  # the preset as it is: no size overrides
for stage in ("pretrain", "instruct"):
    train = cfg.setdefault(stage, {}).setdefault("train", {})
    if steps:
        train["steps"] = int(steps)
        train["warmup_steps"] = min(train.get("warmup_steps", 20), max(int(steps) - 1, 0))
open(dst, "w", encoding="utf-8").write(yaml.safe_dump(cfg, sort_keys=False))
PYEOF
cp "$DCFG" "$OUT/config.yaml"
echo "preset $PRESET; config $CFG; study $S; out $OUT; eval data ${EVAL_DATA:-bundled}"

T0=$(date +%s.%N); : > "$OUT/stages.tsv"; FAILED=""
stage() {  # stage NAME COMMAND...: run it (unless one failed before), time it, log it
  local name="$1"; shift
  if [ -n "$FAILED" ]; then printf '%s\tskipped\t0\t%s\n' "$name" "$*" >> "$OUT/stages.tsv"; return; fi
  local left; left=$("$PY" -c "import time; print(max(1, int($LIMIT - (time.time() - $T0))))")
  local t; t=$(date +%s.%N)
  timeout -s INT -k 60 "$left" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local s; s=$("$PY" -c "print(round($(date +%s.%N) - $t, 1))")
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$s" "$*" >> "$OUT/stages.tsv"
  echo "$name: exit $rc, ${s}s"
  if [ "$rc" -ne 0 ]; then FAILED="$name"; tail -5 "$OUT/$name.log"; fi
}
CS=("$PY" -m codestage.cli)
COLUMNS=250 stage dry_run "${CS[@]}" pretrain "$DCFG" --dry-run --world 1
stage data "${CS[@]}" run "$DCFG" --out "$S" --only tokenizer --only store --executor inline --quiet
stage pretrain "${CS[@]}" pretrain "$DCFG" --out "$S" --arm NL --quiet
stage instruct "${CS[@]}" step "$DCFG" --out "$S" --step instruct/NN --quiet
EVAL_ARGS=(--tasks all --sample "$SAMPLE" --out "$OUT/eval" --batch-size 32 --max-new-tokens 96 --quiet)
if [ -n "$EVAL_DATA" ]; then EVAL_ARGS+=(--data-dir "$EVAL_DATA"); fi
stage eval "${CS[@]}" eval --model "$S/runs/NN/model" "${EVAL_ARGS[@]}"

"$PY" - "$OUT" "$S" "$PRESET" <<'PYEOF'
import json, re, sys
from pathlib import Path
out, study, preset = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
stages = {}
for line in (out / "stages.tsv").read_text().splitlines():
    name, rc, seconds, command = line.split("\t", 3)
    stages[name] = {"exit": None if rc == "skipped" else int(rc), "wall_s": float(seconds), "command": command}

def metrics(run):
    path = study / "runs" / run / "metrics.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    if not lines:
        return {}
    peaks = [x["peak_memory_gib"] for x in lines if x.get("peak_memory_gib") is not None]
    last = lines[-1]
    return {"steps": last["step"], "final_loss": last["loss"], "tokens_per_s_last": last["tokens_per_s"], "mfu_last": last["mfu"],
            "peak_memory_gib": max(peaks) if peaks else None}

text = (out / "dry_run.log").read_text() if (out / "dry_run.log").exists() else ""
m = re.search(r"memory / GPU\W*~([0-9.,]+) GiB", text)
stages.get("dry_run", {})["estimate_gib"] = float(m.group(1).replace(",", "")) if m else None
stages.get("pretrain", {}).update(metrics("NL"))
stages.get("instruct", {}).update(metrics("NN"))
res = out / "eval" / "results.json"
if res.exists():
    r = json.loads(res.read_text())
    stages["eval"].update({"peak_memory_gib": r.get("peak_memory_gib"), "tasks": len(r["tasks"]),
                           "items": sum(t.get("n", 0) or 0 for t in r["tasks"].values())})
(out / "stages.json").write_text(json.dumps({"preset": preset, "stages": stages}, indent=1))
for name, s in stages.items():
    extra = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("command", "exit", "wall_s"))
    print(f"{name:>9}: exit {s['exit']}, {s['wall_s']:.1f} s{'; ' + extra if extra else ''}")
PYEOF
echo "total $("$PY" -c "print(round($(date +%s.%N) - $T0))")s; $OUT/stages.json"
[ -z "$FAILED" ]
