#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has torch, transformers, numpy, rich, typer, ...; no network):
# codestage's pydantic and zstandard, torchao (train.float8), and lm-evaluation-harness 0.4.x with its dependencies for
# bench/eval_throughput.py. Writes .whl/ (about 22 MB; git-ignored via .git/info/exclude), which a
# device command carries and installs with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
P=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl
   --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
   --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download "${P[@]}" pydantic pydantic-core annotated-types typing-inspection zstandard "torchao>=0.13"
if [ "${1:-}" != "--minimal" ]; then
  python3 -m pip download "${P[@]}" "lm-eval>=0.4,<0.5" datasets evaluate dill multiprocess pytablewriter \
    DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet nltk more_itertools
  # pure-Python projects published only as source: build their wheels here
  python3 -m pip wheel --no-deps -w .whl rouge-score sqlitedict word2number
fi
ls .whl
